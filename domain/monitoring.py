"""The HealthMonitor runbook's vocabulary: its request, its plan, operator actions, its status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.feeds import FeedState, SourceSwitch
from domain.health import MonitorPhase, MonitorState, Verdict
from domain.promotion import Identity

HEALTH_MONITOR_WORKFLOW = "HealthMonitor"


Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


def monitor_workflow_id(system: str) -> str:
    """Fixed per system: starting the monitor twice is harmless."""
    return f"dr-monitor/{system}"


def feed_monitor_workflow_id(feed: str) -> str:
    return f"md-monitor/{feed}"


class MonitorRequest(BaseModel):
    """``{"system": "lab"}`` or ``{"feed": "lab-md"}`` is a complete input; the rest is filled
    in by continue-as-new."""

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
