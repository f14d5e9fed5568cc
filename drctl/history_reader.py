"""A Temporal workflow history, read back into a ``RunReview``.

One reader for every source: a history fetched from the server and one loaded from an exported
file are both a ``WorkflowHistory`` by the time they get here, so a report rendered live and one
rendered from the export of the same run are the same bytes.

Payloads are decoded as JSON (the workers use the pydantic data converter, which writes
``json/plain``); anything else is shown as ``<binary payload>``, never guessed at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import StartChildWorkflowExecutionFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory

from domain.monitoring import MONITOR_WORKFLOWS
from domain.review import (
    EntryKind,
    EntryStatus,
    OperatorActionRecord,
    RunReview,
    RunStatus,
    TimelineEntry,
    seconds_between,
    summarize_monitor,
    summarize_result,
)

BINARY_PAYLOAD = "<binary payload>"
_JSON_ENCODINGS = (b"json/plain", b"json/protobuf")

# Where an operator's argument says on whose behalf it was sent, by runbook.
_ON_BEHALF_FIELDS = ("by", "approver", "requested_by")


class HistoryError(ValueError):
    """The history cannot be read as one workflow run (empty, or not starting with its start)."""


def decode_payload(payload: Payload) -> Any:
    encoding = payload.metadata.get("encoding", b"")
    if encoding == b"binary/null":
        return None
    if encoding in _JSON_ENCODINGS:
        try:
            return json.loads(payload.data)
        except ValueError:
            return BINARY_PAYLOAD
    return BINARY_PAYLOAD


def decode_first(payloads: Payloads) -> Any:
    """Workflows, activities, updates and signals here take one argument and return one value."""
    return decode_payload(payloads.payloads[0]) if payloads.payloads else None


def failure_text(failure: Failure) -> str:
    """The whole failure chain, outermost first: "Activity task failed: venue alpha: cooldown"."""
    messages: list[str] = []
    current: Failure | None = failure
    while current is not None:
        if current.message and current.message not in messages:
            messages.append(current.message)
        current = current.cause if current.HasField("cause") else None
    return ": ".join(messages) or "failed (no message)"


def _at(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


@dataclass
class _Run:
    """What the scan has gathered so far; turned into a RunReview at the end."""

    timeline: list[TimelineEntry] = field(default_factory=list)
    by_event: dict[int, TimelineEntry] = field(default_factory=dict)
    inputs: dict[int, Any] = field(default_factory=dict)
    results: dict[int, Any] = field(default_factory=dict)
    actions: list[OperatorActionRecord] = field(default_factory=list)
    updates: dict[int, OperatorActionRecord] = field(default_factory=dict)
    timers: dict[str, TimelineEntry] = field(default_factory=dict)


def read_history(history: WorkflowHistory, run_id: str | None = None) -> RunReview:
    """The review of one run. ``run_id`` defaults to the one its start event records."""
    events = list(history.events)
    if not events or events[0].WhichOneof("attributes") != (
        "workflow_execution_started_event_attributes"
    ):
        raise HistoryError(
            f"history of {history.workflow_id} is empty or does not begin with its start"
        )
    start = events[0].workflow_execution_started_event_attributes
    notes: list[str] = []
    review = RunReview(
        workflow_id=history.workflow_id,
        run_id=run_id or start.original_execution_run_id,
        workflow_type=start.workflow_type.name,
        status=RunStatus.RUNNING,
        task_queue=start.task_queue.name,
        started_at=_at(events[0]),
        history_events=len(events),
        parent_workflow_id=start.parent_workflow_execution.workflow_id or None,
        input=decode_first(start.input),
        search_attributes={
            name: decode_payload(value)
            for name, value in sorted(start.search_attributes.indexed_fields.items())
        },
    )
    run = _Run()
    for event in events[1:]:
        _apply(event, run, review)
    for entry in run.timeline:
        entry.duration_s = seconds_between(entry.begins_at, entry.ended_at)
    review.timeline = run.timeline
    review.operator_actions = run.actions
    review.duration_s = seconds_between(review.started_at, review.closed_at)
    summarize_result(review, notes)
    if review.workflow_type in MONITOR_WORKFLOWS:
        review.monitor = summarize_monitor(
            [
                (entry, run.inputs.get(event_id), run.results.get(event_id))
                for event_id, entry in run.by_event.items()
                if entry.kind is EntryKind.ACTIVITY and entry.name == "watch_target"
            ],
            run.actions,
            [
                (entry, run.results.get(event_id))
                for event_id, entry in run.by_event.items()
                if entry.kind is EntryKind.CHILD_WORKFLOW
            ],
            notes,
        )
    review.notes = notes
    return review


def _apply(event: HistoryEvent, run: _Run, review: RunReview) -> None:
    kind = event.WhichOneof("attributes")
    at = _at(event)
    match kind:
        # --- activities ---------------------------------------------------------------------
        case "activity_task_scheduled_event_attributes":
            scheduled = event.activity_task_scheduled_event_attributes
            entry = TimelineEntry(
                kind=EntryKind.ACTIVITY,
                name=scheduled.activity_type.name,
                scheduled_at=at,
                status=EntryStatus.RUNNING,
            )
            run.timeline.append(entry)
            run.by_event[event.event_id] = entry
            run.inputs[event.event_id] = decode_first(scheduled.input)
        case "activity_task_started_event_attributes":
            started = event.activity_task_started_event_attributes
            if attempted := run.by_event.get(started.scheduled_event_id):
                attempted.started_at, attempted.attempts = at, started.attempt
                if started.HasField("last_failure"):
                    attempted.failures.append(
                        f"attempt {started.attempt - 1}: {failure_text(started.last_failure)}"
                    )
        case "activity_task_completed_event_attributes":
            completed = event.activity_task_completed_event_attributes
            _close(run, completed.scheduled_event_id, at, EntryStatus.COMPLETED)
            run.results[completed.scheduled_event_id] = decode_first(completed.result)
        case "activity_task_failed_event_attributes":
            failed = event.activity_task_failed_event_attributes
            _close(
                run, failed.scheduled_event_id, at, EntryStatus.FAILED, failure_text(failed.failure)
            )
        case "activity_task_timed_out_event_attributes":
            timed_out = event.activity_task_timed_out_event_attributes
            _close(
                run,
                timed_out.scheduled_event_id,
                at,
                EntryStatus.TIMED_OUT,
                failure_text(timed_out.failure),
            )
        case "activity_task_canceled_event_attributes":
            canceled = event.activity_task_canceled_event_attributes
            _close(run, canceled.scheduled_event_id, at, EntryStatus.CANCELED)
        # --- child workflows ----------------------------------------------------------------
        case "start_child_workflow_execution_initiated_event_attributes":
            initiated = event.start_child_workflow_execution_initiated_event_attributes
            entry = TimelineEntry(
                kind=EntryKind.CHILD_WORKFLOW,
                name=f"{initiated.workflow_type.name} {initiated.workflow_id}",
                workflow_type=initiated.workflow_type.name,
                workflow_id=initiated.workflow_id,
                scheduled_at=at,
                attempts=1,
                status=EntryStatus.RUNNING,
            )
            run.timeline.append(entry)
            run.by_event[event.event_id] = entry
        case "start_child_workflow_execution_failed_event_attributes":
            not_started = event.start_child_workflow_execution_failed_event_attributes
            cause = StartChildWorkflowExecutionFailedCause.Name(not_started.cause).rsplit(
                "CAUSE_", 1
            )[-1]
            _close(
                run, not_started.initiated_event_id, at, EntryStatus.FAILED, f"not started: {cause}"
            )
        case "child_workflow_execution_started_event_attributes":
            child_started = event.child_workflow_execution_started_event_attributes
            if child := run.by_event.get(child_started.initiated_event_id):
                child.started_at = at
        case "child_workflow_execution_completed_event_attributes":
            child_completed = event.child_workflow_execution_completed_event_attributes
            _close(run, child_completed.initiated_event_id, at, EntryStatus.COMPLETED)
            run.results[child_completed.initiated_event_id] = decode_first(child_completed.result)
        case "child_workflow_execution_failed_event_attributes":
            child_failed = event.child_workflow_execution_failed_event_attributes
            _close(
                run,
                child_failed.initiated_event_id,
                at,
                EntryStatus.FAILED,
                failure_text(child_failed.failure),
            )
        case "child_workflow_execution_timed_out_event_attributes":
            child_timed_out = event.child_workflow_execution_timed_out_event_attributes
            _close(run, child_timed_out.initiated_event_id, at, EntryStatus.TIMED_OUT, "timed out")
        case "child_workflow_execution_canceled_event_attributes":
            child_canceled = event.child_workflow_execution_canceled_event_attributes
            _close(run, child_canceled.initiated_event_id, at, EntryStatus.CANCELED)
        case "child_workflow_execution_terminated_event_attributes":
            child_terminated = event.child_workflow_execution_terminated_event_attributes
            _close(run, child_terminated.initiated_event_id, at, EntryStatus.FAILED, "terminated")
        # --- timers -------------------------------------------------------------------------
        case "timer_started_event_attributes":
            timer = event.timer_started_event_attributes
            fires_in = timer.start_to_fire_timeout.ToTimedelta().total_seconds()
            entry = TimelineEntry(
                kind=EntryKind.TIMER,
                name=f"timer {timer.timer_id} ({fires_in:g} s)",
                scheduled_at=at,
                started_at=at,
                attempts=1,
                status=EntryStatus.RUNNING,
            )
            run.timeline.append(entry)
            run.timers[timer.timer_id] = entry
        case "timer_fired_event_attributes":
            if fired := run.timers.get(event.timer_fired_event_attributes.timer_id):
                fired.ended_at, fired.status = at, EntryStatus.FIRED
        case "timer_canceled_event_attributes":
            if stopped := run.timers.get(event.timer_canceled_event_attributes.timer_id):
                stopped.ended_at, stopped.status = at, EntryStatus.CANCELED
        # --- operator actions ---------------------------------------------------------------
        case "workflow_execution_update_accepted_event_attributes":
            accepted = event.workflow_execution_update_accepted_event_attributes
            request = accepted.accepted_request
            action = _operator_action(
                "update", request.input.name, at, request.meta.identity, request.input.args
            )
            run.actions.append(action)
            run.updates[event.event_id] = action
            entry = TimelineEntry(
                kind=EntryKind.UPDATE,
                name=request.input.name,
                scheduled_at=at,
                started_at=at,
                attempts=1,
                status=EntryStatus.RUNNING,
            )
            run.timeline.append(entry)
            run.by_event[event.event_id] = entry
        case "workflow_execution_update_completed_event_attributes":
            update_done = event.workflow_execution_update_completed_event_attributes
            answered = run.updates.get(update_done.accepted_event_id)
            if update_done.outcome.HasField("failure"):
                message = failure_text(update_done.outcome.failure)
                _close(run, update_done.accepted_event_id, at, EntryStatus.FAILED, message)
                if answered is not None:
                    answered.failure = message
            else:
                _close(run, update_done.accepted_event_id, at, EntryStatus.COMPLETED)
                if answered is not None:
                    answered.result = decode_first(update_done.outcome.success)
        case "workflow_execution_update_rejected_event_attributes":
            rejected = event.workflow_execution_update_rejected_event_attributes
            request = rejected.rejected_request
            action = _operator_action(
                "update", request.input.name, at, request.meta.identity, request.input.args
            )
            action.accepted, action.failure = False, failure_text(rejected.failure)
            run.actions.append(action)
        case "workflow_execution_signaled_event_attributes":
            signaled = event.workflow_execution_signaled_event_attributes
            run.actions.append(
                _operator_action(
                    "signal", signaled.signal_name, at, signaled.identity, signaled.input
                )
            )
            run.timeline.append(
                TimelineEntry(
                    kind=EntryKind.SIGNAL,
                    name=signaled.signal_name,
                    scheduled_at=at,
                    started_at=at,
                    ended_at=at,
                    attempts=1,
                    status=EntryStatus.COMPLETED,
                )
            )
        case "upsert_workflow_search_attributes_event_attributes":
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            for name, value in fields.indexed_fields.items():
                review.search_attributes[name] = decode_payload(value)
            review.search_attributes = dict(sorted(review.search_attributes.items()))
        # --- how the run ended --------------------------------------------------------------
        case "workflow_execution_completed_event_attributes":
            run_completed = event.workflow_execution_completed_event_attributes
            _end(review, at, RunStatus.COMPLETED)
            review.result = decode_first(run_completed.result)
        case "workflow_execution_failed_event_attributes":
            run_failed = event.workflow_execution_failed_event_attributes
            _end(review, at, RunStatus.FAILED, failure_text(run_failed.failure))
        case "workflow_execution_timed_out_event_attributes":
            _end(review, at, RunStatus.TIMED_OUT, "the run exceeded its timeout")
        case "workflow_execution_canceled_event_attributes":
            _end(review, at, RunStatus.CANCELED)
        case "workflow_execution_terminated_event_attributes":
            terminated = event.workflow_execution_terminated_event_attributes
            who = f" by {terminated.identity}" if terminated.identity else ""
            _end(
                review,
                at,
                RunStatus.TERMINATED,
                f"terminated{who}: {terminated.reason or 'no reason'}",
            )
        case "workflow_execution_continued_as_new_event_attributes":
            continued = event.workflow_execution_continued_as_new_event_attributes
            _end(review, at, RunStatus.CONTINUED_AS_NEW)
            review.continued_as_new_run_id = continued.new_execution_run_id or None
        case "marker_recorded_event_attributes":
            _local_activity(event, run, at)
        case _:
            # Workflow tasks, other markers (patches), cancel requests and the like say nothing
            # a review shows.
            pass


# The marker the SDK records when a local activity has finished, all its attempts included.
LOCAL_ACTIVITY_MARKER = "core_local_activity"


def _local_activity(event: HistoryEvent, run: _Run, at: datetime) -> None:
    """A local activity (a short runbook step run inside the workflow's worker) as a timeline
    entry like any other activity: scheduled at its first attempt, ended when it completed."""
    marker = event.marker_recorded_event_attributes
    if marker.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in marker.details:
        return
    data = decode_first(marker.details["data"])
    if not isinstance(data, dict):
        return
    failed = marker.HasField("failure")
    ended = _proto_time(data.get("complete_time")) or at
    entry = TimelineEntry(
        kind=EntryKind.ACTIVITY,
        name=str(data.get("activity_type") or "local activity"),
        scheduled_at=min(filter(None, (_proto_time(data.get("original_schedule_time")), ended))),
        ended_at=ended,
        attempts=int(data.get("attempt") or 1),
        status=EntryStatus.FAILED if failed else EntryStatus.COMPLETED,
        failures=[failure_text(marker.failure)] if failed else [],
    )
    run.timeline.append(entry)
    run.by_event[event.event_id] = entry
    if "result" in marker.details:
        run.results[event.event_id] = decode_first(marker.details["result"])


def _proto_time(value: object) -> datetime | None:
    """``{"seconds": ..., "nanos": ...}`` as the marker's JSON spells a timestamp."""
    if not isinstance(value, dict) or "seconds" not in value:
        return None
    seconds = int(value["seconds"]) + int(value.get("nanos") or 0) / 1e9
    return datetime.fromtimestamp(seconds, tz=UTC)


def _close(
    run: _Run, event_id: int, at: datetime, status: EntryStatus, failure: str | None = None
) -> None:
    entry = run.by_event.get(event_id)
    if entry is None:
        return
    entry.ended_at, entry.status = at, status
    if failure and entry.kind is EntryKind.ACTIVITY and entry.attempts:
        entry.failures.append(f"attempt {entry.attempts}: {failure}")
    elif failure:
        entry.failures.append(failure)


def _end(review: RunReview, at: datetime, status: RunStatus, failure: str | None = None) -> None:
    review.closed_at, review.status, review.failure = at, status, failure


def _operator_action(
    kind: Literal["update", "signal"], name: str, at: datetime, identity: str, payloads: Payloads
) -> OperatorActionRecord:
    args = decode_first(payloads)
    fields: dict[str, Any] = args if isinstance(args, dict) else {}
    on_behalf = next((fields[k] for k in _ON_BEHALF_FIELDS if fields.get(k)), None)
    return OperatorActionRecord(
        kind=kind,
        name=name,
        at=at,
        identity=identity,
        by=str(on_behalf) if on_behalf is not None else None,
        action=str(fields.get("action", name)),
        comment=str(fields["comment"]) if fields.get("comment") else None,
        args=args,
    )
