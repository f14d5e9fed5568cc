"""What the fault-injection tests share: one lab per module and ways to look inside it.

Every wait here is bounded; a promotion that does not finish says where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle

from domain.promotion import PromotionProgress, PromotionReport
from domain.topology import load_topology
from drctl.lab_alerts import fetch_alerts
from lab import stack
from lab.processes import wait_until
from lab.stack import ChaosAction
from tests.lab.conftest import (
    LabRun,
    drctl_runbook,
    inject_order,
    lease_of,
    running_lab,
    venue_call,
    weights_of,
)
from workflows.data_converter import DATA_CONVERTER


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab(tmp_path_factory) as run:
        yield run


PROMOTION_ID = "dr-promotion/lab"


def chaos(lab: LabRun, action: ChaosAction, target: str, name: str | None = None) -> str:
    """`drctl lab chaos`, in this process: the faults land without an interpreter start-up."""
    return stack.chaos(lab.root, action, target, name, ms=0)


async def temporal(lab: LabRun) -> Client:
    topology = load_topology(lab.root / "topology.toml")
    return await Client.connect(topology.temporal.address, data_converter=DATA_CONVERTER)


async def wait_for_steady_primary(lab: LabRun) -> int:
    """Primary trading and holding the lease, DR mirroring it; returns the primary's epoch."""

    def settled() -> bool:
        report = stack.status(lab.root)
        return report.healthy and bool(report.replication and report.replication.in_sync_within_1s)

    assert wait_until(settled, 60, poll_s=0.2), stack.status(lab.root).model_dump_json()
    assert wait_until(
        lambda: lab.get("oms-primary", "/health")["trading_state"] == "trading", 60, poll_s=0.2
    ), lab.get("oms-primary", "/health")
    epoch, region = await lease_of(lab)
    assert region == "primary"
    return epoch


def place_ghost(lab: LabRun, venue: str, epoch: int) -> str:
    """An order the primary sent that never reached DR: the primary's last-second order."""
    return inject_order(lab, venue, f"E{epoch}-ghost-{uuid.uuid4().hex[:10]}", epoch)


def start_failover(lab: LabRun) -> None:
    result = drctl_runbook(lab, "failover", "--system", "lab", "--as", "oncall")
    assert result.returncode == 0, result.stdout + result.stderr


async def promotion_result(client: Client, timeout_s: float) -> PromotionReport:
    handle: WorkflowHandle[Any, PromotionReport] = client.get_workflow_handle(
        PROMOTION_ID, result_type=PromotionReport
    )
    try:
        return await asyncio.wait_for(handle.result(), timeout_s)
    except TimeoutError:
        raise AssertionError(
            f"promotion not finished after {timeout_s} s; {await where_it_stands(client)}"
        ) from None


async def where_it_stands(client: Client, workflow_id: str = PROMOTION_ID) -> str:
    """What the server knows of a run that does not finish: no worker needed to answer."""
    handle = client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    pending = [
        f"{p.activity_type.name} attempt {p.attempt} state {p.state} "
        f"last failure {p.last_failure.message!r}"
        for p in description.raw_description.pending_activities
    ]
    events = (await handle.fetch_history()).events
    tail = [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in events[-12:]]
    waiting = await waiting_for(handle)
    return (
        f"status {description.status}; waiting for {waiting}; pending activities {pending}; "
        f"last events {tail}"
    )


async def waiting_for(handle: WorkflowHandle[Any, Any]) -> str:
    """What a running promotion says it waits for (an operator's decision names its reason)."""
    try:
        progress = await asyncio.wait_for(
            handle.query("progress", result_type=PromotionProgress), 10
        )
    except Exception as error:  # a query needs a worker; a stuck run may have none
        return f"unknown (progress query failed: {error})"
    steps = [f"{s.name}:{s.status}:{s.detail}" for s in progress.steps[-6:]]
    return f"{progress.waiting_for!r} at {progress.current_step}; last steps {steps}"


def after_activity(activity_type: str, nth: int = 1) -> Callable[[Sequence[HistoryEvent]], bool]:
    """True once the ``nth`` attempt-chain of ``activity_type`` has completed, as a normal
    activity or as a local one (whose completion is a marker in the history)."""

    def reached(events: Sequence[HistoryEvent]) -> bool:
        scheduled = {
            e.event_id
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
        }
        completed = [
            e
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
        ]
        local = [e for e in events if local_activity_type(e) == activity_type]
        return len(completed) + len(local) >= nth

    return reached


