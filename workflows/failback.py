"""Failback: return a system to its primary region once the primary is back.

Hold the health monitor -> check the lease is with DR -> resync the old primary from the stream
(it rebuilds its book from scratch and mirrors) -> re-seed the old primary's database as a
replica of the new primary (pg_rewind, else a fresh copy; see ``DatabasePort.reseed_replica``)
and wait until it streams within the system's maximum lag -> a planned promotion back, with its
approval, lease, database steps, venue recovery and DNS -> the monitor watches the primary again,
its ack given and its hold released. A system without ``[systems.database]`` skips the database
steps, and its report says so.

Nothing moves before the planned promotion does, so a failback that stops early (the old primary
unreachable, the lease elsewhere) leaves DR trading as it was.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.database import (
        DATABASE_CONFIG_ERROR,
        DATABASE_MANUAL_STEP,
        DatabaseActivities,
        DbCatchUpRequest,
        DbReseedRequest,
    )
    from activities.oms import OmsActivities, SyncRequest
    from activities.plan import PlanActivities, PlanRequest
    from domain.database import DbReseed, ReplicaLag
    from domain.drill import FAILBACK_WORKFLOW, FailbackReport, FailbackRequest, RunProgress
    from domain.promotion import (
        DrOutcome,
        PromotionPlan,
        PromotionReport,
        PromotionRequest,
        ReplicationGap,
        region_task_queue,
    )
    from workflows.runbook_control import lease_holder, monitor_action, planned_promotion
    from workflows.steps import (
        SERVICE_RETRY,
        RunbookStop,
        StepLog,
        failure_message,
        parse_input,
        upsert_dr_attributes,
    )

CALL = timedelta(seconds=15)

# Histories recorded before the failback re-seeded the database replay without those steps.
RESEEDS_DATABASE = "failback-reseeds-the-database"
# After the promotion back the DR site's database is a promoted primary nobody writes to: left
# so, the next failover would find it "already primary" and hand DR a stale database.
RESEEDS_DR_DATABASE = "failback-reseeds-the-dr-database"
# A fresh pg_basebackup of a large database takes a while; the worker's heartbeat says it lives.
RESEED_TIMEOUT = timedelta(minutes=30)
# Retrying cannot fix a wrong configuration, or steps only a person can take.
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=15),
    maximum_attempts=5,
    non_retryable_error_types=[DATABASE_CONFIG_ERROR, DATABASE_MANUAL_STEP],
)


@workflow.defn(name=FAILBACK_WORKFLOW)
class FailbackWorkflow:
    def __init__(self) -> None:
        self._steps = StepLog()
        self._request: FailbackRequest | None = None
        self._plan: PromotionPlan | None = None
        self._outcome = DrOutcome.RUNNING
        self._detail = "in progress"
        self._resync: ReplicationGap | None = None
        self._db_reseed: DbReseed | None = None
        self._db_lag: ReplicaLag | None = None
        self._promotion: PromotionReport | None = None
        self._monitor_following: str | None = None
        self._paused_monitor = False

    @workflow.run
    async def run(self, raw: object = None) -> FailbackReport:
        request = parse_input(FailbackRequest, raw)
        self._request = request
        self._set_search_attributes()
        try:
            await self._fail_back(request)
        except RunbookStop as stop:
            self._outcome, self._detail = stop.outcome, stop.detail
        finally:
            await self._release_monitor(request)
        self._set_search_attributes()
        plan = self._plan
        return FailbackReport(
            workflow_id=workflow.info().workflow_id,
            system=request.system,
            from_region=plan.from_region if plan else "",
            to_region=plan.to_region if plan else "",
            outcome=self._outcome,
            outcome_detail=self._detail,
            started_at=workflow.info().start_time,
            finished_at=workflow.now(),
            steps=self._steps.records,
            resync=self._resync,
            db_reseed=self._db_reseed,
            db_lag=self._db_lag,
            promotion=self._promotion,
            monitor_following=self._monitor_following,
        )

    async def _fail_back(self, request: FailbackRequest) -> None:
        plan = await self._step(
            "plan",
            lambda: workflow.execute_activity_method(
                PlanActivities.load_promotion_plan,
                PlanRequest(system=request.system, to_primary=True),
                start_to_close_timeout=CALL,
                retry_policy=SERVICE_RETRY,
            ),
        )
        self._plan = plan
        lease, holder = await self._step("read_lease", lambda: lease_holder(plan.system))
        if lease is None or lease.region != plan.from_region:
            raise RunbookStop(
                DrOutcome.REFUSED,
                f"nothing to fail back: the lease of {plan.system} is held by {holder}, "
                f"not {plan.from_region}",
            )
        held = await self._step(
            "hold_monitor",
            lambda: monitor_action(
                plan.system, "pause", self._identity, "failback moves the active side"
            ),
        )
        self._paused_monitor = held.applied
        self._resync = await self._step(
            "resync_old_primary",
            lambda: workflow.execute_activity_method(
                OmsActivities.sync_dr_state,
                SyncRequest(oms_url=plan.to_oms_url, timeout_s=plan.sync_timeout_s),
                start_to_close_timeout=timedelta(seconds=plan.sync_timeout_s + 15),
                retry_policy=SERVICE_RETRY,
            ),
        )
        if workflow.patched(RESEEDS_DATABASE):
            await self._reseed_database(plan)
        self._promotion = await self._step(
            "promotion",
            lambda: planned_promotion(
                PromotionRequest(
                    system=plan.system,
                    requested_by=request.requested_by,
                    planned=True,
                    reason=request.reason or f"failback to {plan.to_region}",
                    kind=request.kind,
                    to_region=plan.to_region,
                ),
                request.approver,
                plan.approval_timeout_s,
            ),
        )
        self._outcome = self._promotion.outcome
        self._detail = self._promotion.outcome_detail
        if self._promotion.outcome is not DrOutcome.PROMOTED:
            return
        await self._resync_standby(plan)
        if workflow.patched(RESEEDS_DR_DATABASE):
            await self._reseed_database(
                plan, direction="failover", region=plan.from_region, name="dr_db"
            )
        followed = await self._step(
            "retarget_monitor",
            lambda: monitor_action(
                plan.system, "retarget", self._identity, "failback", region=plan.to_region
            ),
        )
        self._monitor_following = followed.status.active_region if followed.status else None

    async def _reseed_database(
        self,
        plan: PromotionPlan,
        direction: Literal["failover", "failback"] = "failback",
        region: str | None = None,
        name: str = "old_primary_db",
    ) -> None:
        """Before the promotion back: the old primary's database becomes a replica of the new
        primary and catches up, so the promotion back promotes a database that has everything
        DR wrote. After it (``direction="failover"``, the DR region): the DR site's database
        becomes a replica again, ready for the next failover. Each runs on the region whose
        server it re-seeds: pg_rewind writes that server's data directory."""
        region = region or plan.to_region
        queue = region_task_queue(region)
        request = DbReseedRequest(system=plan.system, direction=direction, region=region)
        reseed = await self._step(
            f"reseed_{name}",
            lambda: workflow.execute_activity_method(
                DatabaseActivities.reseed_old_primary,
                request,
                task_queue=queue,
                start_to_close_timeout=RESEED_TIMEOUT,
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            ),
        )
        if direction == "failback":
            self._db_reseed = reseed
        if reseed.method == "no_database":
            self._steps.records[-1].status = "skipped"
            self._steps.records[-1].detail = reseed.detail
            return
        self._steps.records[-1].detail = reseed.detail
        check = await self._step(
            "db_replica_caught_up" if direction == "failback" else f"{name}_caught_up",
            lambda: workflow.execute_activity_method(
                DatabaseActivities.await_db_caught_up,
                DbCatchUpRequest(
                    system=plan.system, direction=direction, timeout_s=plan.sync_timeout_s
                ),
                task_queue=queue,
                start_to_close_timeout=timedelta(seconds=plan.sync_timeout_s + 30),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            ),
        )
        if direction == "failback":
            self._db_lag = check.lag

    async def _resync_standby(self, plan: PromotionPlan) -> None:
        """DR was deactivated by the promotion back: make it a mirroring standby again, or the
        next failover would start from a stale book. The failback itself already succeeded, so
        a failure here is reported, not fatal."""
        try:
            await self._steps.run(
                "resync_dr_standby",
                lambda: workflow.execute_activity_method(
                    OmsActivities.sync_dr_state,
                    SyncRequest(oms_url=plan.from_oms_url, timeout_s=plan.sync_timeout_s),
                    start_to_close_timeout=timedelta(seconds=plan.sync_timeout_s + 15),
                    retry_policy=SERVICE_RETRY,
                ),
            )
        except ActivityError as err:
            self._detail += f"; {plan.from_region} is not a standby again: {failure_message(err)}"

    async def _release_monitor(self, request: FailbackRequest) -> None:
        """Leave the monitor as a person would: acked (this failback ends the episode) and
        resumed if this run paused it. Best effort: the failback itself is already done."""
        if self._plan is None:
            return
        system = self._plan.system
        try:
            status = await monitor_action(system, "status", self._identity)
            if status.status is not None and status.status.needs_ack:
                await self._step(
                    "ack_monitor",
                    lambda: monitor_action(system, "ack", self._identity, "failback complete"),
                )
            if self._paused_monitor:
                await self._step(
                    "resume_monitor",
                    lambda: monitor_action(system, "resume", self._identity, "failback ended"),
                )
        except (ActivityError, RunbookStop) as err:
            workflow.logger.warning("could not release the monitor of %s: %s", system, err)

    @property
    def _identity(self) -> str:
        request = self._request
        assert request is not None
        return request.requested_by

    async def _step(self, name: str, action: Any) -> Any:
        try:
            return await self._steps.run(name, action)
        except WorkflowAlreadyStartedError:
            raise RunbookStop(
                DrOutcome.REFUSED, f"{name}: a promotion of this system is already running"
            ) from None
        except (ActivityError, ChildWorkflowError) as err:
            consequence = (
                "see the promotion's own history"
                if name == "promotion"
                else "the lease has not moved back and DR keeps trading; fix the cause and "
                "run the failback again"
            )
            raise RunbookStop(
                DrOutcome.ABORTED, f"{name} failed: {failure_message(err)}; {consequence}"
            ) from None

    @workflow.query(name="progress")
    def progress(self) -> RunProgress:
        current = self._steps.current
        return RunProgress(
            workflow_id=workflow.info().workflow_id,
            system=self._request.system if self._request else "",
            outcome=self._outcome,
            current_step=current.name if current else None,
            waiting_for=None,
            steps=self._steps.records,
        )

    def _set_search_attributes(self) -> None:
        if self._request is None:
            return
        upsert_dr_attributes(self._request.system, self._request.kind, self._outcome)
