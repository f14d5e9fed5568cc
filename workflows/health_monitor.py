"""HealthMonitor: watch one system from every vantage point and start its promotion by itself.

Each vantage point runs one long-lived watch activity on its own task queue. A watch reports back
only when its debounced verdict changes (or its lifetime ends), so a healthy system costs a
handful of history events per hour. The pure state machine in domain/health.py turns verdicts and
operator actions into a phase and, at most once per cooldown and then only after an operator's
ack, into a failover: the Promotion runbook started as a child with the fixed promotion id and an
ABANDON parent-close policy, so it outlives anything that happens to the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ActivityHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.feeds import FeedSwitchRequest, FeedSwitchResult
    from activities.plan import FeedPlanRequest, MonitorPlanRequest
    from activities.probes import ProbeCounters, ProbeTarget, WatchRequest, WatchResult
    from domain.feeds import (
        FeedPolicy,
        FeedState,
        apply_switch,
        choose_source,
        next_recovery_check,
        record_verdict,
        source_verdict,
    )
    from domain.health import (
        Acknowledged,
        ActionFinished,
        MonitorPolicy,
        MonitorState,
        Paused,
        Resumed,
        TargetSwitched,
        Verdict,
        VerdictChanged,
        step,
    )
    from domain.monitoring import (
        HEALTH_MONITOR_WORKFLOW,
        FeedPlan,
        FeedStatus,
        MonitorPlan,
        MonitorRequest,
        MonitorStatus,
        OperatorAction,
        RetargetAction,
        SourcePlan,
        VantagePlan,
    )
    from domain.promotion import (
        PROMOTION_WORKFLOW,
        DrKind,
        DrOutcome,
        PromotionReport,
        PromotionRequest,
        promotion_workflow_id,
        region_task_queue,
    )
    from workflows.steps import SERVICE_RETRY, parse_input

MONITOR_IDENTITY = "health-monitor"
# A watch that cannot reach its vantage's worker is retried for ever: the monitor never stops
# watching because one vantage point's worker restarted.
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)


@workflow.defn(name=HEALTH_MONITOR_WORKFLOW)
class HealthMonitorWorkflow:
    def __init__(self) -> None:
        self._state = MonitorState()
        self._plan: MonitorPlan | None = None
        self._policy: MonitorPolicy | None = None
        self._active_region = ""
        self._watches: dict[str, ActivityHandle[WatchResult]] = {}
        self._counters: dict[str, ProbeCounters] = {}
        self._system = ""
        self._feed: FeedState | None = None
        self._feed_plan: FeedPlan | None = None
        self._feed_policy: FeedPolicy | None = None
        self._resumed_feed = False
        self._promotion: asyncio.Future[None] | None = None
        self._promotion_id: str | None = None

    @workflow.run
    async def run(self, raw: object = None) -> None:
        request = parse_input(MonitorRequest, raw)
        if request.feed is not None:
            await self._run_feed(request, request.feed)
            return
        assert request.system is not None
        # The carried-over state is the truth from the first instant of a new run, even
        # before the plan has loaded: queries and operator actions see it.
        self._state = request.state or MonitorState()
        self._system = request.system
        plan = await workflow.execute_activity(
            "load_monitor_plan",
            MonitorPlanRequest(system=request.system),
            result_type=MonitorPlan,
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        self._plan = plan
        self._policy = MonitorPolicy(
            vantages=[v.name for v in plan.vantages], cooldown_s=plan.cooldown_s
        )
        self._active_region = request.active_region or plan.primary_region
        for vantage in plan.vantages:
            self._start_watch(vantage)
        while not self._should_continue_as_new():
            await workflow.wait_condition(
                lambda: (
                    any(w.done() for w in self._watches.values()) or self._should_continue_as_new()
                )
            )
            for vantage in plan.vantages:
                watch = self._watches.get(vantage.name)
                if watch is not None and watch.done():
                    self._on_watch_done(vantage, watch)
        await self._stop_watches()
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            MonitorRequest(
                system=request.system, state=self._state, active_region=self._active_region
            )
        )

    def _should_continue_as_new(self) -> bool:
        # Never while a promotion is in flight: its outcome must land in this run's state.
        return workflow.info().is_continue_as_new_suggested() and self._promotion is None

    # --- market-data feeds: the other action ----------------------------------------------

    async def _run_feed(self, request: MonitorRequest, feed: str) -> None:
        plan = await workflow.execute_activity(
            "load_feed_plan",
            FeedPlanRequest(feed=feed),
            result_type=FeedPlan,
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        ranked = sorted(plan.sources, key=lambda s: s.rank)
        policy = FeedPolicy(
            ranked_sources=[s.name for s in ranked],
            vantages=[v.name for v in plan.vantages],
            recovery_window_s=plan.recovery_window_s,
        )
        self._feed_plan, self._feed_policy = plan, policy
        self._feed = request.feed_state or FeedState(active=ranked[0].name)
        watches: dict[tuple[str, str], ActivityHandle[WatchResult]] = {}
        counters: dict[tuple[str, str], ProbeCounters] = {}

        def start(source: SourcePlan, vantage: VantagePlan) -> None:
            seen = self._feed_state.verdicts.get(source.name, {})
            reported = seen.get(vantage.name, Verdict.UNKNOWN)
            watches[(source.name, vantage.name)] = self._watch(
                vantage,
                ProbeTarget(name=source.name, kind="market_data", url=source.url),
                reported,
                counters.get((source.name, vantage.name)),
                plan,
            )

        for source in ranked:
            for vantage in plan.vantages:
                start(source, vantage)
        while not workflow.info().is_continue_as_new_suggested():
            wait = next_recovery_check(self._feed_state, workflow.now(), policy)
            # A timeout means a recovery window may have completed: re-evaluate.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        any(w.done() for w in watches.values())
                        or self._resumed_feed
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=timedelta(seconds=wait) if wait is not None else None,
                )
            for source in ranked:
                for vantage in plan.vantages:
                    watch = watches[(source.name, vantage.name)]
                    if not watch.done():
                        continue
                    try:
                        result = watch.result()
                    except ActivityError as err:
                        workflow.logger.warning("watch of %s ended: %s", source.name, err)
                    else:
                        counters[(source.name, vantage.name)] = result.counters
                        self._feed = record_verdict(
                            self._feed_state, source.name, vantage.name, result.verdict,
                            workflow.now(), policy,
                        )  # fmt: skip
                    start(source, vantage)
            self._resumed_feed = False
            await self._maybe_switch(feed, policy)
        pending = list(watches.values())
        for watch in pending:
            watch.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(MonitorRequest(feed=feed, feed_state=self._feed))

    async def _maybe_switch(self, feed: str, policy: FeedPolicy) -> None:
        switch = choose_source(self._feed_state, workflow.now(), policy)
        if switch is None:
            return
        try:
            await workflow.execute_activity(
                "switch_feed_source",
                FeedSwitchRequest(feed=feed, source=switch.to_source, reason=switch.reason),
                result_type=FeedSwitchResult,
                start_to_close_timeout=timedelta(seconds=90),
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            # Not applied: the next verdict or timer re-evaluates and tries again.
            workflow.logger.error("switching %s to %s failed: %s", feed, switch.to_source, err)
            return
        self._feed = apply_switch(self._feed_state, switch)

    @property
    def _feed_state(self) -> FeedState:
        assert self._feed is not None, "feed state is set before any watch starts"
        return self._feed

    @workflow.query(name="feed_status")
    def feed_status(self) -> FeedStatus:
        policy = self._feed_policy
        sources = policy.ranked_sources if policy else []
        return FeedStatus(
            feed=self._feed_plan.feed if self._feed_plan else "",
            active=self._feed.active if self._feed else "",
            source_verdicts={
                s: source_verdict(self._feed, s, policy)
                for s in sources
                if self._feed is not None and policy is not None
            },
            vantage_verdicts=dict(self._feed.verdicts) if self._feed else {},
            switches=list(self._feed.switches) if self._feed else [],
            paused_by=self._feed.paused_by if self._feed else None,
            history_length=workflow.info().get_current_history_length(),
        )

    def _watch(
        self,
        vantage: VantagePlan,
        target: ProbeTarget,
        reported: Verdict,
        counters: ProbeCounters | None,
        plan: MonitorPlan | FeedPlan,
    ) -> ActivityHandle[WatchResult]:
        request = WatchRequest(
            vantage=vantage.name,
            target=target,
            reported=reported,
            interval_s=plan.interval_s,
            latency_threshold_ms=plan.latency_threshold_ms,
            freshness_threshold_s=plan.freshness_threshold_s,
            confirmation_count=plan.confirmation_count,
            recovery_count=plan.recovery_count,
            max_lifetime_s=plan.watch_lifetime_s,
            http_proxy=vantage.http_proxy,
            counters=counters,
        )
        return workflow.start_activity(
            "watch_target",
            request,
            result_type=WatchResult,
            task_queue=vantage.task_queue,
            start_to_close_timeout=timedelta(seconds=plan.watch_lifetime_s + 60),
            heartbeat_timeout=timedelta(seconds=plan.interval_s * 3 + 5),
            retry_policy=WATCH_RETRY,
        )

    # --- watches --------------------------------------------------------------------------

    def _start_watch(self, vantage: VantagePlan) -> None:
        plan = self._plan
        assert plan is not None
        self._watches[vantage.name] = self._watch(
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
                self._apply(
                    VerdictChanged(vantage=vantage.name, verdict=result.verdict, at=workflow.now())
                )
        self._start_watch(vantage)

    async def _stop_watches(self) -> None:
        watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            watch.cancel()
        # Cancelled watches end with a cancellation error; that is their normal end here.
        await asyncio.gather(*watches, return_exceptions=True)

    # --- the state machine and its one action ---------------------------------------------

    def _apply(self, event: Any) -> None:
        assert self._policy is not None
        self._state, action = step(self._state, event, self._policy)
        if action == "failover" and self._promotion is None:
            self._promotion = asyncio.ensure_future(self._promote())

    async def _promote(self) -> None:
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
            self._active_region = to_region
            self._counters = {}
            self._apply(TargetSwitched(at=workflow.now(), detail=f"now watching {to_region}"))
            await self._stop_watches()
            for vantage in plan.vantages:
                self._start_watch(vantage)

    # --- operator actions -----------------------------------------------------------------

    async def _ready(self) -> None:
        # An operator can act before the plan has loaded; the action waits for it.
        await workflow.wait_condition(
            lambda: self._policy is not None or self._feed_policy is not None
        )

    @workflow.update(name="pause")
    async def pause(self, action: OperatorAction) -> str:
        await self._ready()
        if self._feed is not None:
            self._feed = self._feed.model_copy(update={"paused_by": action.by})
        else:
            self._apply(Paused(by=action.by, at=workflow.now()))
        return f"paused by {action.by}"

    @pause.validator
    def _validate_pause(self, action: OperatorAction) -> None:
        paused_by = self._feed.paused_by if self._feed is not None else self._state.paused_by
        if paused_by is not None:
            raise ValueError(f"already paused by {paused_by}")

    @workflow.update(name="resume")
    async def resume(self, action: OperatorAction) -> str:
        await self._ready()
        if self._feed is not None:
            self._feed = self._feed.model_copy(update={"paused_by": None})
            self._resumed_feed = True
        else:
            self._apply(Resumed(by=action.by, at=workflow.now()))
        return f"resumed by {action.by}"

    @resume.validator
    def _validate_resume(self, action: OperatorAction) -> None:
        paused = self._feed.paused_by is not None if self._feed is not None else self._state.paused
        if not paused:
            raise ValueError("the monitor is not paused")

    @workflow.update(name="ack")
    async def ack(self, action: OperatorAction) -> str:
        await self._ready()
        self._apply(Acknowledged(by=action.by, at=workflow.now()))
        return f"acknowledged by {action.by}"

    @ack.validator
    def _validate_ack(self, action: OperatorAction) -> None:
        if self._feed is not None:
            raise ValueError("a feed monitor switches sources without acks; nothing to acknowledge")
        if not self._state.needs_ack:
            raise ValueError("nothing to acknowledge: no automatic failover is awaiting an ack")

    @workflow.update(name="retarget")
    async def retarget(self, action: RetargetAction) -> str:
        await self._ready()
        plan = self._plan
        assert plan is not None
        if action.region not in plan.oms_urls:
            raise ApplicationError(
                f"{plan.system} has regions {sorted(plan.oms_urls)}, not {action.region!r}"
            )
        if action.region == self._active_region:
            return f"already watching {action.region}"
        self._active_region = action.region
        self._counters = {}
        self._apply(
            TargetSwitched(at=workflow.now(), detail=f"{action.by}: now watching {action.region}")
        )
        await self._stop_watches()
        for vantage in plan.vantages:
            self._start_watch(vantage)
        return f"now watching {action.region} (retargeted by {action.by})"

    @retarget.validator
    def _validate_retarget(self, action: RetargetAction) -> None:
        if self._feed is not None:
            raise ValueError("a feed monitor follows its ranked sources; it has no region")
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
        )
