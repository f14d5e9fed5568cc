"""A promotion the SystemMonitor started while DR was not ready stops at its gate before any
venue trades: accepted, it goes on; aborted, or unanswered, everything stays fenced.

Scripted activities (tests/unit/workflows/fakes.py) on the time-skipping server.
"""

from __future__ import annotations

import asyncio
import uuid

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.promotion import Decision, DrOutcome, PromotionReport, PromotionRequest
from tests.unit.workflows.fakes import FakeLab
from workflows.promotion import PromotionWorkflow
from workflows.venue_recovery import VenueRecoveryWorkflow

QUEUE = "region-dr"
NOT_READY = "dr not ready since 10:01:00: stream 5000 event(s) behind (maximum 1000)"


async def promote(
    env: WorkflowEnvironment, lab: FakeLab, decision: Decision | None
) -> PromotionReport:
    worker = Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[PromotionWorkflow, VenueRecoveryWorkflow],
        activities=lab.activities(),
    )
    async with worker:
        handle: WorkflowHandle[
            PromotionWorkflow, PromotionReport
        ] = await env.client.start_workflow(
            "Promotion",
            PromotionRequest(
                system="lab", requested_by="health-monitor", dr_not_ready_reason=NOT_READY
            ),
            id=f"dr-promotion/{uuid.uuid4().hex[:8]}",
            task_queue=QUEUE,
            result_type=PromotionReport,
        )
        if decision is not None:
            async with asyncio.timeout(20):
                while "DR was not ready" not in (  # noqa: ASYNC110 - a query is not an event
                    (await handle.query(PromotionWorkflow.progress)).waiting_for or ""
                ):
                    await asyncio.sleep(0.05)  # poll
            assert "release_trading" not in lab.calls
            await handle.execute_update(PromotionWorkflow.decide, decision)
        return await handle.result()


async def test_an_operator_who_accepts_lets_dr_trade(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    report = await promote(env, lab, Decision(action="accept", by="carol"))
    assert report.outcome is DrOutcome.PROMOTED, report.outcome_detail
    gate = next(s for s in report.steps if s.name == "readiness_gate")
    assert gate.status == "completed" and "carol" in gate.detail
    assert lab.calls.index("sync_dr_state") < lab.calls.index("release_trading")


async def test_abort_leaves_everything_fenced_and_nothing_trades(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    report = await promote(env, lab, Decision(action="abort", by="erin"))
    assert report.outcome is DrOutcome.ABORTED
    assert "DR was not ready" in report.outcome_detail and "erin" in report.outcome_detail
    assert "acquire_lease" in lab.calls
    assert "release_trading" not in lab.calls


async def test_no_answer_in_time_is_an_abort(env: WorkflowEnvironment) -> None:
    lab = FakeLab()
    report = await promote(env, lab, None)
    assert report.outcome is DrOutcome.ABORTED
    assert "no operator decision" in report.outcome_detail
    assert "release_trading" not in lab.calls
