"""SystemMonitor: watch one trading system from every vantage point and promote it by itself.

Each vantage point runs one probe watch (workflows/probe_watch.py) on its own task queue. The
pure state machine in domain/health.py turns verdicts and operator actions into a phase and, at
most once per cooldown and then only after an operator's ack, into a failover: the Promotion
runbook started as a child with the fixed promotion id and an ABANDON parent-close policy, so it
outlives anything that happens to the monitor.

It also watches DR readiness: one more long-lived watch (activities/readiness.py), on the
standby region's queue, that speaks only when the standby's debounced readiness changes. "DR not
ready" is alerted once and cleared once; a failover decided while the standby is not ready is
still started (a dead primary must be fenced) but carries the reason, so the promotion stops at
its gate instead of releasing trading. The quorum the monitor decided on goes to the promotion
as its evidence: the promotion does not probe the primary again.

Everything the monitor knows is one ``MonitorState`` (phase, verdicts, what each vantage saw,
the watched region, DR readiness): continue-as-new hands it over whole.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    TimeoutType,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import (
    TimeoutError as ActivityTimeout,
)
from temporalio.workflow import ActivityHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.alerts import Alert, AlertActivities
    from activities.metrics import (
        record_detection_latency,
        record_monitor_verdict,
        set_monitor_phase,
    )
    from activities.plan import MonitorPlanRequest, PlanActivities
    from activities.probes import ProbeCounters, ProbeTarget, WatchResult
    from activities.readiness import ReadinessActivities, ReadinessRequest, ReadinessResult
    from domain.health import (
        Acknowledged,
        ActionFinished,
        MonitorEvent,
        MonitorPolicy,
        MonitorState,
        Paused,
        Resumed,
        TargetSwitched,
        Verdict,
        VerdictChanged,
        detection_started_at,
        quorum_evidence,
        step,
    )
    from domain.monitoring import (
        SYSTEM_MONITOR_WORKFLOW,
        MonitorPlan,
        MonitorStatus,
        OperatorAction,
        RetargetAction,
        SystemMonitorRequest,
        VantagePlan,
    )
    from domain.promotion import (
        PROMOTION_WORKFLOW,
        DrKind,
        DrOutcome,
        MonitorEvidence,
        PromotionReport,
        PromotionRequest,
        promotion_workflow_id,
        region_task_queue,
    )
    from domain.readiness import DrReadiness, ReadinessCounters, ReadinessSample
    from workflows.probe_watch import WATCH_RETRY, start_watch, stop_watches
    from workflows.steps import parse_input

MONITOR_IDENTITY = "health-monitor"

# Histories recorded before the readiness watch existed (the HealthMonitor's) replay without it.
DR_READINESS_PATCH = "system-monitor-watches-dr-readiness"
# Alerts are best effort: a broken webhook must never stall the monitor.
ALERT_RETRY = RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))


@workflow.defn(name=SYSTEM_MONITOR_WORKFLOW)
class SystemMonitorWorkflow:
    def __init__(self) -> None:
        self._state = MonitorState()
        self._plan: MonitorPlan | None = None
        self._policy: MonitorPolicy | None = None
        self._watches: dict[str, ActivityHandle[WatchResult]] = {}
        self._counters: dict[str, ProbeCounters] = {}
        self._system = ""
        self._promotion: asyncio.Future[None] | None = None
        self._promotion_id: str | None = None
        self._readiness_watch: ActivityHandle[ReadinessResult] | None = None
        self._readiness_counters: ReadinessCounters | None = None
        self._readiness_on = False
        self._alerts: list[asyncio.Future[None]] = []

    @workflow.run
    async def run(self, raw: object = None) -> None:
        request = parse_input(SystemMonitorRequest, raw)
        state = await self.watch(request.system, request.state)
        workflow.continue_as_new(
            SystemMonitorRequest(system=request.system, state=state),
            workflow=SystemMonitorWorkflow.run,
        )

    async def watch(self, system: str, state: MonitorState | None) -> MonitorState:
        """Watch until the server suggests continue-as-new; returns the state to hand over.

        The HealthMonitor runs this too (workflows/health_monitor.py): the commands it issues
        must stay those its recorded histories hold.
        """
        # The carried-over state is the truth from the first instant of a new run, even
        # before the plan has loaded: queries and operator actions see it.
        self._state = state or MonitorState()
        self._system = system
        plan = await workflow.execute_activity_method(
            PlanActivities.load_monitor_plan,
            MonitorPlanRequest(system=system),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        self._plan = plan
        self._policy = MonitorPolicy(
            vantages=[v.name for v in plan.vantages], cooldown_s=plan.cooldown_s
        )
        if self._state.active_region is None:
            self._state = self._state.model_copy(update={"active_region": plan.primary_region})
        set_monitor_phase(workflow.metric_meter(), system, self._state.phase)
        # Short-circuits on a plan recorded before readiness existed: no marker, no watch.
        self._readiness_on = plan.readiness is not None and workflow.patched(DR_READINESS_PATCH)
        self._start_watches()
        while not self._should_continue_as_new():
            await workflow.wait_condition(
                lambda: (
                    any(w.done() for w in self._watches.values())
                    or (self._readiness_watch is not None and self._readiness_watch.done())
                    or self._should_continue_as_new()
                )
            )
            for vantage in plan.vantages:
                watch = self._watches.get(vantage.name)
                if watch is not None and watch.done():
                    self._on_watch_done(vantage, watch)
            if self._readiness_watch is not None and self._readiness_watch.done():
                self._on_readiness_done(self._readiness_watch)
        await self._stop_watches()
        # An alert in flight is delivered before the run hands over: the next run would not
        # know it had been raised.
        await asyncio.gather(*self._alerts)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    def _should_continue_as_new(self) -> bool:
        # Never while a promotion is in flight: its outcome must land in this run's state.
        return workflow.info().is_continue_as_new_suggested() and self._promotion is None

    @property
    def _active_region(self) -> str:
        return self._state.active_region or ""

    def _watch_region(self, region: str) -> None:
        self._state = self._state.model_copy(update={"active_region": region})

    # --- watches --------------------------------------------------------------------------

    def _start_watches(self) -> None:
        plan = self._plan
        assert plan is not None
        for vantage in plan.vantages:
            self._start_watch(vantage)
        if self._readiness_on:
            self._start_readiness_watch()

    def _start_watch(self, vantage: VantagePlan) -> None:
        plan = self._plan
        assert plan is not None
        self._watches[vantage.name] = start_watch(
            vantage,
            ProbeTarget(
                name=f"{plan.system}:{self._active_region}",
                kind="oms",
                url=plan.oms_urls[self._active_region],
            ),
            self._state.verdicts.get(vantage.name, Verdict.UNKNOWN),
            self._counters.get(vantage.name),
            plan,
        )

    def _on_watch_done(self, vantage: VantagePlan, watch: ActivityHandle[WatchResult]) -> None:
        try:
            result = watch.result()
        except ActivityError as err:
            workflow.logger.warning("watch from %s ended: %s", vantage.name, err)
        else:
            self._counters[vantage.name] = result.counters
            if result.changed:
                assert self._plan is not None
                record_monitor_verdict(
                    workflow.metric_meter(), self._plan.system, vantage.name, result.verdict
                )
                failing_since = result.counters.failing_since
                self._apply(
                    VerdictChanged(
                        vantage=vantage.name,
                        verdict=result.verdict,
                        at=workflow.now(),
                        detail=(result.last_failure or "")
                        if result.verdict is not Verdict.HEALTHY
                        else "",
                        failing_since=datetime.fromtimestamp(failing_since, UTC)
                        if failing_since is not None
                        else None,
                    )
                )
        self._start_watch(vantage)

    async def _stop_watches(self) -> None:
        watches, self._watches = list(self._watches.values()), {}
        readiness, self._readiness_watch = self._readiness_watch, None
        await stop_watches(watches)
        if readiness is not None:
            readiness.cancel()
            await asyncio.gather(readiness, return_exceptions=True)

    # --- DR readiness ---------------------------------------------------------------------

    @property
    def _standby_region(self) -> str:
        assert self._plan is not None
        return self._plan.other_region(self._active_region)

    def _start_readiness_watch(self) -> None:
        plan = self._plan
        assert plan is not None and plan.readiness is not None
        standby = self._standby_region
        known = self._state.readiness
        queue = region_task_queue(standby)
        self._readiness_watch = workflow.start_activity_method(
            ReadinessActivities.watch_dr_readiness,
            ReadinessRequest(
                system=plan.system,
                region=standby,
                oms_url=plan.oms_urls[standby],
                db_direction="failover" if standby == plan.dr_region else "failback",
                thresholds=plan.readiness,
                reported=known.ready if known is not None and known.region == standby else None,
                interval_s=plan.interval_s,
                max_lifetime_s=plan.watch_lifetime_s,
                counters=self._readiness_counters,
            ),
            task_queue=queue,
            # The standby region's worker measures from there. If none polls, nobody can say
            # the standby is ready: that is reported as not ready, not waited on for ever.
            schedule_to_start_timeout=timedelta(seconds=plan.watch_lifetime_s / 10),
            start_to_close_timeout=timedelta(seconds=plan.watch_lifetime_s + 60),
            heartbeat_timeout=timedelta(seconds=plan.interval_s * 3 + 5),
            retry_policy=WATCH_RETRY,
        )

    def _on_readiness_done(self, watch: ActivityHandle[ReadinessResult]) -> None:
        standby = self._standby_region
        try:
            result = watch.result()
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ActivityTimeout) and cause.type is TimeoutType.SCHEDULE_TO_START:
                self._set_readiness(
                    standby,
                    False,
                    f"no worker polls {region_task_queue(standby)}: the standby cannot be "
                    "measured from its own side",
                    None,
                )
            else:
                workflow.logger.warning("readiness watch of %s ended: %s", standby, err)
        else:
            self._readiness_counters = result.counters
            if result.changed and result.ready is not None:
                self._set_readiness(standby, result.ready, result.reason, result.counters.last)
            elif self._state.readiness is not None:
                # The lifetime ended with nothing new: keep the latest figures for the status.
                self._state = self._state.model_copy(
                    update={
                        "readiness": self._state.readiness.model_copy(
                            update={"last": result.counters.last}
                        )
                    }
                )
        self._start_readiness_watch()

    def _set_readiness(
        self, region: str, ready: bool, reason: str | None, sample: ReadinessSample | None
    ) -> None:
        previous = self._state.readiness
        alerted = previous.alerted if previous is not None else False
        now = workflow.now()
        readiness = DrReadiness(
            region=region,
            ready=ready,
            since=now,
            reason=None if ready else reason,
            last=sample,
            alerted=alerted,
        )
        # Raised once per episode, cleared once: the key names the transition, so a retried
        # delivery is dropped by the receiver.
        if not ready and not alerted:
            readiness.alerted = True
            self._alert(readiness, "critical", f"DR not ready: {readiness.describe()}")
        elif ready and alerted:
            readiness.alerted = False
            self._alert(readiness, "info", f"DR ready again: {readiness.describe()}")
        self._state = self._state.model_copy(update={"readiness": readiness})

    def _alert(
        self, readiness: DrReadiness, severity: Literal["info", "critical"], summary: str
    ) -> None:
        plan = self._plan
        assert plan is not None
        info = workflow.info()
        transition = "ready" if readiness.ready else "not-ready"
        alert = Alert(
            system=plan.system,
            kind="monitor",
            severity=severity,
            summary=summary,
            details={"dr_readiness": readiness.model_dump(mode="json")},
            idempotency_key=f"{info.workflow_id}/dr-readiness/{transition}/"
            f"{readiness.since.isoformat()}",
            workflow_id=info.workflow_id,
        )
        self._alerts = [a for a in self._alerts if not a.done()]
        self._alerts.append(asyncio.ensure_future(self._notify(alert)))

    async def _notify(self, alert: Alert) -> None:
        try:
            await workflow.execute_activity_method(
                AlertActivities.notify,
                alert,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ALERT_RETRY,
            )
        except ActivityError as err:
            workflow.logger.error("alert %r not delivered: %s", alert.summary, err)

    # --- the state machine and its one action ---------------------------------------------

    def _apply(self, event: MonitorEvent) -> None:
        assert self._policy is not None
        phase = self._state.phase
        self._state, action = step(self._state, event, self._policy)
        if self._state.phase is not phase:
            set_monitor_phase(workflow.metric_meter(), self._system, self._state.phase)
        if action == "failover" and self._promotion is None:
            # The evidence is what the quorum looked like at this instant, not after the
            # promotion task first runs.
            self._promotion = asyncio.ensure_future(self._promote(self._evidence()))

    def _evidence(self) -> MonitorEvidence:
        plan, policy = self._plan, self._policy
        assert plan is not None and policy is not None
        decided_at = workflow.now()
        started = detection_started_at(self._state, policy)
        if started is not None:
            record_detection_latency(
                workflow.metric_meter(), plan.system, (decided_at - started).total_seconds()
            )
        return quorum_evidence(
            self._state,
            policy,
            {v.name: v.region for v in plan.vantages},
            workflow.info().workflow_id,
            decided_at,
        )

    def _dr_not_ready_reason(self, to_region: str) -> str | None:
        readiness = self._state.readiness
        if readiness is None or readiness.ready or readiness.region != to_region:
            return None
        return readiness.describe()[:500]

    async def _promote(self, evidence: MonitorEvidence) -> None:
        plan = self._plan
        assert plan is not None
        to_region = plan.other_region(self._active_region)
        down = sorted(v for v, verdict in self._state.verdicts.items() if verdict == Verdict.DOWN)
        request = PromotionRequest(
            system=plan.system,
            requested_by=MONITOR_IDENTITY,
            reason=f"automatic: {', '.join(down)} see {self._active_region} down",
            kind=DrKind.INCIDENT,
            to_region=to_region,
            detected_at=workflow.now(),
            evidence=evidence,
            dr_not_ready_reason=self._dr_not_ready_reason(to_region),
        )
        succeeded, detail = False, ""
        try:
            child = await workflow.start_child_workflow(
                PROMOTION_WORKFLOW,
                request,
                id=promotion_workflow_id(plan.system),
                task_queue=region_task_queue(to_region),
                parent_close_policy=ParentClosePolicy.ABANDON,
                result_type=PromotionReport,
            )
            self._promotion_id = child.id
            report = await child
            succeeded = report.outcome is DrOutcome.PROMOTED
            detail = report.outcome_detail
        except WorkflowAlreadyStartedError:
            detail = "a promotion of this system was already running"
        except ChildWorkflowError as err:
            detail = f"promotion failed: {err.cause or err}"
        self._promotion = None
        self._apply(ActionFinished(succeeded=succeeded, at=workflow.now(), detail=detail))
        if succeeded:
            self._watch_region(to_region)
            self._counters = {}
            self._apply(TargetSwitched(at=workflow.now(), detail=f"now watching {to_region}"))
            await self._stop_watches()
            self._readiness_counters = None
            self._start_watches()

    # --- operator actions -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """An operator can act before the plan has loaded; the action waits for this."""
        return self._policy is not None

    async def _ready(self) -> None:
        await workflow.wait_condition(lambda: self.ready)

    # The record_* methods act once the monitor is ready; the HealthMonitor calls them too.

    def record_pause(self, action: OperatorAction) -> str:
        self._apply(Paused(by=action.by, at=workflow.now()))
        return f"paused by {action.by}"

    def record_resume(self, action: OperatorAction) -> str:
        self._apply(Resumed(by=action.by, at=workflow.now()))
        return f"resumed by {action.by}"

    def record_ack(self, action: OperatorAction) -> str:
        self._apply(Acknowledged(by=action.by, at=workflow.now()))
        return f"acknowledged by {action.by}"

    @workflow.update(name="pause")
    async def pause(self, action: OperatorAction) -> str:
        await self._ready()
        return self.record_pause(action)

    @pause.validator
    def validate_pause(self, action: OperatorAction) -> None:
        if self._state.paused_by is not None:
            raise ValueError(f"already paused by {self._state.paused_by}")

    @workflow.update(name="resume")
    async def resume(self, action: OperatorAction) -> str:
        await self._ready()
        return self.record_resume(action)

    @resume.validator
    def validate_resume(self, action: OperatorAction) -> None:
        if not self._state.paused:
            raise ValueError("the monitor is not paused")

    @workflow.update(name="ack")
    async def ack(self, action: OperatorAction) -> str:
        await self._ready()
        return self.record_ack(action)

    @ack.validator
    def validate_ack(self, action: OperatorAction) -> None:
        if not self._state.needs_ack:
            raise ValueError("nothing to acknowledge: no automatic failover is awaiting an ack")

    @workflow.update(name="retarget")
    async def retarget(self, action: RetargetAction) -> str:
        return await self.retarget_to(action)

    async def retarget_to(self, action: RetargetAction) -> str:
        await self._ready()
        plan = self._plan
        assert plan is not None
        if action.region not in plan.oms_urls:
            raise ApplicationError(
                f"{plan.system} has regions {sorted(plan.oms_urls)}, not {action.region!r}"
            )
        if action.region == self._active_region:
            return f"already watching {action.region}"
        self._watch_region(action.region)
        self._counters = {}
        self._apply(
            TargetSwitched(at=workflow.now(), detail=f"{action.by}: now watching {action.region}")
        )
        await self._stop_watches()
        self._readiness_counters = None
        self._start_watches()
        return f"now watching {action.region} (retargeted by {action.by})"

    @retarget.validator
    def validate_retarget(self, action: RetargetAction) -> None:
        if self._promotion is not None:
            raise ValueError("a promotion is in flight; the monitor retargets itself after it")

    @workflow.query(name="status")
    def status(self) -> MonitorStatus:
        plan = self._plan
        return MonitorStatus(
            system=self._system,
            phase=self._state.phase,
            active_region=self._active_region,
            verdicts={
                v.name: self._state.verdicts.get(v.name, Verdict.UNKNOWN)
                for v in (plan.vantages if plan else [])
            },
            paused=self._state.paused,
            needs_ack=self._state.needs_ack,
            blocked_reason=self._state.blocked_reason,
            actions=self._state.actions,
            last_action_at=self._state.last_action_at,
            promotion_workflow_id=self._promotion_id,
            history_length=workflow.info().get_current_history_length(),
            cooldown_s=plan.cooldown_s if plan else None,
            readiness=self._state.readiness,
        )
