"""Promotion decisions with scripted activities, on the time-skipping test server.

The gate timeouts are minutes of workflow time; the time-skipping server makes them instant.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from domain.promotion import (
    DR_SEARCH_ATTRIBUTES,
    Decision,
    DrOutcome,
    MonitorEvidence,
    PromotionProgress,
    PromotionReport,
    PromotionRequest,
    Resolution,
    VantageVerdict,
)
from lab.processes import find_binary
from tests.unit.workflows.fakes import T0, FakeLab, order
from workflows.promotion import PromotionWorkflow
from workflows.venue_recovery import VenueRecoveryWorkflow

QUEUE = "region-dr"


async def start(
    client: Client, lab: FakeLab, request: PromotionRequest
) -> tuple[Worker, WorkflowHandle[PromotionWorkflow, PromotionReport]]:
    worker = Worker(
        client,
        task_queue=QUEUE,
        workflows=[PromotionWorkflow, VenueRecoveryWorkflow],
        activities=lab.activities(),
    )
    handle: WorkflowHandle[PromotionWorkflow, PromotionReport] = await client.start_workflow(
        "Promotion",
        request,
        id=f"dr-promotion/{uuid.uuid4().hex[:8]}",
        task_queue=QUEUE,
        result_type=PromotionReport,
    )
    return worker, handle


async def progress_of(
    handle: WorkflowHandle[PromotionWorkflow, PromotionReport],
) -> PromotionProgress:
    return await handle.query(PromotionWorkflow.progress)


async def wait_for(handle: WorkflowHandle[PromotionWorkflow, PromotionReport], prefix: str) -> None:
    async with asyncio.timeout(20):
        while not ((await progress_of(handle)).waiting_for or "").startswith(prefix):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # poll


async def test_a_clean_incident_promotes_and_cancels_a_ghost(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.venue_orders = [order("E1-a"), order("E1-ghost")]
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert report.venues[0].cancelled == ["E1-ghost"]
    assert lab.calls.index("acquire_lease") < lab.calls.index("activate_dr")
    assert lab.calls.index("activate_dr") < lab.calls.index("release_trading")
    assert lab.calls.index("release_trading") < lab.calls.index("update_dns")
    assert [a.kind for a in lab.alerts] == ["promotion_started", "promotion_completed"]


async def test_an_order_the_venue_no_longer_lists_is_confirmed_dead_without_a_person(
    env: WorkflowEnvironment,
) -> None:
    # The old primary cancelled it at the venue and died before publishing the cancel.
    lab = FakeLab()
    lab.dr_orders = [order("E1-a"), order("E1-cancelled-unheard")]
    lab.venue_orders = [order("E1-a")]
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED, report.outcome_detail
    (venue,) = report.venues
    assert [f.kind.value for f in venue.findings] == ["missing_at_venue"]
    assert venue.cancelled == ["E1-cancelled-unheard"] and venue.unresolved == []
    assert "release_trading" in lab.calls
    assert [a.kind for a in lab.alerts] == ["promotion_started", "promotion_completed"]


async def test_a_healthy_primary_refuses_an_unplanned_promotion(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.primary_down = False
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.REFUSED
    assert "refusing an unplanned promotion" in report.outcome_detail
    assert "acquire_lease" not in lab.calls


async def test_an_unknown_system_is_refused_before_anything_changes(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    worker, handle = await start(env.client, lab, PromotionRequest(system="nope", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.REFUSED
    assert "no system named 'nope'" in report.outcome_detail
    assert lab.calls == ["load_promotion_plan"]


async def test_without_a_decision_dr_holds_reduce_only_and_pages(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.dr_orders = [order("E1-a", qty=5)]
    lab.venue_orders = [order("E1-a", qty=9)]  # drift: the venue disagrees on quantity
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()  # time skips through the decision timeout
    assert report.outcome is DrOutcome.HELD_REDUCE_ONLY
    assert "no operator decision within 60 s" in report.outcome_detail
    assert "release_trading" not in lab.calls
    assert "update_dns" in lab.calls  # DR is the active side, reduce-only
    assert [a.kind for a in lab.alerts].count("decision_needed") == 2
    assert lab.alerts[-1].severity == "critical"


async def test_an_accepted_discrepancy_releases_trading(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.decision_timeout_s = 3600
    lab.dr_orders = [order("E1-a", qty=5)]
    lab.venue_orders = [order("E1-a", qty=9)]
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator decision")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("approve", {"approver": "b"})
        assert "only a planned promotion takes an approval" in str(refused.value.cause)
        await handle.execute_update(PromotionWorkflow.decide, Decision(action="accept", by="carol"))
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert [(a.kind, a.by, a.action) for a in report.actions] == [("decision", "carol", "accept")]


async def test_a_failed_step_waits_for_the_operator_and_retries(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.fail_release_times = 1
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator: release_trading/alpha failed")
        progress = await progress_of(handle)
        assert progress.outcome is DrOutcome.RUNNING and progress.epoch == 2
        assert "OMS refused /control/release" in (progress.waiting_for or "")
        await handle.execute_update(PromotionWorkflow.resolve, Resolution(action="retry", by="dan"))
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert lab.calls.count("release_trading") == 2
    failed = [s for s in report.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["release_trading/alpha"]
    assert any(a.kind == "promotion_failed" and a.severity == "critical" for a in lab.alerts)


async def test_an_aborted_step_ends_fenced_never_silently(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.fail_release_times = 5
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator: release_trading/alpha failed")
        await handle.execute_update(PromotionWorkflow.resolve, Resolution(action="abort", by="dan"))
        report = await handle.result()
    assert report.outcome is DrOutcome.ABORTED
    assert "aborted by dan" in report.outcome_detail
    assert "old primary remains fenced" in report.outcome_detail
    assert "update_dns" not in lab.calls
    assert lab.alerts[-1].kind == "promotion_failed"


async def test_ui_input_with_a_misspelt_field_fails_with_the_field_named(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    worker = Worker(
        env.client, task_queue=QUEUE, workflows=[PromotionWorkflow], activities=lab.activities()
    )
    handle = await env.client.start_workflow(
        "Promotion",
        {"system": "lab", "requestd_by": "typo"},
        id=f"dr-promotion/{uuid.uuid4().hex[:8]}",
        task_queue=QUEUE,
    )
    async with worker:
        with pytest.raises(WorkflowFailureError) as caught:
            await asyncio.wait_for(handle.result(), 20)
    assert isinstance(caught.value.cause, ApplicationError)
    assert caught.value.cause.message == (
        "invalid PromotionRequest: requested_by: Field required; "
        "requestd_by: Extra inputs are not permitted"
    )
    assert lab.calls == []


def evidence(down: int, quorum: int = 2) -> MonitorEvidence:
    verdicts = [
        VantageVerdict(
            vantage=f"v{i}",
            region="dr",
            verdict="down" if i < down else "healthy",
            at=T0,
            detail="connection refused" if i < down else "",
        )
        for i in range(3)
    ]
    return MonitorEvidence(
        monitor_workflow_id="dr-monitor/lab", decided_at=T0, quorum=quorum, verdicts=verdicts
    )


async def test_the_monitors_quorum_is_the_confirmation_without_probing_again(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    request = PromotionRequest(system="lab", requested_by="monitor", evidence=evidence(2))
    worker, handle = await start(env.client, lab, request)
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert "confirm_primary_down" not in lab.calls
    assert report.confirmation is not None and report.confirmation.down
    assert report.confirmation.evidence == request.evidence
    assert [o.detail for o in report.confirmation.observations][:2] == [
        "v0 (dr): down: connection refused", "v1 (dr): down: connection refused",
    ]  # fmt: skip
    step = next(s for s in report.steps if s.name == "confirm_primary_down")
    assert step.status == "completed"
    assert step.detail.startswith("monitor dr-monitor/lab decided at 10:02:00: 2 of 3 vantage")


async def test_evidence_short_of_its_quorum_is_set_aside_and_the_primary_probed(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    request = PromotionRequest(system="lab", requested_by="monitor", evidence=evidence(1))
    worker, handle = await start(env.client, lab, request)
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert lab.calls.count("confirm_primary_down") == 1
    step = next(s for s in report.steps if s.name == "confirm_primary_down")
    assert step.detail == (
        "monitor evidence set aside (1 vantage point(s) saw the primary down, the quorum is "
        "2); probed from DR"
    )
    assert report.confirmation is not None and report.confirmation.evidence is None


async def test_each_venue_is_released_as_soon_as_its_own_recovery_is_done(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    lab.venues = ["alpha", "beta", "gamma"]
    lab.cooldowns = {"gamma": 30.0}  # gamma's first logon: "retry after 30 s"
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert lab.releases[-1] == ["gamma"]
    assert sorted(v for r in lab.releases[:2] for v in r or []) == ["alpha", "beta"]
    rto = report.venue_rto_s
    assert set(rto) == {"alpha", "beta", "gamma"}
    assert rto["gamma"] - max(rto["alpha"], rto["beta"]) >= 29
    assert (report.first_venue_rto_s, report.last_venue_rto_s) == (
        min(rto.values()), rto["gamma"],
    )  # fmt: skip
    assert report.rto_s == rto["gamma"]  # every venue trades: the RTO is the last venue's
    # DNS moves once every venue trades, after the last release.
    assert lab.calls.index("update_dns") > max(
        i for i, c in enumerate(lab.calls) if c == "release_trading"
    )
    names = [s.name for s in report.steps if s.status == "completed"]
    for venue in lab.venues:
        assert names.index(f"verify_positions/{venue}") < names.index(f"release_trading/{venue}")
    release = next(s for s in report.steps if s.name == "release_trading")
    gamma = next(s for s in report.steps if s.name == "release_trading/gamma")
    assert release.ended_at == gamma.ended_at
    # Venues side by side and local activities: the run must replay exactly (on the
    # replayer's own task queue, so the local-or-not decision must come from the history).
    replayer = Replayer(
        workflows=[PromotionWorkflow, VenueRecoveryWorkflow],
        data_converter=pydantic_data_converter,
    )
    await replayer.replay_workflow(await handle.fetch_history())


async def test_a_venue_above_tolerance_is_held_while_the_others_trade(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    lab.venues = ["alpha", "beta"]
    lab.dr_orders = [order("E1-a"), order("E1-b", venue="beta", qty=5)]
    lab.venue_orders = [order("E1-a"), order("E1-b", venue="beta", qty=9)]  # beta drifts
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator decision: discrepancies")
        waiting = (await progress_of(handle)).waiting_for or ""
        assert "beta held reduce-only (alpha trading)" in waiting
        assert lab.releases == [["alpha"]]
        report = await handle.result()  # time skips through the decision timeout
    assert report.outcome is DrOutcome.HELD_REDUCE_ONLY
    assert report.outcome_detail == (
        "no operator decision within 60 s; DR holds beta reduce-only at the new epoch; "
        "alpha trading"
    )
    assert report.held_venues == ["beta"] and set(report.venue_rto_s) == {"alpha"}
    assert lab.releases == [["alpha"]]
    assert "update_dns" in lab.calls


async def test_an_accepted_held_venue_is_released_after_the_decision(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    lab.decision_timeout_s = 3600
    lab.venues = ["alpha", "beta"]
    lab.dr_orders = [order("E1-a"), order("E1-b", venue="beta", qty=5)]
    lab.venue_orders = [order("E1-a"), order("E1-b", venue="beta", qty=9)]
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator decision")
        await handle.execute_update(PromotionWorkflow.decide, Decision(action="accept", by="carol"))
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert lab.releases == [["alpha"], ["beta"]]
    assert report.held_venues == []


async def test_a_system_without_a_database_skips_its_steps_and_says_so(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    skipped = {s.name: s.detail for s in report.steps if s.status == "skipped"}
    for step in ("check_db_replica", "fence_db_primary", "promote_db_replica"):
        assert skipped[step] == "no database configured"
    assert report.database is None
    assert not {"check_db_replica", "promote_db_replica"} & set(lab.calls)


async def test_the_database_is_checked_fenced_and_promoted_before_dr_syncs(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    lab.has_database = True
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    calls = lab.calls
    order_ = ["acquire_lease", "check_db_replica", "fence_db_primary", "promote_db_replica"]
    assert [calls.index(c) for c in order_] == sorted(calls.index(c) for c in order_)
    assert calls.index("promote_db_replica") < calls.index("sync_dr_state")
    assert report.database is not None and report.database.promotion is not None
    assert report.database.lag.bytes == 0 and report.database.beyond_maximum is None
    assert any("database:" in line for line in report.summary_lines())


async def test_a_replica_behind_its_maximum_waits_and_abort_leaves_everything_fenced(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    lab.has_database = True
    lab.decision_timeout_s = 3600
    lab.db_lag_bytes = 5000
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator decision: the DR database replica is behind")
        await handle.execute_update(PromotionWorkflow.decide, Decision(action="abort", by="erin"))
        report = await handle.result()
    assert report.outcome is DrOutcome.ABORTED
    assert "erin chose to abort" in report.outcome_detail
    assert "fence_db_primary" in lab.calls
    assert not {"promote_db_replica", "sync_dr_state", "activate_dr"} & set(lab.calls)
    assert [(a.kind, a.by, a.action) for a in report.actions] == [("decision", "erin", "abort")]


async def test_an_unreachable_replica_is_retried_then_pages_and_is_never_promoted_blind(
    env: WorkflowEnvironment,
) -> None:
    lab = FakeLab()
    lab.has_database = True
    lab.db_unreachable = True
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator: check_db_replica failed")
        assert lab.calls.count("check_db_replica") == 5  # DB_RETRY's attempts, then the page
        # The question is open before its page is out (the page is the next activity).
        async with asyncio.timeout(20):
            while not any(a.kind == "promotion_failed" for a in lab.alerts):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # poll
        await handle.execute_update(PromotionWorkflow.resolve, Resolution(action="abort", by="dan"))
        report = await handle.result()
    assert report.outcome is DrOutcome.ABORTED
    assert "promote_db_replica" not in lab.calls and "activate_dr" not in lab.calls


async def test_the_promotion_reports_its_epoch_per_venue_rto_and_outcome_as_metrics() -> None:
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes=dict.fromkeys(
                    DR_SEARCH_ATTRIBUTES, IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                ),
            )
        )
        lab = FakeLab()
        lab.venues = ["alpha", "beta"]
        worker = Worker(
            env.client,
            task_queue=QUEUE,
            workflows=[PromotionWorkflow, VenueRecoveryWorkflow],
            activities=lab.activities(),
        )
        async with worker:
            report = await env.client.execute_workflow(
                "Promotion",
                PromotionRequest(system="lab", requested_by="a"),
                id=f"dr-promotion/{uuid.uuid4().hex[:8]}",
                task_queue=QUEUE,
                result_type=PromotionReport,
            )
    finally:
        await env.shutdown()
    # Our labels, beside those the SDK adds (namespace, task queue, workflow type).
    seen: dict[str, list[tuple[dict[str, object], object]]] = {}
    for update in buffer.retrieve_updates():
        seen.setdefault(update.metric.name, []).append((dict(update.attributes), update.value))

    def values(name: str, **labels: str) -> list[object]:
        return [v for got, v in seen.get(name, []) if labels.items() <= got.items()]

    assert values("failover_lease_epoch", system="lab") == [2]
    assert values("failover_promotions", system="lab", outcome="promoted") == [1]
    assert values("failover_promotion_rto_seconds", outcome="promoted") == [report.rto_s]
    for venue in ("alpha", "beta"):
        assert values("failover_venue_rto_seconds", venue=venue) == [report.venue_rto_s[venue]]
    steps = {str(got["step"]) for got, _ in seen["failover_promotion_step_duration_seconds"]}
    assert {"acquire_lease", "release_trading/alpha", "update_dns"} <= steps
