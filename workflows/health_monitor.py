"""HealthMonitor: the monitor type from before SystemMonitor and FeedMonitor were split.

Kept registered only so that executions started as HealthMonitor survive the upgrade. Such an
execution runs exactly as before (its input decides: ``{"system": ...}`` runs the SystemMonitor's
code, ``{"feed": ...}`` the FeedMonitor's, issuing the same commands its history holds), and at
its next continue-as-new it continues as SystemMonitor or FeedMonitor under the same workflow id,
so `drctl monitor status|pause|resume|ack` keep finding it. The switch is behind
``workflow.patched``: a history recorded before it replays down the old path.

Delete this module, and its entry in workflows/registry.py, once no HealthMonitor execution is
left: `temporal workflow list --query "WorkflowType='HealthMonitor' AND
ExecutionStatus='Running'"` lists none.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.health import MonitorState
    from domain.monitoring import (
        HEALTH_MONITOR_WORKFLOW,
        FeedMonitorRequest,
        FeedStatus,
        MonitorRequest,
        MonitorStatus,
        OperatorAction,
        RetargetAction,
        SystemMonitorRequest,
    )
    from workflows.feed_monitor import FeedMonitorWorkflow
    from workflows.steps import parse_input
    from workflows.system_monitor import SystemMonitorWorkflow

# Recorded as a marker by a HealthMonitor run that continues as a new type; a replayed history
# without the marker continues as HealthMonitor, as it did when it was recorded.
CONTINUE_AS_NEW_TYPE = "health-monitor-continues-as-system-or-feed-monitor"


@workflow.defn(name=HEALTH_MONITOR_WORKFLOW)
class HealthMonitorWorkflow:
    def __init__(self) -> None:
        # Plain objects here, not workflows of their own: this execution runs their code.
        self._system = SystemMonitorWorkflow()
        self._feed = FeedMonitorWorkflow()

    @workflow.run
    async def run(self, raw: object = None) -> None:
        request = parse_input(MonitorRequest, raw)
        if request.feed is not None:
            feed_state = await self._feed.watch(request.feed, request.feed_state)
            if workflow.patched(CONTINUE_AS_NEW_TYPE):
                workflow.continue_as_new(
                    FeedMonitorRequest(feed=request.feed, state=feed_state),
                    workflow=FeedMonitorWorkflow.run,
                )
            workflow.continue_as_new(MonitorRequest(feed=request.feed, feed_state=feed_state))
        assert request.system is not None
        carried = request.state or MonitorState()
        if request.active_region is not None:
            carried = carried.model_copy(update={"active_region": request.active_region})
        state = await self._system.watch(request.system, carried)
        if workflow.patched(CONTINUE_AS_NEW_TYPE):
            workflow.continue_as_new(
                SystemMonitorRequest(system=request.system, state=state),
                workflow=SystemMonitorWorkflow.run,
            )
        workflow.continue_as_new(
            MonitorRequest(
                system=request.system,
                state=state.model_copy(update={"active_region": None}),
                active_region=state.active_region,
            )
        )

    @property
    def _watching_feed(self) -> bool:
        return self._feed.state is not None

    async def _ready(self) -> None:
        await workflow.wait_condition(lambda: self._system.ready or self._feed.ready)

    @workflow.update(name="pause")
    async def pause(self, action: OperatorAction) -> str:
        await self._ready()
        if self._watching_feed:
            return self._feed.record_pause(action)
        return self._system.record_pause(action)

    @pause.validator
    def _validate_pause(self, action: OperatorAction) -> None:
        if self._watching_feed:
            self._feed.validate_pause(action)
        else:
            self._system.validate_pause(action)

    @workflow.update(name="resume")
    async def resume(self, action: OperatorAction) -> str:
        await self._ready()
        if self._watching_feed:
            return self._feed.record_resume(action)
        return self._system.record_resume(action)

    @resume.validator
    def _validate_resume(self, action: OperatorAction) -> None:
        if self._watching_feed:
            self._feed.validate_resume(action)
        else:
            self._system.validate_resume(action)

    @workflow.update(name="ack")
    async def ack(self, action: OperatorAction) -> str:
        await self._ready()
        return self._system.record_ack(action)

    @ack.validator
    def _validate_ack(self, action: OperatorAction) -> None:
        if self._watching_feed:
            self._feed.validate_ack(action)
        else:
            self._system.validate_ack(action)

    @workflow.update(name="retarget")
    async def retarget(self, action: RetargetAction) -> str:
        return await self._system.retarget_to(action)

    @retarget.validator
    def _validate_retarget(self, action: RetargetAction) -> None:
        if self._watching_feed:
            raise ValueError("a feed monitor follows its ranked sources; it has no region")
        self._system.validate_retarget(action)

    @workflow.query(name="status")
    def status(self) -> MonitorStatus:
        return self._system.status()

    @workflow.query(name="feed_status")
    def feed_status(self) -> FeedStatus:
        return self._feed.feed_status()
