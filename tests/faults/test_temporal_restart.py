"""The Temporal server itself is SIGKILLed in the middle of a promotion, and started again.

The lab's dev server keeps its state in a file (``--db-filename``), as a production cluster keeps
it in its database: whatever it had recorded when it died is still there when it comes back. The
kill lands while the venue recoveries are under way, the part of a promotion with the most
effects in flight (cancels at three venues, sessions, confirming reads). The worker keeps
running and reconnects; activities that finished while the server was down report into nothing
and are retried. The promotion must still finish with every effect exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from lab import stack
from lab.topology_gen import VENUES
from tests.faults.conftest import (
    DNS_SUBMITTED,
    PROMOTION_ID,
    assert_promoted_exactly_once,
    chaos,
    place_ghost,
    promotion_result,
    start_failover,
    temporal,
    venue_children,
    wait_for_history,
    wait_for_steady_primary,
    worker_log,
)
from tests.lab.conftest import LabRun, running_lab

GHOST_VENUES = ("alpha", "gamma")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    # A 1 s venue reconnect cooldown, as in the worker-crash suite: the cooldown is not the
    # subject here.
    with running_lab(tmp_path_factory, "--venue-cooldown-s", "1") as run:
        yield run


async def test_the_temporal_server_killed_during_venue_recovery_changes_nothing_twice(
    lab: LabRun,
) -> None:
    epoch = await wait_for_steady_primary(lab)
    ghosts = {venue: place_ghost(lab, venue, epoch) for venue in GHOST_VENUES}
    chaos(lab, "kill", "primary")
    dns_before = worker_log(lab).count(DNS_SUBMITTED)
    client = await temporal(lab)

    start_failover(lab)
    await wait_for_history(
        client,
        venue_children(EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED, len(VENUES)),
        90,
    )
    description = await client.get_workflow_handle(PROMOTION_ID).describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    killed_pid = stack.require_state(lab.root).components["temporal"].pid
    chaos(lab, "kill", "temporal")  # SIGKILL, then waits until it is gone
    chaos(lab, "heal", "temporal")  # the same binary and database file, ready when it answers
    assert stack.require_state(lab.root).components["temporal"].pid != killed_pid

    client = await temporal(lab)
    report = await promotion_result(client, 180)
    await assert_promoted_exactly_once(lab, client, report, epoch, ghosts, dns_before)
    # The run that finished is the one that was interrupted: the server lost nothing of it.
    assert (await client.get_workflow_handle(PROMOTION_ID).describe()).run_id == (
        description.run_id
    )
