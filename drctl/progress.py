"""Live progress of a runbook: each step as it starts and ends, and what the run waits for.

Sources, all read-only (watching never changes a run, so stopping the watch cannot stop it):
- a run's steps and what it waits for (an approval, a decision, an operator after a failure):
  its ``progress`` query (PromotionProgress / RunProgress, both decoded as ``RunProgress``), and
  once it has closed, the ``steps`` of its result;
- the runs it drives: its pending child workflows (a promotion's VenueRecovery per venue, a
  drill's failback, a failback's promotion) from ``describe()``, and for a drill the promotion
  the health monitor starts (same fixed id, started after the drill);
- what an activity waits out before its next attempt: ``describe()``'s pending activities. A
  venue's reconnect cooldown is an attempt that failed with ``ReconnectCooldown`` and whose
  next attempt is scheduled at ``next_attempt_schedule_time`` (the activity's
  ``next_retry_delay`` is the venue's Retry-After), so the seconds left are exact, not guessed.

Two views: on a terminal, finished steps scroll as a table while a footer of running steps
and waits is redrawn in place; otherwise one line per event, flushed as it happens.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TextIO

from pydantic import BaseModel, ValidationError
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.service import RPCError

from domain.drill import (
    DRILL_WORKFLOW,
    FAILBACK_WORKFLOW,
    DrillReport,
    FailbackReport,
    RunProgress,
)
from domain.promotion import (
    PROMOTION_WORKFLOW,
    VENUE_RECOVERY_WORKFLOW,
    PromotionReport,
    StepRecord,
    promotion_workflow_id,
)

POLL_S = 0.5
"""How often a watch polls Temporal: a few cheap calls per run watched."""

COOLDOWN_ERROR = "ReconnectCooldown"  # activities.venues.COOLDOWN_ERROR: the failure's type
RATE_LIMITED_ERROR = "RateLimited"

REPORT_TYPES: dict[str, type[BaseModel]] = {
    PROMOTION_WORKFLOW: PromotionReport,
    DRILL_WORKFLOW: DrillReport,
    FAILBACK_WORKFLOW: FailbackReport,
}
# Runs without a progress query: their steps are read from their result when they close.
_NO_PROGRESS_QUERY = {VENUE_RECOVERY_WORKFLOW}


# --- what is seen ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEvent:
    """A step of one run started, completed, failed or was skipped, at ``at``."""

    at: datetime
    scope: str  # "" for the watched run; "promotion", "venue gamma", ...
    step: str
    status: str  # "started" | "completed" | "failed" | "skipped"
    duration_s: float | None = None
    attempts: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Wait:
    """Something a run waits for; ``until`` when it is a known moment (a retry's next attempt)."""

    scope: str
    what: str
    until: datetime | None = None
    hint: str = ""

    def text(self, now: datetime) -> str:
        out = f"{self.scope}: {self.what}" if self.scope else self.what
        if self.until is not None:
            left = max((self.until - now).total_seconds(), 0.0)
            out += f", {left:.0f} s left" if left >= 1 else ", under 1 s left"
        return out + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True)
class RunSteps:
    key: tuple[str, str]  # (workflow id, run id)
    scope: str
    steps: list[StepRecord]


@dataclass
class Snapshot:
    runs: list[RunSteps] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    closed: bool = False
    status: str = "running"


class StepDiff:
    """Turns successive step lists (append-only, records change status) into events."""

    def __init__(self) -> None:
        self._seen: dict[tuple[tuple[str, str], int], str] = {}

    def events(self, run: RunSteps) -> list[StepEvent]:
        out: list[StepEvent] = []
        for index, step in enumerate(run.steps):
            before = self._seen.get((run.key, index))
            if before == step.status:
                continue
            self._seen[(run.key, index)] = step.status
            if step.status == "skipped":
                out.append(_event(run.scope, step, "skipped", step.started_at))
                continue
            if before is None:
                out.append(_event(run.scope, step, "started", step.started_at))
            if step.status in ("completed", "failed"):
                out.append(_event(run.scope, step, step.status, step.ended_at or step.started_at))
        return out


