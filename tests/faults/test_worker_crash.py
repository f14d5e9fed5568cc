"""The worker running a promotion is SIGKILLed at step boundaries and started again.

One promotion, killed at every boundary of the unplanned promotion in turn: the restarted worker
runs on to the next boundary and is killed there, fourteen times. Each kill is sent the moment
the server records the step's completion (the history is streamed, not polled), so it lands
while the worker is deciding or starting the next step. Whatever it interrupts, the promotion
must finish and every effect must happen exactly once: one epoch increment, each ghost
cancelled once at its venue, one effective DNS change, one final alert.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus

from lab.topology_gen import VENUES
from tests.faults.conftest import (
    DNS_SUBMITTED,
    PROMOTION_ID,
    after_activity,
    assert_promoted_exactly_once,
    chaos,
    place_ghost,
    promotion_result,
    start_failover,
    temporal,
    venue_children,
    wait_for_steady_primary,
    worker_log,
)
from tests.lab.conftest import LabRun, running_lab

GHOST_VENUES = ("alpha", "gamma")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    # A 1 s venue reconnect cooldown instead of 3 s: the cooldown is proven elsewhere
    # (tests/lab/test_promotion_unplanned.py), here it would only lengthen every case.
    with running_lab(tmp_path_factory, "--venue-cooldown-s", "1") as run:
        yield run


# Each boundary of the unplanned promotion, in order: the kill follows the named event.
BOUNDARIES: dict[str, Callable[[Sequence[HistoryEvent]], bool]] = {
    "after-plan": after_activity("load_promotion_plan"),
    "after-confirm_primary_down": after_activity("confirm_primary_down"),
    "after-notify_started": after_activity("notify"),
    "after-acquire_lease": after_activity("acquire_lease"),
    "after-fence_primary": after_activity("fence_primary"),
    "after-promote_db_replica": after_activity("promote_db_replica"),
    "after-sync_dr_state": after_activity("sync_dr_state"),
    "after-snapshot_dr_book": after_activity("fetch_dr_book"),
    "after-activate_dr": after_activity("activate_dr"),
    "venue_recovery-started": venue_children(
        EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED, len(VENUES)
    ),
    "after-venue_recovery": venue_children(
        EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED, len(VENUES)
    ),
    "after-verify_positions": after_activity("verify_positions"),
    "after-release_trading": after_activity("release_trading"),
    "after-update_dns": after_activity("update_dns"),
}


class Crash:
    def __init__(self, boundary: str, event: str, running: bool) -> None:
        self.boundary = boundary
        self.last_event = event
        self.running_when_killed = running

    def __repr__(self) -> str:
        return f"kill {self.boundary} after {self.last_event} (running: {self.running_when_killed})"


async def kill_worker_at_each(lab: LabRun, client: Client, boundaries: list[str]) -> list[Crash]:
    """SIGKILL the worker at each boundary in turn, starting it again after each kill."""
    crashes: list[Crash] = []
    handle = client.get_workflow_handle(PROMOTION_ID)
    events: list[HistoryEvent] = []
    pending = list(boundaries)

    async def follow() -> None:
        async for event in handle.fetch_history_events(wait_new_event=True):
            events.append(event)
            if not BOUNDARIES[pending[0]](events):
                continue
            chaos(lab, "kill", "worker")  # SIGKILL, then waits until it is gone
            description = await handle.describe()
            running = description.status == WorkflowExecutionStatus.RUNNING
            crashes.append(Crash(pending.pop(0), EventType.Name(event.event_type), running))
            chaos(lab, "heal", "worker")
            if not pending:
                return
        raise AssertionError(f"the promotion closed before {pending[0]}: {crashes}")

    await asyncio.wait_for(follow(), 180)
    return crashes


async def test_a_worker_killed_at_every_step_boundary_changes_nothing_twice(lab: LabRun) -> None:
    epoch = await wait_for_steady_primary(lab)
    ghosts = {venue: place_ghost(lab, venue, epoch) for venue in GHOST_VENUES}
    chaos(lab, "kill", "primary")
    dns_before = worker_log(lab).count(DNS_SUBMITTED)
    client = await temporal(lab)

    start_failover(lab)
    crashes = await kill_worker_at_each(lab, client, list(BOUNDARIES))
    assert [c.boundary for c in crashes] == list(BOUNDARIES)
    assert all(c.running_when_killed for c in crashes), f"a kill came too late: {crashes}"

    report = await promotion_result(client, 120)
    await assert_promoted_exactly_once(lab, client, report, epoch, ghosts, dns_before)
    # The DR replica is primary at the new epoch. A kill right after its promotion is in the
    # history must not promote it again: the recorded attempt stands, and it did the promotion.
    assert report.database is not None and report.database.promotion is not None
    promotion = report.database.promotion
    assert promotion.promoted and promotion.epoch == epoch + 1, promotion
    promote = next(s for s in report.steps if s.name == "promote_db_replica")
    assert (promote.status, promote.attempts) == ("completed", 1), promote
    assert not promotion.already_primary, promotion
