"""The failback re-seeds the old primary's database before the planned promotion back.

Scripted activities and a stand-in Promotion on the time-skipping server: the order of the
steps, where the re-seed runs, a system without a database, and a re-seed only a person can do.
The re-seed itself against real PostgreSQL is tests/integration/test_postgres_reseed.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.database import DbCatchUpRequest, DbReplicaCheck, DbReseedRequest
from activities.oms import SyncRequest
from activities.plan import PlanRequest
from activities.runbook_control import (
    ApprovePromotionRequest,
    MonitorControlRequest,
    MonitorControlResult,
)
from domain.database import DbReseed, ReplicaLag, manual_reseed_steps
from domain.drill import FailbackReport
from domain.lease import LeaseRecord
from domain.promotion import DrOutcome, PromotionPlan, ReplicationGap
from tests.unit.workflows.scripted_runbooks import T0, ScriptedPromotion
from workflows.failback import FailbackWorkflow

QUEUES = ("region-dr", "region-primary")


class World:
    def __init__(self, reseed: DbReseed | Exception) -> None:
        self.reseed = reseed
        # (activity, task queue it ran on), in order.
        self.calls: list[tuple[str, str]] = []

    def _called(self, name: str) -> None:
        self.calls.append((name, activity.info().task_queue))

    def activities(self) -> list[Any]:
        world = self

        @activity.defn(name="load_promotion_plan")
        async def load_promotion_plan(request: PlanRequest) -> PromotionPlan:
            world._called("load_promotion_plan")
            return PromotionPlan(
                system="lab", production=False, from_region="dr", to_region="primary",
                from_oms_url="http://dr", to_oms_url="http://primary", venues=["alpha"],
                discrepancy_tolerance_notional=0, fill_lookback_margin_s=5,
                approval_timeout_s=600, decision_timeout_s=60, sync_timeout_s=10,
                confirmation_count=3, probe_interval_s=1, lease_ttl_s=3, ui_url="",
                dns_active="primary",
            )  # fmt: skip

        @activity.defn(name="read_lease")
        async def read_lease(system: str) -> LeaseRecord:
            world._called("read_lease")
            return LeaseRecord(
                system="lab", region="dr", epoch=2, holder="oms", renewed_at=T0, ttl_s=3
            )

        @activity.defn(name="monitor_control")
        async def monitor_control(request: MonitorControlRequest) -> MonitorControlResult:
            world._called(f"monitor_control:{request.action}")
            return MonitorControlResult(running=False, applied=False, detail="", status=None)

        @activity.defn(name="sync_dr_state")
        async def sync_dr_state(request: SyncRequest) -> ReplicationGap:
            world._called("sync_dr_state")
            return ReplicationGap(
                stream_last_seq=10, applied_before=0, applied_after=10, lag_before_s=None
            )

        @activity.defn(name="reseed_old_primary")
        async def reseed_old_primary(request: DbReseedRequest) -> DbReseed:
            world._called(f"reseed_old_primary:{request.direction}:{request.region}")
            if isinstance(world.reseed, Exception):
                raise world.reseed
            return world.reseed

        @activity.defn(name="await_db_caught_up")
        async def await_db_caught_up(request: DbCatchUpRequest) -> DbReplicaCheck:
            world._called(f"await_db_caught_up:{request.direction}")
            lag = ReplicaLag(
                bytes=0, seconds=0, replica_in_recovery=True, primary_reachable=True,
                streaming=True,
            )  # fmt: skip
            return DbReplicaCheck(lag=lag, max_lag_bytes=1, max_lag_s=1, beyond_maximum=None)

        @activity.defn(name="approve_promotion")
        async def approve_promotion(request: ApprovePromotionRequest) -> str:
            world._called("approve_promotion")
            return "approved"

        return [
            load_promotion_plan, read_lease, monitor_control, sync_dr_state,
            reseed_old_primary, await_db_caught_up, approve_promotion,
        ]  # fmt: skip


async def fail_back(env: WorkflowEnvironment, world: World) -> FailbackReport:
    async with contextlib.AsyncExitStack() as stack:
        for queue in QUEUES:
            await stack.enter_async_context(
                Worker(
                    env.client,
                    task_queue=queue,
                    workflows=[FailbackWorkflow, ScriptedPromotion],
                    activities=world.activities(),
                )
            )
        async with asyncio.timeout(60):
            return await env.client.execute_workflow(
                "Failback",
                {"system": "lab", "requested_by": "alice", "approver": "bob"},
                id=f"dr-failback/{uuid.uuid4().hex[:8]}",
                task_queue="region-dr",
                result_type=FailbackReport,
            )


def names(world: World) -> list[str]:
    return [name for name, _ in world.calls]


async def test_the_old_primary_is_reseeded_and_caught_up_before_the_promotion_back(
    env: WorkflowEnvironment,
) -> None:
    world = World(DbReseed(method="pg_rewind", detail="rewound"))
    report = await fail_back(env, world)
    assert report.outcome is DrOutcome.PROMOTED, report.outcome_detail
    order = names(world)
    reseed = order.index("reseed_old_primary:failback:primary")
    assert order.index("sync_dr_state") < reseed
    assert order.index("await_db_caught_up:failback") == reseed + 1
    assert order.index("approve_promotion") > reseed + 1
    # pg_rewind writes the old primary's data directory: it runs on that region's worker.
    assert dict(world.calls)["reseed_old_primary:failback:primary"] == "region-primary"
    assert report.db_reseed is not None and report.db_reseed.method == "pg_rewind"
    assert report.db_lag is not None and report.db_lag.streaming is True
    steps = {s.name: s for s in report.steps}
    assert steps["reseed_old_primary_db"].status == "completed"
    assert steps["db_replica_caught_up"].status == "completed"
    assert any("re-seeded" in line for line in report.summary_lines())


async def test_a_system_without_a_database_skips_the_reseed_and_says_why(
    env: WorkflowEnvironment,
) -> None:
    world = World(DbReseed(method="no_database", detail="system 'lab' has no [systems.database]"))
    report = await fail_back(env, world)
    assert report.outcome is DrOutcome.PROMOTED
    assert "await_db_caught_up:failback" not in names(world)
    skipped = next(s for s in report.steps if s.name == "reseed_old_primary_db")
    assert skipped.status == "skipped" and "no [systems.database]" in skipped.detail


async def test_a_reseed_only_a_person_can_do_stops_before_anything_moves(
    env: WorkflowEnvironment,
) -> None:
    steps = manual_reseed_steps("LAB_PRIMARY_DSN")
    world = World(ApplicationError(steps, type="DatabaseManualStep", non_retryable=True))
    report = await fail_back(env, world)
    assert report.outcome is DrOutcome.ABORTED
    assert "re-seed the old primary by hand" in report.outcome_detail
    assert "DR keeps trading" in report.outcome_detail
    assert report.promotion is None
    assert "approve_promotion" not in names(world)
