"""The live progress view: steps as they start and end, waits with their countdown, Ctrl-C."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.workflow.v1 import PendingActivityInfo

from domain.promotion import StepRecord
from drctl.progress import (
    LineView,
    RunSteps,
    Snapshot,
    StepDiff,
    TableView,
    Wait,
    activity_waits,
    follow,
    scope_of,
    waiting_hint,
    watch,
)

T0 = datetime(2025, 3, 3, 10, 2, 3, 412000, tzinfo=UTC)
KEY = ("dr-promotion/lab", "run-1")
CLOCK = r"\d\d:\d\d:\d\d\.\d\d\d"


def step(name: str, start_s: float, end_s: float | None = None, **fields: object) -> StepRecord:
    record = StepRecord(name=name, started_at=T0 + timedelta(seconds=start_s), **fields)
    if end_s is not None:
        record.ended_at = T0 + timedelta(seconds=end_s)
        record.status = fields.get("status", "completed")  # type: ignore[assignment]
        record.attempts = record.attempts or 1
    return record


def run(*steps: StepRecord, scope: str = "") -> RunSteps:
    return RunSteps(KEY, scope, list(steps))


def test_a_step_reads_started_then_completed_and_never_twice() -> None:
    diff = StepDiff()
    first = diff.events(run(step("plan", 0, 0.05), step("acquire_lease", 0.1)))
    assert [(e.step, e.status) for e in first] == [
        ("plan", "started"),
        ("plan", "completed"),
        ("acquire_lease", "started"),
    ]
    again = diff.events(run(step("plan", 0, 0.05), step("acquire_lease", 0.1)))
    assert again == []
    done = diff.events(run(step("plan", 0, 0.05), step("acquire_lease", 0.1, 0.22)))
    assert [(e.step, e.status) for e in done] == [("acquire_lease", "completed")]
    assert done[0].duration_s == pytest.approx(0.12)


def test_a_step_run_again_after_a_failure_is_a_new_step() -> None:
    diff = StepDiff()
    failed = step("venue_recovery", 0, 1, status="failed", detail="venue down")
    diff.events(run(failed))
    retried = diff.events(run(failed, step("venue_recovery", 5)))
    assert [(e.step, e.status) for e in retried] == [("venue_recovery", "started")]


def test_lines_are_one_per_event_in_order_and_flushed() -> None:
    out = io.StringIO()
    view = LineView(out)
    view.show(Snapshot(runs=[run(step("plan", 0, 0.05), step("acquire_lease", 0.1))]), T0)
    view.show(Snapshot(runs=[run(step("plan", 0, 0.05), step("acquire_lease", 0.1, 0.22))]), T0)
    lines = out.getvalue().splitlines()
    assert [re.sub(CLOCK, "T", line) for line in lines] == [
        "T started   plan",
        "T completed plan 0.05 s",
        "T started   acquire_lease",
        "T completed acquire_lease 0.12 s",
    ]


def test_a_cooldown_is_shown_once_with_its_seconds_left_and_again_on_the_next_refusal() -> None:
    out = io.StringIO()
    view = LineView(out)
    cooldown = Wait("", "venue gamma reconnect cooldown", until=T0 + timedelta(seconds=12))
    view.show(Snapshot(waits=[cooldown]), T0)
    view.show(Snapshot(waits=[cooldown]), T0 + timedelta(seconds=1))
    refused_again = Wait("", cooldown.what, until=T0 + timedelta(seconds=20))
    view.show(Snapshot(waits=[refused_again]), T0 + timedelta(seconds=13))
    lines = [re.sub(CLOCK, "T", line) for line in out.getvalue().splitlines()]
    assert lines == [
        "T waiting: venue gamma reconnect cooldown, 12 s left",
        "T waiting: venue gamma reconnect cooldown, 7 s left",
    ]


def test_an_approval_wait_says_what_to_type() -> None:
    wait = Wait(
        "",
        "approval by a second operator",
        hint=waiting_hint("dr-promotion/lab", "approval by a second operator"),
    )
    assert wait.text(T0) == (
        "approval by a second operator (drctl approve dr-promotion/lab --as NAME)"
    )
    assert waiting_hint("x", "operator decision: notional 5 exceeds tolerance 1").startswith(
        "drctl decide x accept|abort"
    )
    assert waiting_hint("x", "operator: sync_dr_state failed: boom").startswith(
        "drctl resolve x retry|abort"
    )


def _pending(attempt: int, error_type: str, message: str, next_in_s: float) -> PendingActivityInfo:
    at = Timestamp()
    at.FromDatetime(T0 + timedelta(seconds=next_in_s))
    info = PendingActivityInfo(
        attempt=attempt,
        last_failure=Failure(
            message=message,
            application_failure_info=ApplicationFailureInfo(type=error_type),
        ),
        next_attempt_schedule_time=at,
    )
    info.activity_type.name = "connect_session"
    return info


def test_a_pending_attempt_refused_for_a_cooldown_reads_as_the_venues_cooldown() -> None:
    cooling = _pending(2, "ReconnectCooldown", "gamma: reconnect cooldown, retry after 2.90 s", 2.9)
    (wait,) = activity_waits("venue gamma", [cooling])
    assert wait.until == T0 + timedelta(seconds=2.9)
    assert wait.text(T0) == "venue gamma reconnect cooldown, 3 s left"


def test_another_failed_attempt_reads_as_a_retry_with_its_reason() -> None:
    failing = _pending(3, "VenueError", "gamma: connection refused", 1.5)
    (wait,) = activity_waits("venue gamma", [failing])
    assert wait.text(T0) == (
        "venue gamma: connect_session to be retried (attempt 3): gamma: connection refused, "
        "2 s left"
    )
    first_attempt = PendingActivityInfo(attempt=1)
    assert activity_waits("venue gamma", [first_attempt]) == []


def test_child_runs_are_named_for_what_they_recover() -> None:
    assert scope_of("VenueRecovery", "dr-promotion/lab/venue/gamma/epoch-2/try-1") == "venue gamma"
    assert scope_of("Promotion", "dr-promotion/lab") == "promotion"


def test_the_terminal_view_scrolls_finished_steps_and_redraws_its_footer_in_place() -> None:
    out = io.StringIO()
    view = TableView(out)
    view.show(Snapshot(runs=[run(step("plan", 0, 0.05), step("acquire_lease", 0.1))]), T0)
    first = out.getvalue()
    assert "plan" in first and "completed" in first
    assert re.search(r"acquire_lease\s+running", first)
    view.show(
        Snapshot(runs=[run(step("plan", 0, 0.05), step("acquire_lease", 0.1, 0.22))]),
        T0 + timedelta(seconds=1),
    )
    second = out.getvalue()[len(first) :]
    # The one-line footer (acquire_lease running) is erased, then the row is final.
    assert second.startswith("\x1b[1F\x1b[J")
    assert re.search(r"acquire_lease\s+completed\s+0\.12 s", second)
    assert "running" not in second


class ScriptedWatcher:
    """Stands in for RunWatcher: returns its snapshots in turn; it has no way to act on a run."""

    def __init__(self, *snapshots: Snapshot | BaseException) -> None:
        self.snapshots = list(snapshots)
        self.polls = 0

    async def poll(self) -> Snapshot:
        self.polls += 1
        item = self.snapshots.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def test_the_watch_ends_when_the_run_closes() -> None:
    out = io.StringIO()
    watcher = ScriptedWatcher(
        Snapshot(runs=[run(step("plan", 0))]),
        Snapshot(runs=[run(step("plan", 0, 0.05))], closed=True, status="completed"),
    )
    last = asyncio.run(watch(watcher, LineView(out), poll_s=0))  # type: ignore[arg-type]
    assert last.closed and watcher.polls == 2
    assert "completed plan" in out.getvalue()


def test_ctrl_c_stops_the_watch_and_says_how_to_watch_again() -> None:
    out = io.StringIO()
    watcher = ScriptedWatcher(Snapshot(runs=[run(step("plan", 0))]), asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(
            follow(None, "dr-promotion/lab", None, out, poll_s=0, watcher=watcher)  # type: ignore[arg-type]
        )
    assert out.getvalue().endswith(
        "stopped watching; dr-promotion/lab keeps running. Watch it again with "
        "`drctl watch dr-promotion/lab`\n"
    )
