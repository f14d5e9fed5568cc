"""Runbooks acting on other runbooks through Temporal: what an operator would do with drctl.

A drill approves the planned promotion it started (as its named approver), waits for the
promotion the monitor starts by itself, and keeps the health monitor paused and pointed at the
side that trades. A workflow can signal another but cannot update or query it; these
activities do it with the worker's client, so validators still judge every action and the
target's history records who did it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.monitoring import MonitorStatus, OperatorAction, RetargetAction, monitor_workflow_id
from domain.promotion import Approval, PromotionProgress, PromotionReport, promotion_workflow_id

POLL_S = 0.5


class MonitorControlRequest(BaseModel):
    system: str
    action: Literal["status", "pause", "resume", "ack", "retarget"]
    by: str
    comment: str = ""
    region: str | None = None


class MonitorControlResult(BaseModel):
    running: bool
    applied: bool
    detail: str
    status: MonitorStatus | None


class AwaitPromotionRequest(BaseModel):
    system: str
    started_after: datetime
    timeout_s: float


class ApprovePromotionRequest(BaseModel):
    workflow_id: str
    run_id: str | None
    approver: str
    comment: str = ""


class RunbookControlActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="monitor_control")
    async def monitor_control(self, request: MonitorControlRequest) -> MonitorControlResult:
        """Refusals are results, not errors: "already paused" is what a retry should see."""
        handle = self._client.get_workflow_handle(monitor_workflow_id(request.system))
        if not await _running(handle):
            return MonitorControlResult(
                running=False, applied=False, detail="no monitor running", status=None
            )
        applied, detail = False, "status"
        if request.action != "status":
            arg: OperatorAction = (
                RetargetAction(by=request.by, comment=request.comment, region=request.region)
                if request.action == "retarget" and request.region
                else OperatorAction(by=request.by, comment=request.comment)
            )
            try:
                detail = await handle.execute_update(request.action, arg, result_type=str)
                applied = True
            except WorkflowUpdateFailedError as exc:
                reason = str(getattr(exc.cause, "message", exc.cause))
                # A retry of a pause that landed (its result lost with a worker) finds the
                # monitor paused by this very caller: applied, so the caller resumes it later.
                if request.action == "pause" and reason == f"already paused by {request.by}":
                    applied, detail = True, f"paused by {request.by} (an earlier attempt)"
                else:
                    detail = f"{request.action} refused: {reason}"
        status = await handle.query("status", result_type=MonitorStatus)
        return MonitorControlResult(running=True, applied=applied, detail=detail, status=status)

    @activity.defn(name="await_promotion")
    async def await_promotion(self, request: AwaitPromotionRequest) -> PromotionReport:
        """The report of the first promotion of ``system`` started after ``started_after``."""
        workflow_id = promotion_workflow_id(request.system)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout_s
        while loop.time() < deadline:
            activity.heartbeat()
            handle = self._client.get_workflow_handle(workflow_id)
            try:
                description = await handle.describe()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                description = None
            if description is not None and description.start_time >= request.started_after:
                if description.status == WorkflowExecutionStatus.COMPLETED:
                    run = self._client.get_workflow_handle(
                        workflow_id, run_id=description.run_id, result_type=PromotionReport
                    )
                    report: PromotionReport = await run.result()
                    return report
                if description.status != WorkflowExecutionStatus.RUNNING:
                    ended = description.status.name.lower() if description.status else "unknown"
                    raise ApplicationError(
                        f"promotion {workflow_id} ended {ended}",
                        non_retryable=True,
                    )
            await asyncio.sleep(POLL_S)
        raise ApplicationError(
            f"no promotion of {request.system} completed within {request.timeout_s:g} s of "
            f"{request.started_after:%H:%M:%S}",
            non_retryable=True,
        )

    @activity.defn(name="approve_promotion")
    async def approve_promotion(self, request: ApprovePromotionRequest) -> str:
        """Approve once the promotion asks; a retry that finds its own approval succeeds."""
        handle: WorkflowHandle[object, object] = self._client.get_workflow_handle(
            request.workflow_id, run_id=request.run_id
        )
        approval = Approval(approver=request.approver, comment=request.comment)
        while True:
            activity.heartbeat()
            progress = await handle.query("progress", result_type=PromotionProgress)
            if progress.current_step is None and progress.waiting_for is None:
                return f"promotion ended {progress.outcome.value} before an approval was needed"
            if progress.waiting_for and progress.waiting_for.startswith("approval"):
                break
            if progress.current_step not in (None, "plan", "approval"):
                return f"already past approval (at {progress.current_step})"
            await asyncio.sleep(POLL_S)
        try:
            done: str = await handle.execute_update("approve", approval, result_type=str)
            return done
        except WorkflowUpdateFailedError as exc:
            message = str(getattr(exc.cause, "message", exc.cause))
            if message == f"already approved by {request.approver}":
                return message
            raise ApplicationError(f"approval refused: {message}", non_retryable=True) from None


async def _running(handle: WorkflowHandle[object, object]) -> bool:
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING
