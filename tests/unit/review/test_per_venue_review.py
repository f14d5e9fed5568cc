"""A per-venue promotion read back for review: its local-activity steps and side-by-side venues.

The recorded run (tests/unit/workflows/histories) ran its short steps as local activities, whose
only trace is a marker, and its venues and database steps side by side.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory

from domain.review import EntryKind, EntryStatus, RunReview
from drctl.history_reader import read_history

HISTORY = (
    Path(__file__).parents[1] / "workflows" / "histories"
    / "per-venue-unplanned--dr-promotion%2Flab.json"
)  # fmt: skip
VENUES = ("alpha", "beta", "gamma")


def review() -> RunReview:
    return read_history(WorkflowHistory.from_json("dr-promotion/lab", HISTORY.read_text()))


def test_local_activity_steps_are_in_the_timeline_with_their_times() -> None:
    activities = [e for e in review().timeline if e.kind is EntryKind.ACTIVITY]
    names = [e.name for e in activities]
    for local in ("load_promotion_plan", "fence_primary", "fetch_dr_book", "activate_dr"):
        assert names.count(local) == 1, names
    assert names.count("release_trading") == len(VENUES)
    for entry in activities:
        assert entry.status is EntryStatus.COMPLETED and entry.attempts == 1, entry
        assert entry.duration_s is not None and entry.duration_s >= 0, entry


def test_each_entry_is_labelled_with_its_own_step_even_when_steps_overlap() -> None:
    timeline = review().timeline
    steps = {(e.name, e.step) for e in timeline if e.kind is EntryKind.ACTIVITY}
    assert ("check_db_replica", "check_db_replica") in steps
    assert ("fence_db_primary", "fence_db_primary") in steps
    assert ("fetch_dr_book", "snapshot_dr_book") in steps
    # Activities of the same type started at the same instant for different venues are told
    # apart by their step's kind only (the timeline does not read their inputs).
    for name in ("verify_positions", "release_trading"):
        labels = {step for activity, step in steps if activity == name}
        assert labels and all((step or "").startswith(f"{name}/") for step in labels), labels
    children = {e.workflow_id: e.step for e in timeline if e.kind is EntryKind.CHILD_WORKFLOW}
    assert children == {
        f"dr-promotion/lab/venue/{v}/epoch-2/try-1": f"venue_recovery/{v}" for v in VENUES
    }
