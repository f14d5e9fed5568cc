"""A drill's "pause the monitor" retried after its first attempt landed counts as applied.

If the worker dies after the pause reached the monitor but before its result was recorded, the
retry finds the monitor "already paused by" the drill itself. Reporting that as refused would make
the drill leave the monitor paused when it ends. Runs against a real Temporal server, with a
stand-in monitor that has the real monitor's pause rule.
"""

from __future__ import annotations

import uuid

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from activities.runbook_control import MonitorControlRequest, RunbookControlActivities
from domain.health import MonitorPhase
from domain.monitoring import MonitorStatus, OperatorAction, monitor_workflow_id


@workflow.defn(name="MonitorStandIn")
class MonitorStandIn:
    def __init__(self) -> None:
        self.paused_by: str | None = None

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.update
    async def pause(self, action: OperatorAction) -> str:
        self.paused_by = action.by
        return f"paused by {action.by}"

    @pause.validator
    def _validate_pause(self, action: OperatorAction) -> None:
        # The real monitor's rule and wording (workflows/health_monitor.py).
        if self.paused_by is not None:
            raise ValueError(f"already paused by {self.paused_by}")

    @workflow.query
    def status(self) -> MonitorStatus:
        return MonitorStatus(
            system="lab", phase=MonitorPhase.NOMINAL, active_region="primary", verdicts={},
            paused=self.paused_by is not None, needs_ack=False, blocked_reason=None, actions=0,
            last_action_at=None, promotion_workflow_id=None, history_length=0,
        )  # fmt: skip


async def test_a_retried_pause_by_the_same_caller_is_applied_and_anyone_elses_is_refused(
    client: Client,
) -> None:
    queue = f"monitor-stand-in-{uuid.uuid4().hex[:8]}"
    control = RunbookControlActivities(client)
    async with Worker(client, task_queue=queue, workflows=[MonitorStandIn]):
        handle = await client.start_workflow(
            MonitorStandIn.run, id=monitor_workflow_id("lab"), task_queue=queue
        )
        try:
            pause = MonitorControlRequest(system="lab", action="pause", by="drill:dr-drill/lab")
            first = await control.monitor_control(pause)
            retried = await control.monitor_control(pause)
            someone_else = await control.monitor_control(pause.model_copy(update={"by": "bob"}))
        finally:
            await handle.terminate()
    assert (first.applied, first.detail) == (True, "paused by drill:dr-drill/lab")
    assert retried.applied is True
    assert retried.detail == "paused by drill:dr-drill/lab (an earlier attempt)"
    assert someone_else.applied is False
    assert someone_else.detail == "pause refused: already paused by drill:dr-drill/lab"
    assert someone_else.status is not None and someone_else.status.paused
