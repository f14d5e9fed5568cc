"""The recorded lab histories, and ways to edit a copy of one for a case no lab run recorded."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from temporalio.client import WorkflowHistory

HISTORIES = Path(__file__).parents[1] / "workflows" / "histories"
UNPLANNED = HISTORIES / "unplanned--dr-promotion%2Flab.json"
PLANNED = HISTORIES / "planned--dr-promotion%2Flab.json"
MONITOR = HISTORIES / "monitor--dr-monitor%2Flab.json"
VENUE_ALPHA = HISTORIES / "unplanned--dr-promotion%2Flab%2Fvenue%2Falpha%2Fepoch-2%2Ftry-1.json"

Document = dict[str, Any]


def workflow_id_of(path: Path) -> str:
    return unquote(path.stem.split("--", 1)[1])


@cache
def _document(path: Path) -> Document:
    loaded: Document = json.loads(path.read_text())
    return loaded


def document(path: Path) -> Document:
    """A fresh copy of the recorded history JSON, safe to edit."""
    return copy.deepcopy(_document(path))


def history(path: Path, edit: Callable[[Document], None] | None = None) -> WorkflowHistory:
    """The history as the replay tests load it, after ``edit`` changed a copy of its JSON."""
    doc = document(path)
    if edit is not None:
        edit(doc)
    return WorkflowHistory.from_json(workflow_id_of(path), doc)


def attributes(event: Document) -> Document:
    return next(v for k, v in event.items() if k.endswith("EventAttributes"))


def payload(value: Any) -> Document:
    return {
        "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
        "data": base64.b64encode(json.dumps(value).encode()).decode(),
    }


def decode(encoded: Document) -> Any:
    return json.loads(base64.b64decode(encoded["data"]))


def result_of(doc: Document) -> Any:
    """The decoded result of the workflow's completion event."""
    last = doc["events"][-1]
    return decode(last["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0])


def set_result(doc: Document, result: Any) -> None:
    last = doc["events"][-1]
    last["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0] = payload(result)


def activity_events(doc: Document, activity_type: str) -> tuple[Document, list[Document]]:
    """The scheduled event of the first ``activity_type`` and the events that refer to it."""
    scheduled = next(
        e
        for e in doc["events"]
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
        and attributes(e)["activityType"]["name"] == activity_type
    )
    related = [
        e for e in doc["events"] if attributes(e).get("scheduledEventId") == scheduled["eventId"]
    ]
    return scheduled, related


def seconds_between_events(first: Document, second: Document) -> float:
    def at(event: Document) -> datetime:
        # Event times carry nanoseconds; Python keeps microseconds, as the reader does.
        stamp = event["eventTime"].rstrip("Z")
        whole, _, fraction = stamp.partition(".")
        return datetime.fromisoformat(f"{whole}.{(fraction + '000000')[:6]}+00:00")

    return round((at(second) - at(first)).total_seconds(), 6)
