"""Post-incident review: what one run of a runbook did, read back from its Temporal history.

A ``RunReview`` holds the generic facts every history has (the timeline of activities, child
workflows, timers, updates and signals; who sent which operator action) and, when the workflow
type is one of ours, typed summaries decoded from its result: RTO and its breakdown, the
replication gap, venues, approvals for a promotion; pass/fail against objectives for a drill;
verdict changes for a health monitor.

Histories outlive code: a review may be asked of a run recorded by an older release whose result
lacks fields today's models require. Every decoder here therefore validates section by section
and field by field, keeps what decodes, and notes what did not; a review never raises on an
old or odd history. Pure: no I/O, safe to import anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from domain.drill import (
    DRILL_WORKFLOW,
    FAILBACK_WORKFLOW,
    DrillMeasurements,
    DrillObjectives,
    DrillScenario,
    FaultRecord,
)
from domain.fencing import fencing_verdict
from domain.promotion import (
    DR_OUTCOME_ATTRIBUTE,
    PROMOTION_WORKFLOW,
    RecordedAction,
    ReplicationGap,
    StepRecord,
    VenueRecoveryReport,
)
from domain.reconciliation import PositionDiscrepancy
from domain.venues import VenueCapability

M = TypeVar("M", bound=BaseModel)

# A step's clock is the workflow task's, an activity's the server's: they differ by rounding only.
_STEP_CLOCK_SLACK = timedelta(milliseconds=1)

MONITOR_OPERATOR_UPDATES = frozenset({"pause", "resume", "ack", "retarget"})


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TERMINATED = "terminated"
    CANCELED = "canceled"
    TIMED_OUT = "timed_out"
    CONTINUED_AS_NEW = "continued_as_new"


class EntryKind(StrEnum):
    ACTIVITY = "activity"
    CHILD_WORKFLOW = "child_workflow"
    TIMER = "timer"
    UPDATE = "update"
    SIGNAL = "signal"


class EntryStatus(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    RUNNING = "running"
    FIRED = "fired"


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 6)


class TimelineEntry(BaseModel):
    """One thing the run waited on. ``scheduled_at`` to ``ended_at`` spans every attempt;
    ``started_at`` is when the last attempt began, so the stretch before it is retries."""

    kind: EntryKind
    # Activity type; child workflow type and id; "timer <id>"; update or signal name.
    name: str
    # The runbook step this belongs to, when the run's report names its steps.
    step: str | None = None
    # Child workflows only.
    workflow_type: str | None = None
    workflow_id: str | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    status: EntryStatus
    # The last retried attempt's failure first, then the final one's.
    failures: list[str] = []
    duration_s: float | None = None

    @property
    def begins_at(self) -> datetime | None:
        return self.scheduled_at or self.started_at

    @property
    def label(self) -> str:
        return f"{self.step} / {self.name}" if self.step and self.step != self.name else self.name


class OperatorActionRecord(BaseModel):
    """An update or signal sent to the run: who sent it (the client's identity) and, decoded
    from its argument, on whose behalf (``by`` / ``approver``) and what it asked."""

    kind: Literal["update", "signal"]
    name: str
    at: datetime
    identity: str
    by: str | None = None
    action: str | None = None
    comment: str | None = None
    args: Any = None
    accepted: bool = True
    result: Any = None
    failure: str | None = None


# --- summaries decoded from a known workflow type's result -----------------------------------


class StepTiming(BaseModel):
    """A business step of the runbook, as its report recorded it: the RTO breakdown."""

    name: str
    status: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    attempts: int = 0
    detail: str = ""

    @classmethod
    def of(cls, step: StepRecord) -> StepTiming:
        return cls(
            name=step.name,
            status=step.status,
            started_at=step.started_at,
            ended_at=step.ended_at,
            duration_s=step.duration_s,
            attempts=step.attempts,
            detail=step.detail,
        )


class GapFigures(BaseModel):
    """A ``ReplicationGap`` with its derived figures written out for machine readers."""

    stream_last_seq: int
    applied_before: int
    applied_after: int
    lag_before_s: float | None
    gap_events: int
    behind_before: int

    @classmethod
    def of(cls, gap: ReplicationGap) -> GapFigures:
        return cls(
            stream_last_seq=gap.stream_last_seq,
            applied_before=gap.applied_before,
            applied_after=gap.applied_after,
            lag_before_s=gap.lag_before_s,
            gap_events=gap.gap_events,
            behind_before=gap.behind_before,
        )


class UnresolvedFinding(BaseModel):
    client_order_id: str
    kind: str
    symbol: str
    notional: Decimal
    detail: str


class VenueFigures(BaseModel):
    venue: str
    matched: int
    counts: dict[str, int]
    orders_cancelled: int
    still_open_after_cancel: list[str]
    unresolved: list[UnresolvedFinding]
    fill_findings: int
    waited_for_cooldown: bool
    # Which fencing layer held the venue (domain/fencing.py); None in runs recorded before
    # plans carried the venues' declared capabilities.
    fencing: str | None = None

    @classmethod
    def of(
        cls, venue: VenueRecoveryReport, capabilities: list[VenueCapability] | None = None
    ) -> VenueFigures:
        cancelled = set(venue.cancelled) - set(venue.still_open_after_cancel)
        return cls(
            venue=venue.venue,
            matched=venue.matched,
            counts=venue.counts,
            orders_cancelled=len(cancelled),
            still_open_after_cancel=venue.still_open_after_cancel,
            unresolved=[
                UnresolvedFinding(
                    client_order_id=f.client_order_id,
                    kind=f.kind.value,
                    symbol=f.symbol,
                    notional=f.notional,
                    detail=f.detail,
                )
                for f in venue.unresolved
            ],
            fill_findings=len(venue.fill_findings),
            waited_for_cooldown=venue.waited_for_cooldown,
            fencing=None
            if capabilities is None
            else fencing_verdict(venue, capabilities).describe(),
        )


class PromotionSummary(BaseModel):
    """A ``PromotionReport``, decoded leniently: a field an old run lacks is simply None."""

    workflow_id: str | None = None
    system: str | None = None
    kind: str | None = None
    planned: bool | None = None
    requested_by: str | None = None
    reason: str | None = None
    outcome: str | None = None
    outcome_detail: str | None = None
    from_region: str | None = None
    to_region: str | None = None
    epoch: int | None = None
    previous_epoch: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    detected_at: datetime | None = None
    rto_s: float | None = None
    lease_to_dns_s: float | None = None
    dns_changed: bool | None = None
    discrepancy_notional: Decimal | None = None
    rto_breakdown: list[StepTiming] = []
    replication_gap: GapFigures | None = None
    venues: list[VenueFigures] = []
    position_discrepancies: list[PositionDiscrepancy] = []
    actions: list[RecordedAction] = []

    @property
    def orders_cancelled(self) -> dict[str, int]:
        return {v.venue: v.orders_cancelled for v in self.venues}


class ObjectiveCheck(BaseModel):
    """One drill objective against what the drill measured; ``met`` is None if unmeasured."""

    name: str
    unit: str
    objective: float
    measured: float | None
    met: bool | None


class FailbackSummary(BaseModel):
    workflow_id: str | None = None
    system: str | None = None
    from_region: str | None = None
    to_region: str | None = None
    outcome: str | None = None
    outcome_detail: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    monitor_following: str | None = None
    steps: list[StepTiming] = []
    resync: GapFigures | None = None
    promotion: PromotionSummary | None = None


class DrillSummary(BaseModel):
    workflow_id: str | None = None
    system: str | None = None
    scenario: str | None = None
    requested_by: str | None = None
    reason: str | None = None
    outcome: str | None = None
    passed: bool | None = None
    reasons: list[str] = []
    started_at: datetime | None = None
    finished_at: datetime | None = None
    objectives: list[ObjectiveCheck] = []
    measured: DrillMeasurements | None = None
    fault: FaultRecord | None = None
    steps: list[StepTiming] = []
    promotion: PromotionSummary | None = None
    failback: FailbackSummary | None = None
    actions: list[RecordedAction] = []


class VerdictChange(BaseModel):
    """A vantage point's verdict on a target changed (a ``watch_target`` result)."""

    at: datetime | None
    vantage: str
    target: str | None = None
    verdict: str
    checks: int | None = None
    last_failure: str | None = None


class ChildRun(BaseModel):
    """A runbook a monitor started, with its outcome when it has one."""

    workflow_type: str
    workflow_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    status: EntryStatus
    outcome: str | None = None
    rto_s: float | None = None


class MonitorSummary(BaseModel):
    verdict_changes: list[VerdictChange] = []
    operator_updates: list[OperatorActionRecord] = []
    promotions: list[ChildRun] = []


class RunReview(BaseModel):
    workflow_id: str
    run_id: str
    workflow_type: str
    status: RunStatus
    task_queue: str
    started_at: datetime
    closed_at: datetime | None = None
    duration_s: float | None = None
    history_events: int
    parent_workflow_id: str | None = None
    continued_as_new_run_id: str | None = None
    # The decoded JSON of the workflow input, result and search attributes.
    input: Any = None
    result: Any = None
    search_attributes: dict[str, Any] = {}
    failure: str | None = None
    timeline: list[TimelineEntry] = []
    operator_actions: list[OperatorActionRecord] = []
    promotion: PromotionSummary | None = None
    drill: DrillSummary | None = None
    failback: FailbackSummary | None = None
    monitor: MonitorSummary | None = None
    # Parts of the history that could not be decoded, said plainly rather than dropped.
    notes: list[str] = []

    @property
    def outcome(self) -> str | None:
        for summary in (self.promotion, self.drill, self.failback):
            if summary is not None and summary.outcome:
                return summary.outcome
        value = self.search_attributes.get(DR_OUTCOME_ATTRIBUTE)
        return str(value) if value is not None else None

    @property
    def ends_at(self) -> datetime:
        """Where the run's chart ends: its close, else the last thing it is known to have done."""
        if self.closed_at is not None:
            return self.closed_at
        moments = [self.started_at]
        for entry in self.timeline:
            moments += [m for m in (entry.scheduled_at, entry.started_at, entry.ended_at) if m]
        moments += [a.at for a in self.operator_actions]
        return max(moments)


# --- decoding results ------------------------------------------------------------------------


def decode_model(model: type[M], raw: Any, what: str, notes: list[str]) -> M | None:
    """``raw`` as ``model``, or None with a note naming ``what`` could not be decoded."""
    if raw is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        notes.append(f"{what}: not a valid {model.__name__} ({_first_error(exc)})")
        return None


def decode_each(model: type[M], raw: Any, what: str, notes: list[str]) -> list[M]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        notes.append(f"{what}: expected a list, got {type(raw).__name__}")
        return []
    decoded = (decode_model(model, item, f"{what}[{i}]", notes) for i, item in enumerate(raw))
    return [item for item in decoded if item is not None]


def decode_fields(
    model: type[M], raw: Mapping[str, Any], fields: Iterable[str], what: str, notes: list[str]
) -> M:
    """``model`` from the named ``fields`` of ``raw``; a field that does not validate is dropped
    (and noted) so that its neighbours survive. ``model`` must default every named field."""
    present = {name: raw[name] for name in fields if name in raw}
    while True:
        try:
            return model.model_validate(present)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]} & present.keys()
            if not bad:
                notes.append(f"{what}: {_first_error(exc)}")
                return model()
            for name in sorted(bad):
                notes.append(f"{what}.{name}: undecodable value {_brief(present.pop(name))}")