LOCAL_ACTIVITY_MARKER = "core_local_activity"


def local_activity_type(event: HistoryEvent) -> str | None:
    """The activity type of a local activity's completion marker; None for any other event."""
    if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
        return None
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return None
    data = json.loads(marker.details["data"].payloads[0].data)
    return str(data.get("activity_type")) if isinstance(data, dict) else None


def venue_children(state: int, count: int) -> Callable[[Sequence[HistoryEvent]], bool]:
    """True once ``count`` VenueRecovery children have reached ``state`` (started, completed)."""

    def reached(events: Sequence[HistoryEvent]) -> bool:
        return sum(1 for e in events if e.event_type == state) >= count

    return reached


async def wait_for_history(
    client: Client,
    reached: Callable[[Sequence[HistoryEvent]], bool],
    timeout_s: float,
    workflow_id: str = PROMOTION_ID,
) -> None:
    """Follow the run's history as the server appends to it until ``reached`` holds."""
    events: list[HistoryEvent] = []

    async def follow() -> None:
        handle = client.get_workflow_handle(workflow_id)
        async for event in handle.fetch_history_events(wait_new_event=True):
            events.append(event)
            if reached(events):
                return
        raise AssertionError(f"{workflow_id} closed first; last event {events[-1]}")

    await asyncio.wait_for(follow(), timeout_s)


async def event_types(client: Client, workflow_id: str = PROMOTION_ID) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return [EventType.Name(e.event_type) for e in history.events]


def worker_log(lab: LabRun) -> str:
    return Path(lab.root / "logs" / "worker.log").read_text(errors="replace")


def dns_weights(lab: LabRun) -> dict[str, int]:
    """The weights Route 53 (the lab's emulator, over HTTP) holds for the OMS record now."""
    return weights_of(lab, "oms.lab.example.")


# --- a promotion interrupted by a crash: every effect exactly once ------------------------------

DNS_SUBMITTED = "submitted as change"


def alerts_of_run(lab: LabRun, run_id: str) -> list[dict[str, object]]:
    return [
        a["alert"]
        for a in fetch_alerts(lab.root)["alerts"]
        if f"/{run_id}/" in str(a.get("idempotency_key", ""))
    ]


async def assert_promoted_exactly_once(
    lab: LabRun,
    client: Client,
    report: PromotionReport,
    previous_epoch: int,
    ghosts: dict[str, str],
    dns_submissions_before: int,
) -> None:
    """What a crash in the middle of a promotion must not change: one epoch increment, each
    ghost cancelled once at its venue, one effective DNS change, one final alert."""
    assert report.outcome.value == "promoted", report.outcome_detail
    # The epoch moved once: the lease, the report and DR agree on previous + 1.
    assert (report.previous_epoch, report.epoch) == (previous_epoch, previous_epoch + 1)
    assert await lease_of(lab) == (previous_epoch + 1, "dr")
    assert lab.get("oms-dr", "/health")["epoch"] == previous_epoch + 1
    # Each ghost, and everything else the promotion cancelled, changed state once at its venue.
    for recovery in report.venues:
        cancelled = set(recovery.cancelled)
        if recovery.venue in ghosts:
            assert ghosts[recovery.venue] in cancelled
        if cancelled:
            audit = venue_call(
                lab, recovery.venue, "GET", "/admin/cancels",
                params={"client_order_id": sorted(cancelled)},
            )["orders"]  # fmt: skip
            assert {cid: c["state_changing"] for cid, c in audit.items()} == dict.fromkeys(
                cancelled, 1
            )
    # One effective DNS change: the weights were submitted once (a retry finds them in place).
    assert worker_log(lab).count(DNS_SUBMITTED) - dns_submissions_before == 1
    assert dns_weights(lab) == {"primary": 0, "dr": 100}
    # One final alert for this run, however many times its delivery was attempted.
    run_id = (await client.get_workflow_handle(PROMOTION_ID).describe()).run_id
    finals = [a for a in alerts_of_run(lab, run_id) if a["kind"] == "promotion_completed"]
    assert len(finals) == 1, finals
    names = [s.name for s in report.steps if s.status == "completed"]
    for step in ("acquire_lease", "venue_recovery", "release_trading", "update_dns"):
        assert names.count(step) == 1, names
