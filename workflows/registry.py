"""Every runbook a worker runs and a replay test replays: one list, so neither forgets one."""

from __future__ import annotations

from workflows.drill import DrillWorkflow
from workflows.failback import FailbackWorkflow
from workflows.feed_monitor import FeedMonitorWorkflow
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.system_monitor import SystemMonitorWorkflow
from workflows.venue_recovery import VenueRecoveryWorkflow

# The runbooks run on the region queues (workers/roles.py); vantage points run none.
REGION_WORKFLOWS: list[type] = [
    PromotionWorkflow,
    VenueRecoveryWorkflow,
    SystemMonitorWorkflow,
    FeedMonitorWorkflow,
    # Until no execution started before the monitors were split is left (see its module).
    HealthMonitorWorkflow,
    DrillWorkflow,
    FailbackWorkflow,
]
ALL_WORKFLOWS: list[type] = REGION_WORKFLOWS
