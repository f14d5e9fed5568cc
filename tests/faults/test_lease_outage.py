"""The lease store (NATS) is down when a promotion reaches its lease step.

Without the lease there is no promotion: the workflow must keep retrying the lease, leave DR
exactly as it was, and complete once the store is back.
"""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from domain.promotion import PromotionProgress
from lab.processes import wait_until
from tests.faults.conftest import (
    PROMOTION_ID,
    chaos,
    event_types,
    lease_of,
    promotion_result,
    start_failover,
    temporal,
    wait_for_steady_primary,
    where_it_stands,
)
from tests.lab.conftest import LabRun, drctl_runbook

AFTER_LEASE = ("fence_primary", "sync_dr_state", "activate_dr", "release_trading", "update_dns")


async def test_a_promotion_waits_for_the_lease_store_and_never_promotes_without_it(
    lab: LabRun,
) -> None:
    epoch = await wait_for_steady_primary(lab)
    client = await temporal(lab)
    chaos(lab, "kill", "nats")
    # Unable to renew, the primary stops trading by itself within its lease TTL.
    assert wait_until(
        lambda: lab.get("oms-primary", "/health")["trading_state"] == "fenced", 30, poll_s=0.2
    ), lab.get("oms-primary", "/health")

    start_failover(lab)
    handle = client.get_workflow_handle(PROMOTION_ID)

    async def lease_attempts() -> int:
        pending = (await handle.describe()).raw_description.pending_activities
        return max(
            (p.attempt for p in pending if p.activity_type.name == "acquire_lease"), default=0
        )

    attempts = 0
    for _ in range(300):  # bounded: 300 polls of ~0.1 s
        attempts = await lease_attempts()
        if attempts >= 4:
            break
        await asyncio.sleep(0.1)  # poll
    assert attempts >= 4, await where_it_stands(client)

    # Still waiting on the lease: nothing after it was scheduled and DR has not moved.
    scheduled = await _scheduled_activities(client)
    assert not set(AFTER_LEASE) & set(scheduled), scheduled
    dr = lab.get("oms-dr", "/health")
    assert (dr["role"], dr["trading_state"]) == ("standby", "standby"), dr

    chaos(lab, "heal", "nats")
    # The primary traded for up to one TTL without being able to replicate (the stream was on
    # the same NATS). What it did then shows up as discrepancies; above tolerance a person
    # decides, which is the runbook working as designed, not the outage leaking through.
    if await decision_requested(client):
        decided = drctl_runbook(lab, "decide", PROMOTION_ID, "accept", "--as", "bob")
        assert decided.returncode == 0, decided.stdout + decided.stderr
    report = await promotion_result(client, 120)
    assert report.outcome.value == "promoted", report.outcome_detail
    assert (report.previous_epoch, report.epoch) == (epoch, epoch + 1)
    assert await lease_of(lab) == (epoch + 1, "dr")
    lease_step = next(s for s in report.steps if s.name == "acquire_lease")
    assert lease_step.attempts >= attempts
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED" in await event_types(client)


async def decision_requested(client: Client) -> bool:
    """Wait until the run either finishes or asks for a decision; True for the latter."""
    handle = client.get_workflow_handle(PROMOTION_ID)
    for _ in range(600):  # bounded: 600 polls of ~0.2 s
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return False
        progress = await handle.query("progress", result_type=PromotionProgress)
        if "operator decision" in (progress.waiting_for or ""):
            assert progress.waiting_for and "discrepancies" in progress.waiting_for
            return True
        await asyncio.sleep(0.2)  # poll
    raise AssertionError(f"neither finished nor asked: {await where_it_stands(client)}")


async def _scheduled_activities(client: Client) -> list[str]:
    history = await client.get_workflow_handle(PROMOTION_ID).fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
