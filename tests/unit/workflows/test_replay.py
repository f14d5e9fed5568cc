"""Recorded histories of real lab runs replay against today's workflow code.

A change that makes a recorded run take a different path fails here, before it can break
promotions that are in flight during a deployment. Re-record with DRCTL_RECORD_HISTORIES (see
tests/lab/conftest.py) only when a change is meant to be incompatible, and version it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.registry import ALL_WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_of_every_workflow_are_recorded() -> None:
    names = [p.name for p in HISTORIES]
    assert "unplanned--dr-promotion%2Flab.json" in names
    assert "planned--dr-promotion%2Flab.json" in names
    # Per-venue release (patch promotion-per-venue-release-local-steps-database); the two
    # above are from before it and replay on the path they were recorded on.
    assert "per-venue-release--dr-promotion%2Flab.json" in names
    assert "per-venue-unplanned--dr-promotion%2Flab.json" in names
    assert "per-venue-planned--dr-promotion%2Flab.json" in names
    assert sum("%2Fvenue%2F" in n for n in names) >= 4
    # VenueRecovery since it cancels (to confirm dead) what the DR book holds and the venue
    # does not list (patch venue-recovery-confirms-missing-at-venue-dead).
    assert (
        "confirms-missing-at-venue--dr-promotion%2Flab%2Fvenue%2Falpha%2Fepoch-2%2Ftry-1.json"
        in names
    )
    assert "monitor--dr-monitor%2Flab.json" in names  # the HealthMonitor, before the split
    assert "system-monitor--dr-monitor%2Flab.json" in names
    assert "feed-monitor--md-monitor%2Flab-md.json" in names
    for scenario in ("drill-kill", "drill-planned"):
        assert f"{scenario}--dr-drill%2Flab.json" in names
        assert f"{scenario}--dr-failback%2Flab.json" in names
        # The failback since it re-seeds the old primary's database (workflows/failback.py).
        assert f"failback-reseed-{scenario.removeprefix('drill-')}--dr-failback%2Flab.json" in names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_a_recorded_history_replays(path: Path) -> None:
    history = load_history(path)
    replayer = Replayer(
        workflows=ALL_WORKFLOWS,
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def load_history(path: Path) -> WorkflowHistory:
    # The file name carries the workflow id: child ids derive from it, so it must be exact.
    workflow_id = unquote(path.stem.split("--", 1)[1])
    return WorkflowHistory.from_json(workflow_id, path.read_text())