def _event(scope: str, step: StepRecord, status: str, at: datetime) -> StepEvent:
    ended = status in ("completed", "failed")
    return StepEvent(
        at=at,
        scope=scope,
        step=step.name,
        status=status,
        duration_s=step.duration_s if ended else None,
        attempts=step.attempts if ended else 0,
        detail=step.detail if status != "started" else "",
    )


def step_event_line(event: StepEvent) -> str:
    """``10:02:03.532 completed acquire_lease 0.12 s``"""
    name = f"{event.scope}: {event.step}" if event.scope else event.step
    line = f"{_clock(event.at)} {event.status:<9} {name}"
    if event.duration_s is not None:
        line += f" {event.duration_s:.2f} s"
    if event.attempts > 1:
        line += f" ({event.attempts} attempts)"
    if event.detail:
        line += f": {event.detail}"
    return line


def _clock(at: datetime) -> str:
    local = at.astimezone()
    return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"


# --- views ----------------------------------------------------------------------------------


class ProgressView(Protocol):
    def show(self, snapshot: Snapshot, now: datetime) -> None: ...

    def close(self) -> None: ...


class LineView:
    """One line per event, flushed at once: for logs, pipes and CI."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._diff = StepDiff()
        self._waits: dict[tuple[str, str], datetime | None] = {}

    def show(self, snapshot: Snapshot, now: datetime) -> None:
        events = [e for run in snapshot.runs for e in self._diff.events(run)]
        for event in sorted(events, key=lambda e: e.at):
            self._out.write(step_event_line(event) + "\n")
        current: dict[tuple[str, str], datetime | None] = {}
        for wait in snapshot.waits:
            key = (wait.scope, wait.what)
            current[key] = wait.until
            known = key in self._waits
            previous = self._waits.get(key)
            # A new wait, or a new retry of the same one (its next attempt moved).
            moved = (
                wait.until is not None
                and previous is not None
                and abs((wait.until - previous).total_seconds()) > 0.5
            )
            if not known or moved:
                self._out.write(f"{_clock(now)} waiting: {wait.text(now)}\n")
        self._waits = current
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


class TableView:
    """On a terminal: finished steps scroll up as table rows; the running steps and the waits
    (with their countdowns) form a footer redrawn in place with plain ANSI codes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._diff = StepDiff()
        self._running: dict[tuple[str, str], datetime] = {}
        self._footer_lines = 0
        self._header = False

    def show(self, snapshot: Snapshot, now: datetime) -> None:
        events = [e for run in snapshot.runs for e in self._diff.events(run)]
        rows = []
        for event in sorted(events, key=lambda e: e.at):
            name = f"{event.scope}: {event.step}" if event.scope else event.step
            if event.status == "started":
                self._running[(event.scope, event.step)] = event.at
                continue
            self._running.pop((event.scope, event.step), None)
            took = f"{event.duration_s:.2f} s" if event.duration_s is not None else "-"
            tries = f"x{event.attempts}" if event.attempts > 1 else ""
            rows.append(
                f"  {_clock(event.at)}  {name:<36} {event.status:<9} {took:>9} {tries:>4}  "
                f"{event.detail}".rstrip()
            )
        footer = [
            f"  {_clock(started)}  {self._name(key):<36} {'running':<9} "
            f"{(now - started).total_seconds():>7.1f} s"
            for key, started in self._running.items()
        ]
        footer += [f"  waiting: {wait.text(now)}" for wait in snapshot.waits]
        self._erase_footer()
        if not self._header and (rows or footer):
            self._out.write(f"  {'time':<12}  {'step':<36} {'status':<9} {'took':>9}\n")
            self._header = True
        for line in rows + footer:
            self._out.write(line + "\n")
        self._footer_lines = len(footer)
        self._out.flush()

    @staticmethod
    def _name(key: tuple[str, str]) -> str:
        scope, step = key
        return f"{scope}: {step}" if scope else step

    def _erase_footer(self) -> None:
        if self._footer_lines:
            # Up to the footer's first line, then clear to the end of the screen.
            self._out.write(f"\x1b[{self._footer_lines}F\x1b[J")
            self._footer_lines = 0

    def close(self) -> None:
        self._erase_footer()
        self._out.flush()


