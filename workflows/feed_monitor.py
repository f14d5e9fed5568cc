"""FeedMonitor: watch every ranked source of one market-data feed and switch the active one.

Every source is watched from every vantage point (workflows/probe_watch.py). The pure rules in
domain/feeds.py decide from those verdicts which source consumers should follow: leave the
active source only when a majority sees it down, return to a better-ranked one only after a whole
recovery window of health. A switch is one activity (publish the active source, move DNS).

Everything the monitor knows is one ``FeedState``: continue-as-new hands it over whole.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.feeds import FeedActivities, FeedSwitchRequest
    from activities.metrics import record_monitor_verdict, set_feed_active_source
    from activities.plan import FeedPlanRequest, PlanActivities
    from activities.probes import ProbeCounters, ProbeTarget, WatchResult
    from domain.feeds import (
        FeedPolicy,
        FeedState,
        apply_switch,
        choose_source,
        next_recovery_check,
        record_verdict,
        source_verdict,
    )
    from domain.health import Verdict
    from domain.monitoring import (
        FEED_MONITOR_WORKFLOW,
        FeedMonitorRequest,
        FeedPlan,
        FeedStatus,
        OperatorAction,
        SourcePlan,
        VantagePlan,
    )
    from workflows.probe_watch import start_watch, stop_watches
    from workflows.steps import SERVICE_RETRY, parse_input

Watched = tuple[str, str]  # (source, vantage)
NO_ACKS = "a feed monitor switches sources without acks; nothing to acknowledge"


@workflow.defn(name=FEED_MONITOR_WORKFLOW)
class FeedMonitorWorkflow:
    def __init__(self) -> None:
        self._feed: FeedState | None = None
        self._plan: FeedPlan | None = None
        self._policy: FeedPolicy | None = None
        self._watches: dict[Watched, ActivityHandle[WatchResult]] = {}
        self._counters: dict[Watched, ProbeCounters] = {}
        # A resume re-evaluates at once: a standing majority DOWN switches without new verdicts.
        self._resumed = False

    @workflow.run
    async def run(self, raw: object = None) -> None:
        request = parse_input(FeedMonitorRequest, raw)
        state = await self.watch(request.feed, request.state)
        workflow.continue_as_new(
            FeedMonitorRequest(feed=request.feed, state=state), workflow=FeedMonitorWorkflow.run
        )

    @property
    def state(self) -> FeedState | None:
        """None until the first plan has loaded (it names the best-ranked source)."""
        return self._feed

    async def watch(self, feed: str, state: FeedState | None) -> FeedState:
        """Watch until the server suggests continue-as-new; returns the state to hand over.

        The HealthMonitor runs this too (workflows/health_monitor.py): the commands it issues
        must stay those its recorded histories hold.
        """
        plan = await workflow.execute_activity_method(
            PlanActivities.load_feed_plan,
            FeedPlanRequest(feed=feed),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        ranked = sorted(plan.sources, key=lambda s: s.rank)
        policy = FeedPolicy(
            ranked_sources=[s.name for s in ranked],
            vantages=[v.name for v in plan.vantages],
            recovery_window_s=plan.recovery_window_s,
        )
        self._plan, self._policy = plan, policy
        self._feed = state or FeedState(active=ranked[0].name)
        self._record_active_source()
        for source in ranked:
            for vantage in plan.vantages:
                self._start_watch(source, vantage)
        while not workflow.info().is_continue_as_new_suggested():
            wait = next_recovery_check(self._state, workflow.now(), policy)
            # A timeout means a recovery window may have completed: re-evaluate.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: (
                        any(w.done() for w in self._watches.values())
                        or self._resumed
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=timedelta(seconds=wait) if wait is not None else None,
                )
            for source in ranked:
                for vantage in plan.vantages:
                    self._on_watch_done(source, vantage, policy)
            self._resumed = False
            await self._maybe_switch(feed, policy)
        await stop_watches(self._watches.values())
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    def _start_watch(self, source: SourcePlan, vantage: VantagePlan) -> None:
        plan = self._plan
        assert plan is not None
        reported = self._state.verdicts.get(source.name, {}).get(vantage.name, Verdict.UNKNOWN)
        self._watches[(source.name, vantage.name)] = start_watch(
            vantage,
            ProbeTarget(name=source.name, kind="market_data", url=source.url),
            reported,
            self._counters.get((source.name, vantage.name)),
            plan,
        )

    def _on_watch_done(self, source: SourcePlan, vantage: VantagePlan, policy: FeedPolicy) -> None:
        watch = self._watches[(source.name, vantage.name)]
        if not watch.done():
            return
        try:
            result = watch.result()
        except ActivityError as err:
            workflow.logger.warning("watch of %s ended: %s", source.name, err)
        else:
            self._counters[(source.name, vantage.name)] = result.counters
            if result.changed:
                record_monitor_verdict(
                    workflow.metric_meter(), source.name, vantage.name, result.verdict
                )
            self._feed = record_verdict(
                self._state, source.name, vantage.name, result.verdict, workflow.now(), policy
            )
        self._start_watch(source, vantage)

    async def _maybe_switch(self, feed: str, policy: FeedPolicy) -> None:
        switch = choose_source(self._state, workflow.now(), policy)
        if switch is None:
            return
        try:
            await workflow.execute_activity_method(
                FeedActivities.switch_feed_source,
                FeedSwitchRequest(feed=feed, source=switch.to_source, reason=switch.reason),
                start_to_close_timeout=timedelta(seconds=90),
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            # Not applied: the next verdict or timer re-evaluates and tries again.
            workflow.logger.error("switching %s to %s failed: %s", feed, switch.to_source, err)
            return
        self._feed = apply_switch(self._state, switch)
        self._record_active_source()

    def _record_active_source(self) -> None:
        plan = self._plan
        assert plan is not None
        ranks = {s.name: s.rank for s in plan.sources}
        active = self._state.active
        set_feed_active_source(
            workflow.metric_meter(), plan.feed, active, ranks.get(active, 0), ranks
        )

    @property
    def _state(self) -> FeedState:
        assert self._feed is not None, "feed state is set before any watch starts"
        return self._feed

    # --- operator actions -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """An operator can act before the plan has loaded; the action waits for this."""
        return self._policy is not None

    async def _ready(self) -> None:
        await workflow.wait_condition(lambda: self.ready)

    # The record_* methods act once the monitor is ready; the HealthMonitor calls them too.

    def record_pause(self, action: OperatorAction) -> str:
        self._feed = self._state.model_copy(update={"paused_by": action.by})
        return f"paused by {action.by}"

    def record_resume(self, action: OperatorAction) -> str:
        self._feed = self._state.model_copy(update={"paused_by": None})
        self._resumed = True
        return f"resumed by {action.by}"

    @workflow.update(name="pause")
    async def pause(self, action: OperatorAction) -> str:
        await self._ready()
        return self.record_pause(action)

    @pause.validator
    def validate_pause(self, action: OperatorAction) -> None:
        if self._feed is not None and self._feed.paused_by is not None:
            raise ValueError(f"already paused by {self._feed.paused_by}")

    @workflow.update(name="resume")
    async def resume(self, action: OperatorAction) -> str:
        await self._ready()
        return self.record_resume(action)

    @resume.validator
    def validate_resume(self, action: OperatorAction) -> None:
        if self._feed is None or self._feed.paused_by is None:
            raise ValueError("the monitor is not paused")

    @workflow.update(name="ack")
    async def ack(self, action: OperatorAction) -> str:
        # Never reached: the validator refuses every ack. Defined so that `drctl monitor ack`
        # gets that reason instead of "no such update".
        raise ApplicationError(NO_ACKS, non_retryable=True)

    @ack.validator
    def validate_ack(self, action: OperatorAction) -> None:
        raise ValueError(NO_ACKS)

    @workflow.query(name="feed_status")
    def feed_status(self) -> FeedStatus:
        policy = self._policy
        feed = self._feed
        return FeedStatus(
            feed=self._plan.feed if self._plan else "",
            active=feed.active if feed else "",
            source_verdicts={
                s: source_verdict(feed, s, policy)
                for s in (policy.ranked_sources if policy else [])
                if feed is not None and policy is not None
            },
            vantage_verdicts=dict(feed.verdicts) if feed else {},
            switches=list(feed.switches) if feed else [],
            paused_by=feed.paused_by if feed else None,
            history_length=workflow.info().get_current_history_length(),
        )
