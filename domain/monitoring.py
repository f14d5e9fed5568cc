"""The monitors' vocabulary: their requests, plans, operator actions and status.

Two monitors: the SystemMonitor watches a trading system and promotes its DR region; the
FeedMonitor watches a market-data feed's ranked sources and switches between them. HealthMonitor
is the type both ran as before they were split: its executions still run (workflows/
health_monitor.py) and continue as the new types.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.feeds import FeedState, SourceSwitch
from domain.health import MonitorPhase, MonitorState, Verdict
from domain.promotion import Identity
from domain.readiness import DrReadiness, ReadinessSample, ReadinessThresholds
from domain.topology import Name

SYSTEM_MONITOR_WORKFLOW = "SystemMonitor"
FEED_MONITOR_WORKFLOW = "FeedMonitor"
# Before the split: kept registered so that running executions finish their run, then continue
# as SystemMonitor or FeedMonitor.
HEALTH_MONITOR_WORKFLOW = "HealthMonitor"
MONITOR_WORKFLOWS = (SYSTEM_MONITOR_WORKFLOW, FEED_MONITOR_WORKFLOW, HEALTH_MONITOR_WORKFLOW)


def monitor_workflow_id(system: str) -> str:
    """Fixed per system: starting the monitor twice is harmless."""
    return f"dr-monitor/{system}"


def feed_monitor_workflow_id(feed: str) -> str:
    return f"md-monitor/{feed}"


class SystemMonitorRequest(BaseModel):
    """``{"system": "lab"}`` is a complete input; continue-as-new fills in the state."""

    model_config = ConfigDict(extra="forbid")

    system: Name
    state: MonitorState | None = None


class FeedMonitorRequest(BaseModel):
    """``{"feed": "lab-md"}`` is a complete input; continue-as-new fills in the state."""

    model_config = ConfigDict(extra="forbid")

    feed: Name
    state: FeedState | None = None


class MonitorRequest(BaseModel):
    """The HealthMonitor's input, kept so its running executions still decode theirs."""

    model_config = ConfigDict(extra="forbid")

    system: Name | None = None
    feed: Name | None = None
    state: MonitorState | None = None
    active_region: str | None = None
    feed_state: FeedState | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.system is None) == (self.feed is None):
            raise ValueError("give exactly one of system (a trading system) or feed (market data)")
        return self


class VantagePlan(BaseModel):
    name: str
    task_queue: str
    http_proxy: str | None
    # Where it stands (its topology region), for the evidence a failover hands over. Absent
    # from plans recorded before it existed.
    region: str = ""


class SourcePlan(BaseModel):
    name: str
    url: str
    rank: int


class FeedPlan(BaseModel):
    feed: str
    sources: list[SourcePlan]
    vantages: list[VantagePlan]
    interval_s: float
    latency_threshold_ms: float
    freshness_threshold_s: float
    confirmation_count: int
    recovery_count: int
    recovery_window_s: float
    watch_lifetime_s: float


class FeedStatus(BaseModel):
    feed: str
    active: str
    source_verdicts: dict[str, Verdict]
    vantage_verdicts: dict[str, dict[str, Verdict]]
    switches: list[SourceSwitch]
    paused_by: str | None
    history_length: int


class MonitorPlan(BaseModel):
    """What the topology says about watching one system, resolved once per run."""

    system: str
    primary_region: str
    dr_region: str
    oms_urls: dict[str, str]
    vantages: list[VantagePlan]
    interval_s: float
    latency_threshold_ms: float
    freshness_threshold_s: float
    confirmation_count: int
    recovery_count: int
    cooldown_s: float
    watch_lifetime_s: float
    # DR readiness bounds. Absent from plans recorded before the monitor watched readiness:
    # such a run never starts the readiness watch.
    readiness: ReadinessThresholds | None = None

    def other_region(self, region: str) -> str:
        return self.dr_region if region == self.primary_region else self.primary_region


class OperatorAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Identity
    comment: Annotated[str, Field(max_length=500)] = ""


class RetargetAction(OperatorAction):
    """Watch another region from now on: a planned promotion or a failback moved the active
    side, and the monitor must guard the side that trades."""

    region: Name


class MonitorStatus(BaseModel):
    system: str
    phase: MonitorPhase
    active_region: str
    verdicts: dict[str, Verdict]
    paused: bool
    needs_ack: bool
    blocked_reason: str | None
    actions: int
    last_action_at: datetime | None
    promotion_workflow_id: str | None
    history_length: int
    # Defaulted: a status from a monitor started before it existed still decodes.
    cooldown_s: float | None = None
    # The standby's readiness as the monitor holds it (changes only when readiness does) ...
    readiness: DrReadiness | None = None
    # ... and its latest figures, read live from the readiness watch's heartbeat by drctl.
    readiness_live: ReadinessSample | None = None
