"""The history export file: how a run's audit trail is kept past the server's retention.

The file is what ``WorkflowHistory.to_json()`` writes (the JSON the Temporal UI downloads and
the SDKs' replayers read: an object with ``events``), with two more top-level keys in front:
``workflowExecution`` {``workflowId``, ``runId``} and ``namespace``. History JSON does not
name its workflow, and child workflow ids derive from it, so the file must. Readers of plain
history JSON ignore unknown top-level keys, so an export still replays as it is.

A plain history file without those keys is read too: its workflow id is then taken from the
start event (recent servers record it there), else from a file name ``<label>--<quoted id>.json``
(as the recorded test histories are named), else it must be given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from google.protobuf.json_format import ParseError
from temporalio.client import WorkflowHistory

EXECUTION_KEY = "workflowExecution"
NAMESPACE_KEY = "namespace"


class HistoryFileError(ValueError):
    """The file cannot be read as a workflow history; the message names the file."""


def export_document(history: WorkflowHistory, run_id: str, namespace: str) -> str:
    document: dict[str, Any] = {
        EXECUTION_KEY: {"workflowId": history.workflow_id, "runId": run_id},
        NAMESPACE_KEY: namespace,
    }
    document |= history.to_json_dict()
    return json.dumps(document, indent=2) + "\n"


def load_history_file(path: Path, workflow_id: str | None = None) -> tuple[WorkflowHistory, str]:
    """The history in ``path`` and its run id. ``workflow_id`` overrides what the file says."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HistoryFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise HistoryFileError(f"{path}: not a history export (not UTF-8 text)") from None
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise HistoryFileError(f"{path}: not a history export (invalid JSON: {exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise HistoryFileError(f"{path}: not a history export (no list of events)")
    if not document["events"]:
        raise HistoryFileError(f"{path}: the history has no events")
    execution = document.get(EXECUTION_KEY)
    recorded = execution if isinstance(execution, dict) else {}
    workflow_id = (
        workflow_id
        or _str(recorded.get("workflowId"))
        or _workflow_id_in_start_event(document["events"][0])
        or _workflow_id_in_file_name(path)
    )
    if not workflow_id:
        raise HistoryFileError(
            f"{path}: the file does not say which workflow it is; give --workflow-id"
        )
    try:
        history = WorkflowHistory.from_json(workflow_id, document)
    except (ParseError, ValueError, TypeError, KeyError) as exc:
        raise HistoryFileError(f"{path}: not a valid workflow history ({exc})") from None
    first = history.events[0]
    if not first.HasField("workflow_execution_started_event_attributes"):
        raise HistoryFileError(f"{path}: the history does not begin with the workflow's start")
    run_id = _str(recorded.get("runId")) or (
        first.workflow_execution_started_event_attributes.original_execution_run_id
    )
    return history, run_id


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _workflow_id_in_start_event(event: Any) -> str | None:
    if not isinstance(event, dict):
        return None
    attributes = event.get("workflowExecutionStartedEventAttributes")
    return _str(attributes.get("workflowId")) if isinstance(attributes, dict) else None


def _workflow_id_in_file_name(path: Path) -> str | None:
    if "--" not in path.stem:
        return None
    return unquote(path.stem.split("--", 1)[1]) or None