def view_for(out: TextIO) -> ProgressView:
    return TableView(out) if out.isatty() else LineView(out)


# --- reading Temporal -----------------------------------------------------------------------


def scope_of(workflow_type: str, workflow_id: str) -> str:
    if workflow_type == VENUE_RECOVERY_WORKFLOW:
        # The promotion names its children .../venue/<venue>/epoch-N/try-M.
        match = re.search(r"/venue/([^/]+)/", workflow_id)
        return f"venue {match.group(1)}" if match else workflow_id
    return workflow_type.lower()


def waiting_hint(workflow_id: str, waiting_for: str) -> str:
    """What a person types to move the run on."""
    if waiting_for.startswith("approval"):
        return f"drctl approve {workflow_id} --as NAME"
    if waiting_for.startswith("operator decision"):
        return f"drctl decide {workflow_id} accept|abort --as NAME"
    if waiting_for.startswith("operator:"):
        return f"drctl resolve {workflow_id} retry|abort --as NAME"
    return ""


def activity_waits(scope: str, pending: list[PendingActivityInfo]) -> list[Wait]:
    """Attempts that failed and wait for their next try; a cooldown reads as one."""
    waits = []
    for activity in pending:
        if not activity.HasField("last_failure") or activity.attempt <= 1:
            continue
        until = (
            activity.next_attempt_schedule_time.ToDatetime(tzinfo=UTC)
            if activity.HasField("next_attempt_schedule_time")
            else None
        )
        kind = _failure_type(activity.last_failure)
        if kind in (COOLDOWN_ERROR, RATE_LIMITED_ERROR):
            # Read as one phrase: "venue gamma reconnect cooldown, 2 s left".
            what = "reconnect cooldown" if kind == COOLDOWN_ERROR else "rate limit (Retry-After)"
            waits.append(Wait("", f"{scope} {what}".strip(), until))
            continue
        what = (
            f"{activity.activity_type.name} to be retried (attempt {activity.attempt}): "
            f"{_innermost(activity.last_failure)}"
        )
        waits.append(Wait(scope, what, until))
    return waits


def _failure_type(failure: Failure) -> str:
    while failure is not None:
        if failure.HasField("application_failure_info"):
            return failure.application_failure_info.type
        if not failure.HasField("cause"):
            break
        failure = failure.cause
    return ""


def _innermost(failure: Failure) -> str:
    message = failure.message
    while failure.HasField("cause"):
        failure = failure.cause
        message = failure.message or message
    return message


