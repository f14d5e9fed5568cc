"""How drills and failbacks drive the other runbooks: a planned promotion as a child, approved by
a named identity, and the health monitor held still while the active side moves on purpose.

Without the hold, a monitor watching a primary that a planned promotion deactivates sees it
"down" and would start an incident promotion of its own.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.lease_activities import LeaseActivities
    from activities.runbook_control import (
        ApprovePromotionRequest,
        MonitorControlRequest,
        MonitorControlResult,
        RunbookControlActivities,
    )
    from domain.lease import LeaseRecord
    from domain.promotion import (
        PROMOTION_WORKFLOW,
        PromotionReport,
        PromotionRequest,
        promotion_workflow_id,
        region_task_queue,
    )
    from workflows.steps import SERVICE_RETRY

CONTROL_CALL = timedelta(seconds=30)


async def monitor_action(
    system: str,
    action: Literal["status", "pause", "resume", "ack", "retarget"],
    by: str,
    comment: str = "",
    region: str | None = None,
) -> MonitorControlResult:
    return await workflow.execute_activity_method(
        RunbookControlActivities.monitor_control,
        MonitorControlRequest(system=system, action=action, by=by, comment=comment, region=region),
        start_to_close_timeout=CONTROL_CALL,
        retry_policy=SERVICE_RETRY,
    )


async def lease_holder(system: str) -> tuple[LeaseRecord | None, str]:
    """The lease record and how a person would name its holder ("dr at epoch 2", "nobody")."""
    lease = await workflow.execute_activity_method(
        LeaseActivities.read_lease,
        system,
        start_to_close_timeout=CONTROL_CALL,
        retry_policy=SERVICE_RETRY,
    )
    return lease, f"{lease.region} at epoch {lease.epoch}" if lease else "nobody"


async def planned_promotion(
    request: PromotionRequest, approver: str | None, approval_timeout_s: float
) -> PromotionReport:
    """Start the system's promotion (its fixed id) as a child and approve it as ``approver``.

    ABANDON: a promotion, once started, finishes even if the drill that started it is ended.
    Without an approver the promotion waits for a person (`drctl approve`).
    """
    assert request.to_region is not None
    child = await workflow.start_child_workflow(
        PROMOTION_WORKFLOW,
        request,
        id=promotion_workflow_id(request.system),
        task_queue=region_task_queue(request.to_region),
        parent_close_policy=ParentClosePolicy.ABANDON,
        result_type=PromotionReport,
    )
    if approver is not None:
        approval = workflow.start_activity_method(
            RunbookControlActivities.approve_promotion,
            ApprovePromotionRequest(
                workflow_id=child.id,
                run_id=child.first_execution_run_id,
                approver=approver,
                comment=f"for {workflow.info().workflow_type} {workflow.info().workflow_id}",
            ),
            start_to_close_timeout=timedelta(seconds=approval_timeout_s + 30),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        # The child's report is the truth either way: a refused approval shows there as a
        # promotion that timed out waiting for one. The approval activity ends by itself once
        # the promotion has (it sees it finished); it is not cancelled, which would race its
        # own completion.
        report: PromotionReport = await child
        await asyncio.gather(approval, return_exceptions=True)
        return report
    unapproved: PromotionReport = await child
    return unapproved
