"""Promotion: fail a trading system over to its DR region, exactly once, with an audit trail.

Incident (unplanned): confirm the primary is down (the SystemMonitor's quorum evidence, or
probes from the DR side) -> take the lease (new epoch) -> side by side: fence the primary (best
effort; the lease already fences; wait out its old lease if it could not confirm) and the
database's steps (check the replica's lag, fence the primary's writers, promote the replica) ->
sync DR (stream and database) -> activate DR reduce-only -> per venue, in parallel: VenueRecovery,
that venue's positions from fills vs the book, and its release as soon as both are clean (a
venue in a long cooldown holds only itself) -> discrepancy gate for the venues held above
tolerance -> DNS to DR -> notify.

Planned: a second operator approves first, and the primary is deactivated gracefully (its venue
sessions logged out) before the lease moves.

Once the lease has moved the system is never silently left half-way: a step that fails for good
pages, records the failure, and waits for an operator to retry it or abort (staying fenced).

Runs started before per-venue release (no PER_VENUE_RELEASE marker in their history) take the
path they were recorded on, ``_promote_all_venues_at_once``: one release after every venue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.exceptions import TimeoutError as StepTimeout
from temporalio.types import MethodAsyncSingleParam

with workflow.unsafe.imports_passed_through():
    from activities.alerts import Alert, AlertActivities
    from activities.database import DatabaseActivities, DbEpochRequest, DbStepRequest
    from activities.dns import DnsActivities, DnsChangeResult, DnsUpdateRequest
    from activities.lease_activities import AcquireLeaseRequest, LeaseActivities
    from activities.metrics import (
        OperatorGate,
        record_promotion,
        record_venue_rto,
        set_lease_epoch,
        set_promotion_waiting_operator,
    )
    from activities.oms import (
        ActivateRequest,
        BookRequest,
        FenceRequest,
        OmsActivities,
        ProbeRequest,
        ReleaseRequest,
        SyncRequest,
    )
    from activities.plan import PlanActivities, PlanRequest, PositionsRequest
    from domain.promotion import (
        PROMOTION_WORKFLOW,
        VENUE_RECOVERY_WORKFLOW,
        Approval,
        DatabaseGap,
        Decision,
        DrKind,
        DrOutcome,
        FenceOutcome,
        LeaseGrant,
        MonitorEvidence,
        PositionCheck,
        PrimaryConfirmation,
        PromotionPlan,
        PromotionProgress,
        PromotionReport,
        PromotionRequest,
        RecordedAction,
        ReplicationGap,
        Resolution,
        StepRecord,
        VenueRecoveryReport,
        VenueRecoveryRequest,
    )
    from workflows.steps import (
        SERVICE_RETRY,
        WORKER_LOST,
        RunbookStop,
        StepLog,
        failure_message,
        parse_input,
        upsert_dr_attributes,
    )

T = TypeVar("T")
A = TypeVar("A")

# How a step fails: an activity (a local one fails with its own error, not wrapped), or a child.
STEP_FAILED = (ActivityError, ChildWorkflowError, ApplicationError, StepTimeout)

CONTROL_CALL = timedelta(seconds=15)
CONTROL_RETRY = SERVICE_RETRY
# Without the lease there is no promotion: while the store is unreachable, keep trying (the
# operator sees the attempts in the UI) rather than give up or go on without it.
LEASE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
    non_retryable_error_types=[],
)
FENCE_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=200))
NOTIFY_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(milliseconds=500))
# A database that does not answer gets a few seconds of retries, then the step pages and waits
# for an operator (``_gated``): a replica is never promoted blind. Configuration errors are
# raised non-retryable by the activities themselves.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=5,
)
DB_CALL = timedelta(seconds=15)
DB_PROMOTE_CALL = timedelta(seconds=90)
# Recorded as skipped, with the reason, for a system without [systems.database].
DATABASE_STEPS = ("check_db_replica", "fence_db_primary", "database_gate", "promote_db_replica")

# Runs that have this marker release each venue as soon as it is reconciled, take the monitor's
# evidence as the confirmation, run the database steps, and run short steps as local activities.
# Runs recorded without it (started by an older worker) keep their one-release path.
PER_VENUE_RELEASE = "promotion-per-venue-release-local-steps-database"


@workflow.defn(name=PROMOTION_WORKFLOW)
class PromotionWorkflow:
    def __init__(self) -> None:
        self._steps = StepLog()
        self._request: PromotionRequest | None = None
        self._plan: PromotionPlan | None = None
        self._outcome = DrOutcome.RUNNING
        self._outcome_detail = "in progress"
        self._waiting_for: str | None = None
        self._fenced = False
        self._grant: LeaseGrant | None = None
        self._previous_epoch: int | None = None
        self._confirmation: PrimaryConfirmation | None = None
        self._fence: FenceOutcome | None = None
        self._gap: ReplicationGap | None = None
        self._venues: list[VenueRecoveryReport] = []
        self._positions: PositionCheck | None = None
        self._dns: DnsChangeResult | None = None
        self._actions: list[RecordedAction] = []
        self._approval: Approval | None = None
        self._decision: Decision | None = None
        self._resolution: Resolution | None = None
        self._alert_failures: list[str] = []
        # Per-venue release (PER_VENUE_RELEASE):
        self._evidence_note = ""
        self._started_notice: asyncio.Future[None] | None = None
        self._db: DatabaseGap | None = None
        self._venue_reports: dict[str, VenueRecoveryReport] = {}
        self._venue_checks: dict[str, PositionCheck] = {}
        self._released: list[str] = []
        self._held: list[str] = []
        self._released_notional = Decimal(0)
        self._release_record: StepRecord | None = None
        # One question to an operator at a time (steps run side by side; see _ask_decision).
        self._operator = asyncio.Lock()

    # --- the runbook ----------------------------------------------------------------------

    @workflow.run
    async def run(self, raw: object = None) -> PromotionReport:
        # Decoded here, not by the SDK: input typed into the UI that does not fit would
        # otherwise fail every workflow task forever instead of failing the run once, clearly.
        request = parse_input(PromotionRequest, raw)
        self._request = request
        self._set_search_attributes()
        try:
            if workflow.patched(PER_VENUE_RELEASE):
                await self._promote(request)
            else:
                await self._promote_all_venues_at_once(request)
        except RunbookStop as stop:
            self._outcome, self._outcome_detail = stop.outcome, stop.detail
        self._set_search_attributes()
        report = self._report()
        self._record_metrics(report)
        if self._started_notice is not None:
            await self._started_notice
        await self._notify(
            "promotion_completed" if self._outcome is DrOutcome.PROMOTED else "promotion_failed",
            "info" if self._outcome is DrOutcome.PROMOTED else "critical",
            report.summary_lines()[0],
            "final",
            details=report.brief(),
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    # --- the runbook, per-venue release (PER_VENUE_RELEASE) ------------------------------------

    async def _promote(self, request: PromotionRequest) -> None:
        plan = await self._before_fencing(
            "plan",
            # Local: it only reads the topology this worker loaded. Idempotent, milliseconds,
            # nothing to heartbeat; and it runs here, on the queue the promotion was started on.
            lambda: workflow.execute_local_activity_method(
                PlanActivities.load_promotion_plan,
                PlanRequest(system=request.system, to_region=request.to_region),
                start_to_close_timeout=CONTROL_CALL,
                retry_policy=CONTROL_RETRY,
            ),
        )
        self._plan = plan
        # Both gates at 0 from the start: "nobody is waiting" is a value a dashboard can show
        # and an alert can rely on, not a missing series. (Metrics are not history.)
        meter = workflow.metric_meter()
        for gate in OperatorGate:
            set_promotion_waiting_operator(meter, plan.system, gate, False)
        if request.planned:
            await self._await_approval(plan)
            await self._deactivate_primary(plan)
        elif not self._take_monitor_evidence(request.evidence):
            await self._confirm_primary_down(plan, self._evidence_note)

        # Told in the background: the pager's round trip is not on the path to trading. It is
        # awaited before the final alert, so the desk hears "started" before "completed".
        self._started_notice = asyncio.ensure_future(
            self._notify(
                "promotion_started",
                "warning",
                f"promoting {plan.system} to {plan.to_region} ({self._kind.value})",
                "started",
            )
        )
        holder = f"promotion:{workflow.info().workflow_id}:{workflow.info().run_id}"
        # Not local: a lease store outage is retried without end, and each attempt must show in
        # the UI as the pending activity it is.
        grant = await self._before_fencing(
            "acquire_lease",
            lambda: self._call(
                LeaseActivities.acquire_lease,
                AcquireLeaseRequest(system=plan.system, region=plan.to_region, holder=holder),
                retry=LEASE_RETRY,
            ),
        )
        self._grant, self._fenced = grant, True
        set_lease_epoch(workflow.metric_meter(), plan.system, grant.epoch)

        # The lease fences already. What follows makes the fence hold everywhere, and none of it
        # lets anything trade: the OMS primary's fence (and the wait for its old lease when it
        # did not answer) and the database's check, fence and promotion are independent, so
        # they run side by side. The stream sync waits for both: the DR OMS loads the promoted
        # database, and nothing the old primary publishes may land after the sync read it.
        await _all(
            self._fence_oms_primary(plan, grant, request.planned),
            self._database_steps(plan, grant),
        )
        self._gap = await self._gated(
            "sync_dr_state",
            lambda: self._call(
                OmsActivities.sync_dr_state,
                SyncRequest(oms_url=plan.to_oms_url, timeout_s=plan.sync_timeout_s),
                timeout=timedelta(seconds=plan.sync_timeout_s + 15),
            ),
        )
        if self._db is not None:
            self._db = self._db.model_copy(update={"loaded": self._gap.database_loaded})
        if request.dr_not_ready_reason is not None:
            await self._readiness_gate(plan, grant, request.dr_not_ready_reason)
        # Before activating: an active OMS reports its publisher's watermark, not the stream's.
        book = await self._gated(
            "snapshot_dr_book",
            # Local: one read of the DR OMS's watermark (orders left out); repeatable, short.
            lambda: self._quick(
                OmsActivities.fetch_dr_book,
                BookRequest(oms_url=plan.to_oms_url, include_orders=False),
            ),
        )
        fills_since = (book.watermark.published_at or workflow.now()) - timedelta(
            seconds=plan.fill_lookback_margin_s
        )
        await self._gated(
            "activate_dr",
            # Local: idempotent at the OMS for the same epoch (the DR-control protocol), one
            # short call.
            lambda: self._quick(
                OmsActivities.activate_dr,
                ActivateRequest(oms_url=plan.to_oms_url, epoch=grant.epoch, mode="reduce_only"),
            ),
        )
        await self._recover_and_release_venues(plan, grant, fills_since)
        # DNS moves once every venue is released or decided, not with the first one. The desk's
        # clients follow this one name for every venue: moved early, they would reconnect to an
        # OMS that still refuses the venues being reconciled (reduce-only there) and read those
        # refusals as rejects, while a second move is never needed once all are settled. DR is
        # the active side either way, so a held venue does not keep DNS on the fenced primary.
        self._dns = await self._gated(
            "update_dns",
            lambda: self._call(
                DnsActivities.update_dns,
                DnsUpdateRequest(system=plan.system, active=plan.dns_active),
                timeout=timedelta(seconds=90),
            ),
        )
        if not self._held:
            self._outcome = DrOutcome.PROMOTED
            self._outcome_detail = f"{plan.to_region} trading at epoch {grant.epoch}"

    def _take_monitor_evidence(self, evidence: MonitorEvidence | None) -> bool:
        """The SystemMonitor's quorum stands as the confirmation: no second round of probes.

        Evidence that does not reach its own quorum does not stand; the primary is then probed
        from DR as for a manual failover, and the step says why.
        """
        if evidence is None:
            return False
        shortfall = evidence.shortfall()
        if shortfall is not None:
            self._evidence_note = f"monitor evidence set aside ({shortfall}); probed from DR"
            return False
        record = self._steps.begin("confirm_primary_down")
        self._confirmation = PrimaryConfirmation.from_evidence(evidence)
        self._steps.end(record, attempts=0, detail=evidence.sentence())
        return True

    async def _fence_oms_primary(
        self, plan: PromotionPlan, grant: LeaseGrant, planned: bool
    ) -> None:
        if planned:
            return  # deactivated gracefully before the lease moved
        self._fence = await self._gated(
            "fence_primary",
            # Local: best effort and idempotent (deactivate at an epoch twice changes nothing);
            # one short call whose failure is an outcome, not an error.
            lambda: self._quick(
                OmsActivities.fence_primary,
                FenceRequest(oms_url=plan.from_oms_url, epoch=grant.epoch, best_effort=True),
                retry=FENCE_RETRY,
            ),
        )
        await self._await_old_lease_expiry(grant, self._fence)

    async def _database_steps(self, plan: PromotionPlan, grant: LeaseGrant) -> None:
        """Check the DR replica's lag, fence the primary's writers, promote the replica.

        A replica further behind than the system allows is promoted only once an operator
        accepts the data loss; abort (or no answer) ends here with everything fenced. A replica
        that does not answer is retried, then pages and waits (``_gated``): never promoted blind.
        """
        if not plan.has_database:
            for name in DATABASE_STEPS:
                self._steps.skip(name, "no database configured")
            return
        step = DbStepRequest(system=plan.system, direction=plan.direction)
        at_epoch = DbEpochRequest(system=plan.system, direction=plan.direction, epoch=grant.epoch)
        # Local: read-only, one query on the replica (and one on the primary when it answers).
        check = await self._gated(
            "check_db_replica",
            lambda: self._quick(
                DatabaseActivities.check_db_replica, step, retry=DB_RETRY, timeout=DB_CALL
            ),
        )
        self._db = DatabaseGap(
            lag=check.lag,
            max_lag_bytes=check.max_lag_bytes,
            max_lag_s=check.max_lag_s,
            beyond_maximum=check.beyond_maximum,
        )
        # Local: monotonic (the same epoch twice changes nothing), a dead primary is reported in
        # the result rather than raised, one short transaction per reachable database.
        fence = await self._gated(
            "fence_db_primary",
            lambda: self._quick(
                DatabaseActivities.fence_db_primary, at_epoch, retry=DB_RETRY, timeout=DB_CALL
            ),
        )
        self._db = self._db.model_copy(update={"fence": fence})
        if check.beyond_maximum is not None:
            decision = await self._ask_decision(
                plan,
                "database_gate",
                f"the DR database replica is behind: {check.beyond_maximum}. Accept the data "
                "loss and promote it, or abort (everything stays fenced)",
            )
            if decision is None or decision.action == "abort":
                who = f"{decision.by} chose to abort" if decision else "no operator decision"
                raise RunbookStop(
                    DrOutcome.ABORTED,
                    f"the DR database replica is behind ({check.beyond_maximum}); {who}. The "
                    f"lease stays with {plan.to_region} at epoch {grant.epoch} and the database "
                    "is fenced there: nothing trades.",
                )
            self._db = self._db.model_copy(update={"data_loss_accepted_by": decision.by})
        else:
            self._steps.skip("database_gate", "replica within the system's maximum lag")
        # Not local: pg_promote waits for the replica to finish recovery, which can take long.
        # A retry after a lost result reports already_primary: the replica is promoted once.
        promotion = await self._gated(
            "promote_db_replica",
            lambda: self._call(
                DatabaseActivities.promote_db_replica,
                at_epoch,
                retry=DB_RETRY,
                timeout=DB_PROMOTE_CALL,
            ),
        )
        self._db = self._db.model_copy(update={"promotion": promotion})

    async def _recover_and_release_venues(
        self, plan: PromotionPlan, grant: LeaseGrant, fills_since: datetime
    ) -> None:
        """Per venue, in parallel: VenueRecovery, its position check, then its release.

        A venue is released the moment its own recovery and position check are clean, so one
        in a long reconnect cooldown holds only itself. What stays above tolerance, counted
        with everything already released, waits for one operator decision once every venue
        has been recovered.
        """
        takeover_at = self._steps.get("acquire_lease")
        assert takeover_at is not None
        recovery = self._steps.begin("venue_recovery")
        recovering = set(plan.venues)

        async def recover(venue: str) -> None:
            report = await self._gated(
                f"venue_recovery/{venue}",
                lambda: self._recover_venue(
                    plan, grant, fills_since, takeover_at.started_at, venue
                ),
            )
            self._venue_reports[venue] = report
            self._venues = [self._venue_reports[v] for v in plan.venues if v in self._venue_reports]
            recovering.discard(venue)
            if not recovering:
                self._steps.end(recovery, attempts=1, detail=f"{len(plan.venues)} venue(s)")

        async def verify(venue: str) -> None:
            check = await self._gated(
                f"verify_positions/{venue}",
                lambda: self._call(
                    PlanActivities.verify_positions,
                    PositionsRequest(
                        system=plan.system,
                        oms_url=plan.to_oms_url,
                        fills_since=fills_since,
                        venue=venue,
                    ),
                    timeout=timedelta(seconds=60),
                ),
            )
            self._venue_checks[venue] = check
            self._positions = PositionCheck(
                discrepancies=[d for c in self._venue_checks.values() for d in c.discrepancies],
                positions=check.positions,
                rounds=max(c.rounds for c in self._venue_checks.values()),
            )

        async def bring_up(venue: str) -> None:
            if venue in plan.session_bound_reads:
                # This venue reads only inside its one session per account (FIX): a second
                # logon for the check would end the recovery's. One after the other.
                await recover(venue)
                await verify(venue)
            else:
                # Positions come from fills, which the recovery's cancels do not change: the
                # check runs beside the recovery, and both gate this venue's release.
                await _all(recover(venue), verify(venue))
            if self._clear_to_release(plan, venue):
                await self._release(plan, grant, venue)
            else:
                self._held.append(venue)

        await _all(*(bring_up(venue) for venue in plan.venues))
        if self._held:
            await self._venue_gate(plan, grant)
        self._close_release_record(plan)

    async def _recover_venue(
        self,
        plan: PromotionPlan,
        grant: LeaseGrant,
        fills_since: datetime,
        takeover_at: datetime,
        venue: str,
    ) -> VenueRecoveryReport:
        # Counts this attempt too: an operator's retry starts a fresh child under a new id.
        attempt = len([r for r in self._steps.records if r.name == f"venue_recovery/{venue}"])
        report: VenueRecoveryReport = await workflow.execute_child_workflow(
            VENUE_RECOVERY_WORKFLOW,
            VenueRecoveryRequest(
                system=plan.system,
                venue=venue,
                account=plan.account_at(venue),
                new_epoch=grant.epoch,
                takeover_at=takeover_at,
                fills_since=fills_since,
                dr_oms_url=plan.to_oms_url,
                session_bound_reads=venue in plan.session_bound_reads,
            ),
            id=f"{workflow.info().workflow_id}/venue/{venue}/epoch-{grant.epoch}/try-{attempt}",
            task_queue=plan.task_queue,
            result_type=VenueRecoveryReport,
        )
        return report

    def _clear_to_release(self, plan: PromotionPlan, venue: str) -> bool:
        """Within tolerance counting every venue released before it, and no invalid fill."""
        report = self._venue_reports[venue]
        if any(f.kind == "invalid" for f in report.fill_findings):
            return False
        if any(f.needs_a_person for f in report.findings):
            return False
        notional = self._venue_notional(venue)
        if self._released_notional + notional > plan.discrepancy_tolerance_notional:
            return False
        self._released_notional += notional
        return True

    async def _release(self, plan: PromotionPlan, grant: LeaseGrant, venue: str) -> None:
        if self._release_record is None:
            # The whole release, first venue to last: what the RTO and older readers measure.
            self._release_record = self._steps.begin("release_trading")
        await self._gated(
            f"release_trading/{venue}",
            # Local: idempotent at the OMS for the same epoch and venues, one short call.
            lambda: self._quick(
                OmsActivities.release_trading,
                ReleaseRequest(oms_url=plan.to_oms_url, epoch=grant.epoch, venues=[venue]),
            ),
        )
        self._released.append(venue)
        rto = self._venue_rto(venue)
        if rto is not None:
            record_venue_rto(workflow.metric_meter(), plan.system, venue, rto)

    async def _venue_gate(self, plan: PromotionPlan, grant: LeaseGrant) -> None:
        """Venues held above tolerance: an operator accepts (they are released) or holds them
        reduce-only; without a decision they stay reduce-only and the desk is paged."""
        held = [v for v in plan.venues if v in self._held]
        notional = self._discrepancy_notional()
        invalid = [
            f for v in held for f in self._venue_reports[v].fill_findings if f.kind == "invalid"
        ]
        unknown = [f for v in held for f in self._venue_reports[v].findings if f.needs_a_person]
        question = (
            f"discrepancies of notional {notional} against a tolerance of "
            f"{plan.discrepancy_tolerance_notional}"
            + (f", {len(invalid)} invalid fill report(s)" if invalid else "")
            + (f", {len(unknown)} order(s) only a person can judge" if unknown else "")
            + f"; {', '.join(held)} held reduce-only"
            + (f" ({', '.join(self._released)} trading)" if self._released else "")
        )
        decision = await self._ask_decision(plan, "discrepancy_gate", question)
        if decision is not None and decision.action == "accept":
            self._held = []
            await _all(*(self._release(plan, grant, venue) for venue in held))
            return
        where = f"DR holds {', '.join(held)} reduce-only at the new epoch"
        if self._released:
            where += f"; {', '.join(self._released)} trading"
        self._outcome = DrOutcome.HELD_REDUCE_ONLY
        if decision is None:
            self._outcome_detail = (
                f"no operator decision within {plan.decision_timeout_s:g} s; {where}"
            )
            await self._notify("decision_needed", "critical", self._outcome_detail, "no-decision")
        else:
            self._outcome_detail = f"{decision.by} chose to hold: {where}"

    def _close_release_record(self, plan: PromotionPlan) -> None:
        record = self._release_record
        if record is None:
            return
        ends = [
            r.ended_at
            for r in self._steps.records
            if r.name.startswith("release_trading/") and r.status == "completed" and r.ended_at
        ]
        detail = f"released {', '.join(v for v in plan.venues if v in self._released)}"
        if self._held:
            detail += f"; held reduce-only: {', '.join(self._held)}"
        self._steps.end(record, attempts=1, detail=detail, at=max(ends, default=None))

    async def _readiness_gate(self, plan: PromotionPlan, grant: LeaseGrant, reason: str) -> None:
        """The SystemMonitor promoted while it saw DR not ready (stream or database lag beyond
        the topology's bounds). Everything is fenced and synced by now; nothing trades until an
        operator accepts what DR may lack, and abort (or no answer) leaves it all fenced."""
        decision = await self._ask_decision(
            plan,
            "readiness_gate",
            f"the monitor promoted while DR was not ready ({reason}). Accept and let DR trade, "
            "or abort (everything stays fenced)",
        )
        if decision is None or decision.action == "abort":
            who = f"{decision.by} chose to abort" if decision else "no operator decision"
            raise RunbookStop(
                DrOutcome.ABORTED,
                f"DR was not ready when the monitor promoted ({reason}); {who}. The lease stays "
                f"with {plan.to_region} at epoch {grant.epoch}: nothing trades.",
            )

    async def _ask_decision(self, plan: PromotionPlan, step: str, question: str) -> Decision | None:
        """One question to an operator, paged; None when nobody answered in time."""
        # One question at a time: venue steps and database steps run side by side, and the
        # ``decide`` update answers whichever question is open.
        async with self._operator:
            record = self._steps.begin(step)
            self._decision = None
            self._waiting_for = f"operator decision: {question}"
            meter = workflow.metric_meter()
            set_promotion_waiting_operator(meter, plan.system, OperatorGate.DECISION, True)
            await self._notify("decision_needed", "critical", self._waiting_for, f"decision-{step}")
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=timedelta(seconds=plan.decision_timeout_s),
                )
            except TimeoutError:
                self._steps.fail(record, "no decision in time")
                return None
            finally:
                self._waiting_for = None
                set_promotion_waiting_operator(meter, plan.system, OperatorGate.DECISION, False)
            decision = self._decision
            assert decision is not None
            self._steps.end(record, 1, f"{decision.action} by {decision.by}")
            return decision

    async def _quick(
        self,
        activity: MethodAsyncSingleParam[Any, A, T],
        arg: A,
        retry: RetryPolicy = CONTROL_RETRY,
        timeout: timedelta = CONTROL_CALL,  # noqa: ASYNC109 - an activity timeout
    ) -> T:
        """A short, idempotent step as a local activity, run by this worker.

        A normal activity costs a task-queue round trip and then the wait for this worker's
        next poll of its sticky queue (~33 ms a step, measured); a local one costs neither. Its
        result is recorded in the history (a marker) like any step's, a worker that dies runs
        it again (hence idempotent only), and it must be short: it holds the workflow task and
        does not heartbeat. When this run is not on the target region's queue (started
        elsewhere by hand), the step goes there as a normal activity instead: it must run from
        the side that takes over. Where this run is comes from the plan (a local activity,
        recorded): ``workflow.info().task_queue`` is the replayer's own on a replay.
        """
        assert self._plan is not None
        if self._plan.loaded_on != self._plan.task_queue:
            return await self._call(activity, arg, retry, timeout)
        return await workflow.execute_local_activity_method(
            activity, arg, start_to_close_timeout=timeout, retry_policy=retry
        )

    # --- the runbook as recorded before PER_VENUE_RELEASE (kept for those histories) -------

    async def _promote_all_venues_at_once(self, request: PromotionRequest) -> None:
        plan = await self._before_fencing(
            "plan",
            lambda: workflow.execute_activity_method(
                PlanActivities.load_promotion_plan,
                PlanRequest(system=request.system, to_region=request.to_region),
                start_to_close_timeout=CONTROL_CALL,
                heartbeat_timeout=WORKER_LOST,
                retry_policy=CONTROL_RETRY,
            ),
        )
        self._plan = plan
        if request.planned:
            await self._await_approval(plan)
            await self._deactivate_primary(plan)
        else:
            await self._confirm_primary_down(plan)

        await self._notify(
            "promotion_started",
            "warning",
            f"promoting {plan.system} to {plan.to_region} ({self._kind.value})",
            "started",
        )
        holder = f"promotion:{workflow.info().workflow_id}:{workflow.info().run_id}"
        # A lease step that fails has changed nothing (outages are retried without end).
        grant = await self._before_fencing(
            "acquire_lease",
            lambda: self._call(
                LeaseActivities.acquire_lease,
                AcquireLeaseRequest(system=plan.system, region=plan.to_region, holder=holder),
                retry=LEASE_RETRY,
            ),
        )
        self._grant, self._fenced = grant, True

        if not request.planned:
            self._fence = await self._gated(
                "fence_primary",
                lambda: self._call(
                    OmsActivities.fence_primary,
                    FenceRequest(oms_url=plan.from_oms_url, epoch=grant.epoch, best_effort=True),
                    retry=FENCE_RETRY,
                ),
            )
            await self._await_old_lease_expiry(grant, self._fence)

        self._gap = await self._gated(
            "sync_dr_state",
            lambda: self._call(
                OmsActivities.sync_dr_state,
                SyncRequest(oms_url=plan.to_oms_url, timeout_s=plan.sync_timeout_s),
                timeout=timedelta(seconds=plan.sync_timeout_s + 15),
            ),
        )
        book = await self._gated(
            "snapshot_dr_book",
            lambda: self._call(
                OmsActivities.fetch_dr_book,
                BookRequest(oms_url=plan.to_oms_url, include_orders=False),
            ),
        )
        fills_since = (book.watermark.published_at or workflow.now()) - timedelta(
            seconds=plan.fill_lookback_margin_s
        )
        await self._gated(
            "activate_dr",
            lambda: self._call(
                OmsActivities.activate_dr,
                ActivateRequest(oms_url=plan.to_oms_url, epoch=grant.epoch, mode="reduce_only"),
            ),
        )
        self._venues = await self._gated(
            "venue_recovery", lambda: self._recover_venues(plan, grant, fills_since)
        )
        self._positions = await self._gated(
            "verify_positions",
            lambda: self._call(
                PlanActivities.verify_positions,
                PositionsRequest(
                    system=plan.system, oms_url=plan.to_oms_url, fills_since=fills_since
                ),
                timeout=timedelta(seconds=60),
            ),
        )
        released = await self._discrepancy_gate(plan)
        if released:
            await self._gated(
                "release_trading",
                lambda: self._call(
                    OmsActivities.release_trading,
                    ReleaseRequest(oms_url=plan.to_oms_url, epoch=grant.epoch),
                ),
            )
        self._dns = await self._gated(
            "update_dns",
            lambda: self._call(
                DnsActivities.update_dns,
                DnsUpdateRequest(system=plan.system, active=plan.dns_active),
                timeout=timedelta(seconds=90),
            ),
        )
        if released:
            self._outcome = DrOutcome.PROMOTED
            self._outcome_detail = f"{plan.to_region} trading at epoch {grant.epoch}"

    async def _confirm_primary_down(self, plan: PromotionPlan, note: str = "") -> None:
        probes = plan.confirmation_count
        confirmation = await self._before_fencing(
            "confirm_primary_down",
            lambda: self._call(
                OmsActivities.confirm_primary_down,
                ProbeRequest(
                    oms_url=plan.from_oms_url,
                    probes=probes,
                    interval_s=plan.probe_interval_s,
                    timeout_s=plan.probe_interval_s,
                ),
                timeout=timedelta(seconds=probes * plan.probe_interval_s * 2 + 10),
            ),
            note,
        )
        self._confirmation = confirmation
        if not confirmation.down:
            raise RunbookStop(
                DrOutcome.REFUSED,
                f"the {plan.from_region} OMS is active and answering from {plan.to_region} "
                f"({confirmation.summary}); refusing an unplanned promotion. For a "
                "switchover of a healthy primary use a planned promotion.",
            )

    async def _await_approval(self, plan: PromotionPlan) -> None:
        record = self._steps.begin("approval")
        self._waiting_for = "approval by a second operator"
        meter = workflow.metric_meter()
        set_promotion_waiting_operator(meter, plan.system, OperatorGate.APPROVAL, True)
        await self._notify(
            "approval_needed",
            "warning",
            f"planned promotion of {plan.system} needs a second operator's approval",
            "approval",
        )
        try:
            await workflow.wait_condition(
                lambda: self._approval is not None,
                timeout=timedelta(seconds=plan.approval_timeout_s),
            )
        except TimeoutError:
            self._steps.fail(record, "no approval in time")
            raise RunbookStop(
                DrOutcome.ABORTED,
                f"no second operator approved within {plan.approval_timeout_s:g} s; "
                "nothing changed",
            ) from None
        finally:
            self._waiting_for = None
            set_promotion_waiting_operator(meter, plan.system, OperatorGate.APPROVAL, False)
        assert self._approval is not None
        self._steps.end(record, attempts=1, detail=f"approved by {self._approval.approver}")

    async def _deactivate_primary(self, plan: PromotionPlan) -> None:
        current = await self._before_fencing(
            "read_lease",
            lambda: self._call(LeaseActivities.read_lease, plan.system),
        )
        if current is None or current.region != plan.from_region:
            holder = f"{current.region} at epoch {current.epoch}" if current else "nobody"
            raise RunbookStop(
                DrOutcome.REFUSED,
                f"the lease of {plan.system} is held by {holder}, not {plan.from_region}: "
                "there is no active primary to switch over from",
            )
        await self._before_fencing(
            "deactivate_primary",
            lambda: self._call(
                OmsActivities.fence_primary,
                FenceRequest(oms_url=plan.from_oms_url, epoch=current.epoch, best_effort=False),
            ),
        )

    async def _await_old_lease_expiry(self, grant: LeaseGrant, fence: FenceOutcome) -> None:
        """An unconfirmed fence means the old primary may still trade until its lease expires."""
        expires = grant.previous_expires_at
        if fence.confirmed or expires is None or expires <= workflow.now():
            self._steps.skip("await_old_lease_expiry", "primary fenced or its lease expired")
            return
        wait = expires - workflow.now()
        record = self._steps.begin("await_old_lease_expiry")
        await workflow.sleep(wait)
        self._steps.end(record, attempts=1, detail=f"waited {wait.total_seconds():.2f} s")

    async def _recover_venues(
        self, plan: PromotionPlan, grant: LeaseGrant, fills_since: datetime
    ) -> list[VenueRecoveryReport]:
        takeover_at = self._steps.get("acquire_lease")
        assert takeover_at is not None and takeover_at.ended_at is not None
        # Counts this attempt too: an operator's retry starts fresh children under new ids.
        attempt = len([r for r in self._steps.records if r.name == "venue_recovery"])
        children = [
            workflow.execute_child_workflow(
                VENUE_RECOVERY_WORKFLOW,
                VenueRecoveryRequest(
                    system=plan.system,
                    venue=venue,
                    account=plan.account_at(venue),
                    new_epoch=grant.epoch,
                    takeover_at=takeover_at.started_at,
                    fills_since=fills_since,
                    dr_oms_url=plan.to_oms_url,
                    session_bound_reads=venue in plan.session_bound_reads,
                ),
                id=f"{workflow.info().workflow_id}/venue/{venue}/epoch-{grant.epoch}/try-{attempt}",
                task_queue=plan.task_queue,
                result_type=VenueRecoveryReport,
            )
            for venue in plan.venues
        ]
        return list(await asyncio.gather(*children))

    async def _discrepancy_gate(self, plan: PromotionPlan) -> bool:
        """Above tolerance, an operator decides; without a decision DR stays reduce-only."""
        notional = self._discrepancy_notional()
        invalid = [f for v in self._venues for f in v.fill_findings if f.kind == "invalid"]
        if notional <= plan.discrepancy_tolerance_notional and not invalid:
            self._steps.skip("discrepancy_gate", f"notional {notional} within tolerance")
            return True
        record = self._steps.begin("discrepancy_gate")
        self._waiting_for = (
            f"operator decision: discrepancies of notional {notional} exceed tolerance "
            f"{plan.discrepancy_tolerance_notional}"
            + (f" and {len(invalid)} invalid fill report(s)" if invalid else "")
        )
        await self._notify("decision_needed", "critical", self._waiting_for, "decision")
        meter = workflow.metric_meter()
        set_promotion_waiting_operator(meter, plan.system, OperatorGate.DECISION, True)
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=plan.decision_timeout_s),
            )
        except TimeoutError:
            self._steps.fail(record, "no decision in time; staying reduce-only")
            self._outcome = DrOutcome.HELD_REDUCE_ONLY
            self._outcome_detail = (
                f"no operator decision within {plan.decision_timeout_s:g} s; DR holds "
                "reduce-only at the new epoch"
            )
            await self._notify("decision_needed", "critical", self._outcome_detail, "no-decision")
            return False
        finally:
            self._waiting_for = None
            set_promotion_waiting_operator(meter, plan.system, OperatorGate.DECISION, False)
        assert self._decision is not None
        self._steps.end(record, 1, f"{self._decision.action} by {self._decision.by}")
        if self._decision.action == "accept":
            return True
        self._outcome = DrOutcome.HELD_REDUCE_ONLY
        self._outcome_detail = f"{self._decision.by} chose to hold DR reduce-only"
        return False

    # --- steps and failures ---------------------------------------------------------------

    async def _call(
        self,
        activity: MethodAsyncSingleParam[Any, A, T],
        arg: A,
        retry: RetryPolicy = CONTROL_RETRY,
        timeout: timedelta = CONTROL_CALL,  # noqa: ASYNC109 - an activity timeout
    ) -> T:
        """One step on the target region's queue: it must run from the side that takes over."""
        assert self._plan is not None
        return await workflow.execute_activity_method(
            activity,
            arg,
            task_queue=self._plan.task_queue,
            start_to_close_timeout=timeout,
            heartbeat_timeout=WORKER_LOST,
            retry_policy=retry,
        )

    async def _before_fencing(
        self, name: str, action: Callable[[], Awaitable[T]], detail: str = ""
    ) -> T:
        """Before the lease moves, a failed step ends the promotion: nothing was changed."""
        try:
            return await self._steps.run(name, action, detail)
        except STEP_FAILED as err:
            raise RunbookStop(
                DrOutcome.REFUSED, f"{name} failed before anything changed: {failure_message(err)}"
            ) from None

    async def _gated(self, name: str, action: Callable[[], Awaitable[T]]) -> T:
        """After the lease moved, a failed step pages and waits for retry or abort."""
        while True:
            try:
                return await self._steps.run(name, action)
            except STEP_FAILED as err:
                message = failure_message(err)
            # Steps run side by side (venues, the database): one failure is put to the
            # operator at a time, each with its own resolution.
            async with self._operator:
                resolution = await self._ask_resolution(name, message)
            if resolution.action == "abort":
                trading = (
                    f" {', '.join(self._released)} already trade at the new epoch."
                    if self._released
                    else ""
                )
                raise RunbookStop(
                    DrOutcome.ABORTED,
                    f"{name} failed ({message}); aborted by {resolution.by}. The lease stays "
                    f"with {self._grant.region if self._grant else 'its holder'}: the old "
                    f"primary remains fenced.{trading}",
                )

    async def _ask_resolution(self, name: str, message: str) -> Resolution:
        self._waiting_for = f"operator: {name} failed: {message}"
        self._resolution = None
        await self._notify(
            "promotion_failed",
            "critical",
            f"{name} failed: {message}. The system stays fenced. Resolve with "
            f"`drctl resolve {workflow.info().workflow_id} retry|abort --as NAME`.",
            f"failed-{name}-{len(self._steps.records)}",
        )
        await workflow.wait_condition(lambda: self._resolution is not None)
        self._waiting_for = None
        resolution = self._resolution
        assert resolution is not None
        return resolution

    async def _notify(
        self,
        kind: str,
        severity: str,
        summary: str,
        key: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Best effort: a broken pager must not stop a failover; failures go in the report."""
        request = self._request
        if request is None or self._plan is None:
            return
        info = workflow.info()
        alert = Alert(
            system=request.system,
            kind=kind,
            severity=severity,
            summary=summary,
            details=details or {},
            idempotency_key=f"{info.workflow_id}/{info.run_id}/{key}",
            workflow_id=info.workflow_id,
            ui_url=self._ui_link(),
        )
        try:
            await self._call(AlertActivities.notify, alert, retry=NOTIFY_RETRY)
        except ActivityError as err:
            self._alert_failures.append(f"{kind}: {failure_message(err)}")

    # --- operator actions -----------------------------------------------------------------

    @workflow.update(name="approve")
    async def approve(self, approval: Approval) -> str:
        self._approval = approval
        self._record("approval", approval.approver, "approve", approval.comment)
        return f"approved by {approval.approver}"

    @approve.validator
    def _validate_approve(self, approval: Approval) -> None:
        request = self._request
        if request is None or not request.planned:
            raise ValueError("only a planned promotion takes an approval")
        if self._approval is not None:
            raise ValueError(f"already approved by {self._approval.approver}")
        if approval.approver.casefold() == request.requested_by.casefold():
            raise ValueError(
                f"{approval.approver} requested this promotion; the approval must come from a "
                "second operator"
            )

    @workflow.update(name="decide")
    async def decide(self, decision: Decision) -> str:
        self._decision = decision
        self._record("decision", decision.by, decision.action, decision.comment)
        return f"{decision.action} by {decision.by}"

    @decide.validator
    def _validate_decide(self, decision: Decision) -> None:
        if self._waiting_for is None or not self._waiting_for.startswith("operator decision"):
            raise ValueError(f"this promotion is not waiting for a decision ({self._status()})")

    @workflow.update(name="resolve")
    async def resolve(self, resolution: Resolution) -> str:
        self._resolution = resolution
        self._record("resolution", resolution.by, resolution.action, resolution.comment)
        return f"{resolution.action} by {resolution.by}"

    @resolve.validator
    def _validate_resolve(self, resolution: Resolution) -> None:
        if self._waiting_for is None or not self._waiting_for.startswith("operator:"):
            raise ValueError(f"this promotion has no failed step to resolve ({self._status()})")

    @workflow.query(name="progress")
    def progress(self) -> PromotionProgress:
        request = self._request
        current = self._steps.current
        return PromotionProgress(
            workflow_id=workflow.info().workflow_id,
            system=request.system if request else "",
            kind=self._kind,
            outcome=self._outcome,
            current_step=current.name if current else None,
            waiting_for=self._waiting_for,
            epoch=self._grant.epoch if self._grant else None,
            steps=self._steps.records,
        )

    # --- helpers --------------------------------------------------------------------------

    @property
    def _kind(self) -> DrKind:
        return self._request.dr_kind if self._request else DrKind.INCIDENT

    def _status(self) -> str:
        current = self._steps.current
        return f"now at {current.name}" if current else f"outcome {self._outcome.value}"

    def _record(self, kind: str, by: str, action: str, comment: str) -> None:
        self._actions.append(
            RecordedAction(
                kind=kind,
                by=by,
                action=action,
                comment=comment,
                at=workflow.now(),
            )
        )

    def _set_search_attributes(self) -> None:
        if self._request is None:
            return
        upsert_dr_attributes(self._request.system, self._kind, self._outcome)

    def _ui_link(self) -> str:
        plan = self._plan
        info = workflow.info()
        base = plan.ui_url.rstrip("/") if plan else ""
        return f"{base}/namespaces/{info.namespace}/workflows/{info.workflow_id}/{info.run_id}"

    def _venue_notional(self, venue: str) -> Decimal:
        """What one venue's recovery and position check left unexplained, as notional."""
        total = sum((f.notional for f in self._venue_reports[venue].unresolved), Decimal(0))
        check = self._venue_checks.get(venue)
        if check is not None:
            total += sum((p.notional for p in check.discrepancies), Decimal(0))
        return total

    def _origin(self) -> datetime:
        """Where RTOs count from: the monitor's detection, else the promotion's start."""
        request = self._request
        detected = request.detected_at if request else None
        return detected or workflow.info().start_time

    def _venue_rto(self, venue: str) -> float | None:
        released = self._steps.get(f"release_trading/{venue}")
        if released is None or released.ended_at is None:
            return None
        return (released.ended_at - self._origin()).total_seconds()

    def _record_metrics(self, report: PromotionReport) -> None:
        """The promotion's outcome, RTO and step times on the worker's /metrics. A run that
        never released trading reports its duration in the RTO's place, under its outcome."""
        duration = (report.finished_at - self._origin()).total_seconds()
        record_promotion(
            workflow.metric_meter(),
            report.system,
            report.outcome.value,
            report.rto_s if report.rto_s is not None else duration,
            {s.name: s.duration_s for s in report.steps if s.duration_s is not None},
        )

    def _discrepancy_notional(self) -> Decimal:
        total = sum((f.notional for v in self._venues for f in v.unresolved), Decimal(0))
        if self._positions is not None:
            total += sum((p.notional for p in self._positions.discrepancies), Decimal(0))
        return total

    def _report(self) -> PromotionReport:
        request = self._request
        assert request is not None
        plan = self._plan
        info = workflow.info()
        finished = workflow.now()
        started = info.start_time
        released = self._steps.get("release_trading")
        dns = self._steps.get("update_dns")
        lease = self._steps.get("acquire_lease")
        rto_end = released.ended_at if released else None
        origin = self._origin()
        lease_to_dns = (
            (dns.ended_at - lease.started_at).total_seconds()
            if dns and lease and dns.ended_at
            else None
        )
        venue_rto = {
            venue: rto
            for venue in (plan.venues if plan else [])
            if (rto := self._venue_rto(venue)) is not None
        }
        outcome_detail = self._outcome_detail
        if self._alert_failures:
            outcome_detail += f" (alerts failed: {'; '.join(self._alert_failures)})"
        return PromotionReport(
            workflow_id=info.workflow_id,
            system=request.system,
            kind=self._kind,
            planned=request.planned,
            requested_by=request.requested_by,
            reason=request.reason,
            outcome=self._outcome,
            outcome_detail=outcome_detail,
            from_region=plan.from_region if plan else "",
            to_region=plan.to_region if plan else (request.to_region or ""),
            epoch=self._grant.epoch if self._grant else None,
            previous_epoch=(self._grant.epoch - 1) if self._grant else None,
            started_at=started,
            finished_at=finished,
            detected_at=request.detected_at,
            rto_s=(rto_end - origin).total_seconds() if rto_end else None,
            lease_to_dns_s=round(lease_to_dns, 3) if lease_to_dns is not None else None,
            steps=self._steps.records,
            confirmation=self._confirmation,
            fence=self._fence,
            replication_gap=self._gap,
            venues=self._venues,
            position_discrepancies=self._positions.discrepancies if self._positions else [],
            discrepancy_notional=self._discrepancy_notional(),
            actions=self._actions,
            dns_changed=self._dns.changed if self._dns else None,
            ui_url=self._ui_link(),
            venue_rto_s=venue_rto,
            first_venue_rto_s=min(venue_rto.values(), default=None),
            last_venue_rto_s=max(venue_rto.values(), default=None),
            venue_capabilities=plan.venue_capabilities if plan else {},
            held_venues=list(self._held),
            database=self._db,
        )


async def _all(*steps: Awaitable[None]) -> None:
    """Run steps side by side; the first to raise ends the wait (a RunbookStop ends the run)."""
    await asyncio.gather(*steps)
