"""A planned switchover: two operators, a graceful primary, no second promotion meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from lab.processes import wait_until
from lab.topology_gen import VENUES
from tests.lab.conftest import LabRun, drctl_runbook, replay_and_record, running_lab, venue_call

WORKFLOW_ID = "dr-promotion/lab"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    """A lab with a planned promotion requested by alice, waiting for its approval."""
    with running_lab(tmp_path_factory) as lab:
        started = drctl_runbook(
            lab, "failover", "--system", "lab", "--planned", "--as", "alice",
            "--reason", "quarterly switchover",
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: _status(lab).get("waiting_for") is not None, 30)
        yield lab


def _status(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "status", "--system", "lab", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


def test_a_planned_promotion_waits_for_a_second_operator(planned: LabRun) -> None:
    status = _status(planned)
    assert status["state"] == "running"
    assert status["waiting_for"] == "approval by a second operator"
    # Nothing has moved yet: the primary still trades at epoch 1.
    assert planned.get("oms-primary", "/health")["trading_state"] == "trading"


def test_a_second_failover_while_one_runs_is_refused_naming_the_running_one(
    planned: LabRun,
) -> None:
    result = drctl_runbook(planned, "failover", "--system", "lab", "--as", "bob")
    assert result.returncode == 1
    assert "a promotion of lab is already in progress: workflow dr-promotion/lab" in result.stderr
    assert "drctl status --system lab" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_approval_by_the_requester_is_refused(planned: LabRun) -> None:
    result = drctl_runbook(planned, "approve", WORKFLOW_ID, "--as", "alice")
    assert result.returncode == 1
    assert (
        "approve refused: alice requested this promotion; the approval must come from a "
        "second operator"
    ) in result.stderr
    assert _status(planned)["waiting_for"] == "approval by a second operator"


def test_approval_by_another_operator_proceeds_to_a_graceful_switchover(planned: LabRun) -> None:
    counters_before = {v: venue_call(planned, v, "GET", "/admin/counters") for v in VENUES}
    result = drctl_runbook(planned, "approve", WORKFLOW_ID, "--as", "bob", "--comment", "ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "approved by bob"
    assert wait_until(lambda: _status(planned)["state"] == "completed", 90, poll_s=0.5)
    status = _status(planned)
    assert status["outcome"] == "promoted"
    steps = {s["name"]: s for s in status["steps"]}
    assert steps["approval"]["detail"] == "approved by bob"
    assert steps["deactivate_primary"]["status"] == "completed"
    assert "confirm_primary_down" not in steps
    # The primary logged out cleanly, so no venue imposed a reconnect cooldown.
    for venue in VENUES:
        after = venue_call(planned, venue, "GET", "/admin/counters")
        before = counters_before[venue]
        assert after["connects_refused_cooldown"] == before["connects_refused_cooldown"]
    primary = planned.get("oms-primary", "/health")
    assert primary["trading_state"] == "fenced"
    dr = planned.get("oms-dr", "/health")
    assert (dr["trading_state"], dr["epoch"]) == ("trading", 2)


def test_the_planned_history_replays_deterministically(planned: LabRun) -> None:
    assert wait_until(lambda: _status(planned)["state"] == "completed", 90, poll_s=0.5)
    ids = [WORKFLOW_ID, "dr-promotion/lab/venue/alpha/epoch-2/try-1"]
    assert (
        asyncio.run(replay_and_record(planned.root / "topology.toml", ids, "per-venue-planned"))
        == 2
    )
