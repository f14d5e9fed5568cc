"""Every runbook a worker runs and a replay test replays: one list, so neither forgets one."""

from __future__ import annotations

from workflows.drill import DrillWorkflow
from workflows.failback import FailbackWorkflow
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.venue_recovery import VenueRecoveryWorkflow

ALL_WORKFLOWS: list[type] = [
    PromotionWorkflow,
    VenueRecoveryWorkflow,
    HealthMonitorWorkflow,
    DrillWorkflow,
    FailbackWorkflow,
]