class RunWatcher:
    """Polls one run and the runs it drives; each ``poll`` is one consistent-enough snapshot."""

    def __init__(self, client: Client, workflow_id: str, run_id: str | None) -> None:
        self._client = client
        self.workflow_id = workflow_id
        self._root_run_id = run_id
        # (workflow id, run id) -> (scope, workflow type); runs whose result is read are done.
        self._runs: dict[tuple[str, str], tuple[str, str]] = {}
        self._done: dict[tuple[str, str], list[StepRecord]] = {}
        self._root_started: datetime | None = None
        self._system: str | None = None

    async def poll(self) -> Snapshot:
        snapshot = Snapshot()
        root = self._client.get_workflow_handle(self.workflow_id, run_id=self._root_run_id)
        description = await root.describe()
        if self._root_run_id is None:
            self._root_run_id = description.run_id
        self._root_started = description.start_time
        root_key = (self.workflow_id, description.run_id)
        self._runs.setdefault(root_key, ("", description.workflow_type))
        await self._read(root_key, "", description, snapshot)
        await self._follow_monitor_promotion(description)
        for key, (scope, _type) in list(self._runs.items()):
            if key == root_key:
                continue
            if key in self._done:
                snapshot.runs.append(RunSteps(key, scope, self._done[key]))
                continue
            try:
                child = await self._client.get_workflow_handle(key[0], run_id=key[1]).describe()
            except RPCError:
                continue
            await self._read(key, scope, child, snapshot)
        snapshot.closed = description.status != WorkflowExecutionStatus.RUNNING
        snapshot.status = description.status.name.lower() if description.status else "unknown"
        return snapshot

    async def _read(
        self,
        key: tuple[str, str],
        scope: str,
        description: WorkflowExecutionDescription,
        snapshot: Snapshot,
    ) -> None:
        handle = self._client.get_workflow_handle(key[0], run_id=key[1])
        if description.status != WorkflowExecutionStatus.RUNNING:
            steps = await self._final_steps(key)
            snapshot.runs.append(RunSteps(key, scope, steps))
            return
        if description.workflow_type not in _NO_PROGRESS_QUERY:
            try:
                progress = await handle.query("progress", result_type=RunProgress)
            except RPCError as exc:
                # A workflow task that keeps failing cannot answer; say so, keep watching.
                snapshot.waits.append(Wait(scope, f"no progress from {key[0]}: {exc.message}"))
            else:
                self._system = self._system or progress.system or None
                snapshot.runs.append(RunSteps(key, scope, progress.steps))
                if progress.waiting_for:
                    snapshot.waits.append(
                        Wait(
                            scope,
                            progress.waiting_for,
                            hint=waiting_hint(key[0], progress.waiting_for),
                        )
                    )
        raw = description.raw_description
        snapshot.waits += activity_waits(scope, list(raw.pending_activities))
        for child in raw.pending_children:
            if not child.run_id:
                # Initiated, not yet started: without its run id it would be watched twice
                # (once now, once under the id it starts with). The next look has it.
                continue
            child_key = (child.workflow_id, child.run_id)
            self._runs.setdefault(
                child_key,
                (scope_of(child.workflow_type_name, child.workflow_id), child.workflow_type_name),
            )

    async def _follow_monitor_promotion(self, root: WorkflowExecutionDescription) -> None:
        """A drill's kill-primary scenario waits for the promotion the monitor starts."""
        if root.workflow_type != DRILL_WORKFLOW or self._system is None:
            return
        try:
            promotion = await self._client.get_workflow_handle(
                promotion_workflow_id(self._system)
            ).describe()
        except RPCError:
            return
        if self._root_started is not None and promotion.start_time >= self._root_started:
            key = (promotion.id, promotion.run_id)
            self._runs.setdefault(key, ("promotion", PROMOTION_WORKFLOW))

    async def _final_steps(self, key: tuple[str, str]) -> list[StepRecord]:
        if key in self._done:
            return self._done[key]
        steps: list[StepRecord] = []
        try:
            raw = await self._client.get_workflow_handle(key[0], run_id=key[1]).result()
        except (WorkflowFailureError, RPCError):  # a failed run: its status says why
            raw = None
        if isinstance(raw, dict):
            try:
                steps = [StepRecord.model_validate(s) for s in raw.get("steps", [])]
            except ValidationError:
                steps = []
        self._done[key] = steps
        return steps


async def watch(
    watcher: RunWatcher,
    view: ProgressView,
    poll_s: float = POLL_S,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Snapshot:
    """Show the run until it closes; returns the last snapshot. Never acts on the run."""
    try:
        while True:
            snapshot = await watcher.poll()
            view.show(snapshot, clock())
            if snapshot.closed:
                return snapshot
            await asyncio.sleep(poll_s)  # poll
    finally:
        view.close()


async def follow(
    client: Client,
    workflow_id: str,
    run_id: str | None,
    out: TextIO | None = None,
    poll_s: float = POLL_S,
    watcher: RunWatcher | None = None,
) -> Snapshot:
    """Watch a run on ``out`` (stdout by default); Ctrl-C stops the watch, never the run."""
    stream = out or sys.stdout
    source = watcher or RunWatcher(client, workflow_id, run_id)
    try:
        return await watch(source, view_for(stream), poll_s)
    except (asyncio.CancelledError, KeyboardInterrupt):
        stream.write(
            f"\nstopped watching; {workflow_id} keeps running. Watch it again with "
            f"`drctl watch {workflow_id}`\n"
        )
        stream.flush()
        raise
