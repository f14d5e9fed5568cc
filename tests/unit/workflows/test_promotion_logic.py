"""Promotion decisions with scripted activities, on the time-skipping test server.

The gate timeouts are minutes of workflow time; the time-skipping server makes them instant.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.promotion import (
    Decision,
    DrOutcome,
    PromotionProgress,
    PromotionReport,
    PromotionRequest,
    Resolution,
)
from tests.unit.workflows.fakes import FakeLab, order
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
        await wait_for(handle, "operator: release_trading failed")
        progress = await progress_of(handle)
        assert progress.outcome is DrOutcome.RUNNING and progress.epoch == 2
        assert "OMS refused /control/release" in (progress.waiting_for or "")
        await handle.execute_update(PromotionWorkflow.resolve, Resolution(action="retry", by="dan"))
        report = await handle.result()
    assert report.outcome is DrOutcome.PROMOTED
    assert lab.calls.count("release_trading") == 2
    failed = [s for s in report.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["release_trading"]
    assert any(a.kind == "promotion_failed" and a.severity == "critical" for a in lab.alerts)


async def test_an_aborted_step_ends_fenced_never_silently(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    lab.fail_release_times = 5
    worker, handle = await start(env.client, lab, PromotionRequest(system="lab", requested_by="a"))
    async with worker:
        await wait_for(handle, "operator: release_trading failed")
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
