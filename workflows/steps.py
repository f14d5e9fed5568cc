"""Step bookkeeping shared by the runbooks: every step's start, end, attempts and outcome.

The records are built from workflow time only, so they are deterministic and replay exactly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.promotion import (
        DR_KIND_ATTRIBUTE,
        DR_OUTCOME_ATTRIBUTE,
        DR_SYSTEM_ATTRIBUTE,
        DrKind,
        DrOutcome,
        StepRecord,
    )
    from domain.topology import describe_validation_error

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

INVALID_INPUT = "InvalidInput"

# How past runs are found for review (`drctl incidents`): every runbook sets all three.
DR_SYSTEM = SearchAttributeKey.for_keyword(DR_SYSTEM_ATTRIBUTE)
DR_KIND = SearchAttributeKey.for_keyword(DR_KIND_ATTRIBUTE)
DR_OUTCOME = SearchAttributeKey.for_keyword(DR_OUTCOME_ATTRIBUTE)


def upsert_dr_attributes(system: str, kind: DrKind, outcome: DrOutcome) -> None:
    workflow.upsert_search_attributes(
        [
            DR_SYSTEM.value_set(system),
            DR_KIND.value_set(kind.value),
            DR_OUTCOME.value_set(outcome.value),
        ]
    )


class RunbookStop(Exception):
    """End a runbook early with an outcome (refused before anything changed, or aborted)."""

    def __init__(self, outcome: DrOutcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


# For calls to an OMS or a venue: quick first retries, then backing off to a few seconds. A
# step that still fails goes to its runbook's own failure handling, never silently on.
SERVICE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=10,
)


# Runbook activities heartbeat every second while they run (workers/heartbeats.py): an attempt
# whose worker died is retried elsewhere after this, not after its whole start-to-close timeout.
WORKER_LOST = timedelta(seconds=5)


def parse_input(model: type[M], raw: Any) -> M:
    """Validate a workflow's input; a bad one fails the run at once with every field named.

    Runbooks take their input as ``raw: object = None`` so that whatever was typed into the UI,
    any JSON value or nothing at all, reaches this check. Under a narrower hint such as ``dict``
    the SDK decodes first, and a string or a list fails every workflow task forever instead.
    """
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApplicationError(
            f"invalid {model.__name__}: {describe_validation_error(exc)}",
            type=INVALID_INPUT,
            non_retryable=True,
        ) from None


class StepLog:
    def __init__(self) -> None:
        self.records: list[StepRecord] = []

    @property
    def current(self) -> StepRecord | None:
        running = [r for r in self.records if r.status == "running"]
        return running[-1] if running else None

    def begin(self, name: str) -> StepRecord:
        record = StepRecord(name=name, started_at=workflow.now())
        self.records.append(record)
        return record

    def end(
        self, record: StepRecord, attempts: int, detail: str = "", at: datetime | None = None
    ) -> None:
        """``at``: when a step that spans others ended (its last part), if not now."""
        record.ended_at = at or workflow.now()
        record.attempts = attempts
        record.status = "completed"
        record.detail = detail

    def fail(self, record: StepRecord, detail: str) -> None:
        record.ended_at = workflow.now()
        record.status = "failed"
        record.detail = detail

    def skip(self, name: str, detail: str) -> None:
        record = self.begin(name)
        record.ended_at = record.started_at
        record.status = "skipped"
        record.detail = detail

    async def run(self, name: str, action: Callable[[], Awaitable[T]], detail: str = "") -> T:
        """Run one step that either completes or raises; attempts come from the result."""
        record = self.begin(name)
        try:
            result = await action()
        except BaseException as exc:
            self.fail(record, failure_message(exc))
            raise
        self.end(record, attempts=int(getattr(result, "attempt", 1)), detail=detail)
        return result

    def get(self, name: str) -> StepRecord | None:
        matching = [r for r in self.records if r.name == name and r.status == "completed"]
        return matching[-1] if matching else None


def failure_message(exc: BaseException) -> str:
    """The innermost message of a Temporal failure chain: what the activity actually said."""
    message = str(exc)
    cause = exc.__cause__
    while cause is not None:
        if str(cause):
            message = str(cause)
        cause = cause.__cause__
    return message
