"""The HealthMonitor runbook's vocabulary: its request, its plan, operator actions, its status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from domain.health import MonitorPhase, MonitorState, Verdict
from domain.promotion import Identity

HEALTH_MONITOR_WORKFLOW = "HealthMonitor"


def monitor_workflow_id(system: str) -> str:
    """Fixed per system: starting the monitor twice is harmless."""
    return f"dr-monitor/{system}"


class MonitorRequest(BaseModel):
    """``{"system": "lab"}`` is a complete input; ``state`` is filled in by continue-as-new."""

    model_config = ConfigDict(extra="forbid")

    system: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    state: MonitorState | None = None
    active_region: str | None = None


class VantagePlan(BaseModel):
    name: str
    task_queue: str
    http_proxy: str | None


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