def _brief(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


_PROMOTION_FIELDS = (
    "workflow_id",
    "system",
    "kind",
    "planned",
    "requested_by",
    "reason",
    "outcome",
    "outcome_detail",
    "from_region",
    "to_region",
    "epoch",
    "previous_epoch",
    "started_at",
    "finished_at",
    "detected_at",
    "rto_s",
    "lease_to_dns_s",
    "dns_changed",
    "discrepancy_notional",
)


def summarize_promotion(
    raw: Any, notes: list[str], what: str = "result"
) -> PromotionSummary | None:
    """A ``PromotionReport`` (as decoded JSON) summarized; None if it is not one at all."""
    if not isinstance(raw, dict):
        if raw is not None:
            notes.append(f"{what}: not a promotion report")
        return None
    summary = decode_fields(PromotionSummary, raw, _PROMOTION_FIELDS, what, notes)
    steps = decode_each(StepRecord, raw.get("steps"), f"{what}.steps", notes)
    gap = decode_model(ReplicationGap, raw.get("replication_gap"), f"{what}.replication_gap", notes)
    venues = decode_each(VenueRecoveryReport, raw.get("venues"), f"{what}.venues", notes)
    summary.rto_breakdown = [StepTiming.of(s) for s in steps]
    summary.replication_gap = GapFigures.of(gap) if gap else None
    capabilities = _venue_capabilities(
        raw.get("venue_capabilities"), f"{what}.venue_capabilities", notes
    )
    summary.venues = [VenueFigures.of(v, capabilities.get(v.venue)) for v in venues]
    summary.position_discrepancies = decode_each(
        PositionDiscrepancy,
        raw.get("position_discrepancies"),
        f"{what}.position_discrepancies",
        notes,
    )
    summary.actions = decode_each(RecordedAction, raw.get("actions"), f"{what}.actions", notes)
    return summary


_CAPABILITIES: TypeAdapter[dict[str, list[VenueCapability]]] = TypeAdapter(
    dict[str, list[VenueCapability]]
)


def _venue_capabilities(raw: Any, what: str, notes: list[str]) -> dict[str, list[VenueCapability]]:
    """venue -> declared capabilities; absent (an older run) is empty, never an error."""
    if raw is None:
        return {}
    try:
        return _CAPABILITIES.validate_python(raw)
    except ValidationError as exc:
        notes.append(f"{what}: {exc.error_count()} invalid entries; fencing layers not shown")
        return {}


_FAILBACK_FIELDS = (
    "workflow_id",
    "system",
    "from_region",
    "to_region",
    "outcome",
    "outcome_detail",
    "started_at",
    "finished_at",
    "monitor_following",
)


def summarize_failback(raw: Any, notes: list[str], what: str = "result") -> FailbackSummary | None:
    if not isinstance(raw, dict):
        if raw is not None:
            notes.append(f"{what}: not a failback report")
        return None
    summary = decode_fields(FailbackSummary, raw, _FAILBACK_FIELDS, what, notes)
    steps = decode_each(StepRecord, raw.get("steps"), f"{what}.steps", notes)
    resync = decode_model(ReplicationGap, raw.get("resync"), f"{what}.resync", notes)
    summary.steps = [StepTiming.of(s) for s in steps]
    summary.resync = GapFigures.of(resync) if resync else None
    summary.promotion = summarize_promotion(raw.get("promotion"), notes, f"{what}.promotion")
    return summary


_DRILL_FIELDS = (
    "workflow_id",
    "system",
    "scenario",
    "requested_by",
    "reason",
    "outcome",
    "passed",
    "reasons",
    "started_at",
    "finished_at",
)


def summarize_drill(raw: Any, notes: list[str], what: str = "result") -> DrillSummary | None:
    if not isinstance(raw, dict):
        if raw is not None:
            notes.append(f"{what}: not a drill report")
        return None
    summary = decode_fields(DrillSummary, raw, _DRILL_FIELDS, what, notes)
    objectives = decode_model(DrillObjectives, raw.get("objectives"), f"{what}.objectives", notes)
    measured = decode_model(DrillMeasurements, raw.get("measured"), f"{what}.measured", notes)
    summary.measured = measured
    summary.fault = decode_model(FaultRecord, raw.get("fault"), f"{what}.fault", notes)
    if objectives is not None:
        summary.objectives = objective_checks(summary.scenario, objectives, measured)
    steps = decode_each(StepRecord, raw.get("steps"), f"{what}.steps", notes)
    summary.steps = [StepTiming.of(s) for s in steps]
    summary.promotion = summarize_promotion(raw.get("promotion"), notes, f"{what}.promotion")
    summary.failback = summarize_failback(raw.get("failback"), notes, f"{what}.failback")
    summary.actions = decode_each(RecordedAction, raw.get("actions"), f"{what}.actions", notes)
    return summary


def objective_checks(
    scenario: str | None, objectives: DrillObjectives, measured: DrillMeasurements | None
) -> list[ObjectiveCheck]:
    """Each objective beside its measurement. Detection is judged only where a fault was
    injected, as the drill itself judges it."""
    figures = measured or DrillMeasurements()
    rows: list[tuple[str, str, float, float | None]] = []
    if scenario == DrillScenario.KILL_PRIMARY.value:
        rows.append(("detection", "s", objectives.max_detection_s, figures.detection_s))
    rows.append(("RTO", "s", objectives.max_rto_s, figures.rto_s))
    rows.append(
        (
            "replication gap",
            "events",
            float(objectives.max_replication_gap_events),
            None
            if figures.replication_gap_events is None
            else float(figures.replication_gap_events),
        )
    )
    return [
        ObjectiveCheck(
            name=name,
            unit=unit,
            objective=objective,
            measured=value,
            met=None if value is None else value <= objective,
        )
        for name, unit, objective, value in rows
    ]


def summarize_monitor(
    watches: Sequence[tuple[TimelineEntry, Any, Any]],
    operator_actions: Sequence[OperatorActionRecord],
    children: Sequence[tuple[TimelineEntry, Any]],
    notes: list[str],
) -> MonitorSummary:
    """Verdict changes from ``watch_target`` activities (each with its input and result), the
    operator's updates, and the promotions the monitor started. Each watch is labelled with
    who watched what: thirty rows all called ``watch_target`` tell a reader nothing."""
    changes: list[VerdictChange] = []
    for entry, request, result in watches:
        if isinstance(request, dict):
            target = request.get("target")
            name = target.get("name") if isinstance(target, dict) else None
            if request.get("vantage") and name:
                entry.step = f"{request['vantage']} watches {name}"
        if not isinstance(result, dict) or not result.get("changed", True):
            continue
        change = decode_model(
            VerdictChange, {"at": entry.ended_at} | result, "watch_target result", notes
        )
        if change is not None:
            changes.append(change)
    promotions: list[ChildRun] = []
    for entry, result in children:
        if entry.workflow_type != PROMOTION_WORKFLOW:
            continue
        report = summarize_promotion(result, notes, f"child {entry.workflow_id}")
        promotions.append(
            ChildRun(
                workflow_type=entry.workflow_type,
                workflow_id=entry.workflow_id,
                started_at=entry.begins_at,
                ended_at=entry.ended_at,
                status=entry.status,
                outcome=report.outcome if report else None,
                rto_s=report.rto_s if report else None,
            )
        )
    return MonitorSummary(
        verdict_changes=sorted(changes, key=lambda c: (c.at is None, c.at)),
        operator_updates=[a for a in operator_actions if a.name in MONITOR_OPERATOR_UPDATES],
        promotions=promotions,
    )


def label_steps(timeline: Sequence[TimelineEntry], steps: Sequence[StepTiming]) -> None:
    """Name the runbook step each activity, child workflow and timer was started in: the
    shortest recorded step whose span contains its start. A step begins at its workflow task's
    time and the command it issues is recorded when that task completes, so the start falls
    inside its step; an entry started between steps (a notification) keeps no label. Updates
    and signals are the operator's, not a step's, and are never labelled."""
    spans = [
        (s.started_at - _STEP_CLOCK_SLACK, s.ended_at + _STEP_CLOCK_SLACK, s)
        for s in steps
        if s.started_at and s.ended_at and s.ended_at > s.started_at
    ]
    for entry in timeline:
        begins = entry.begins_at
        if entry.kind in (EntryKind.UPDATE, EntryKind.SIGNAL) or begins is None:
            continue
        containing = [step for start, end, step in spans if start <= begins <= end]
        if containing:
            # Steps run side by side (a promotion's venues, its database steps): one named
            # for the entry wins over the shortest that merely overlaps it.
            entry.step = min(
                containing,
                key=lambda s: (not _named_for(s.name, entry), "/" not in s.name, s.duration_s or 0),
            ).name


def _named_for(step: str, entry: TimelineEntry) -> bool:
    """``verify_positions/gamma`` for a verify_positions activity, ``venue_recovery/gamma`` for
    the gamma VenueRecovery child; ``plan`` for none of them."""
    kind, _, venue = step.partition("/")
    if entry.kind is EntryKind.CHILD_WORKFLOW:
        named = kind == _snake(entry.workflow_type or "")
        return named and (not venue or f"/venue/{venue}/" in (entry.workflow_id or ""))
    return kind == entry.name


def _snake(name: str) -> str:
    """``VenueRecovery`` -> ``venue_recovery``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def summarize_result(review: RunReview, notes: list[str]) -> None:
    """Fill the typed summary of a known workflow type from its decoded result."""
    if review.workflow_type == PROMOTION_WORKFLOW:
        review.promotion = summarize_promotion(review.result, notes)
        steps = review.promotion.rto_breakdown if review.promotion else []
    elif review.workflow_type == DRILL_WORKFLOW:
        review.drill = summarize_drill(review.result, notes)
        steps = review.drill.steps if review.drill else []
    elif review.workflow_type == FAILBACK_WORKFLOW:
        review.failback = summarize_failback(review.result, notes)
        steps = review.failback.steps if review.failback else []
    else:
        steps = []
    label_steps(review.timeline, steps)
