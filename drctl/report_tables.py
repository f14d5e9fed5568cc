"""The sections of a review report as plain tables, shared by the Markdown and HTML renderers
so that both always carry the same facts in the same order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.review import (
    DrillSummary,
    FailbackSummary,
    GapFigures,
    MonitorSummary,
    PromotionSummary,
    RunReview,
    StepTiming,
)

NONE = "-"


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]] = ()
    # Said instead of an empty table.
    empty: str = "none"
    # A key/value table reads as a list of facts; the renderers may style it so.
    facts: bool = False


def when(moment: datetime | None) -> str:
    if moment is None:
        return NONE
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def seconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.3f} s"


def offset(moment: datetime | None, origin: datetime) -> str:
    """A moment as seconds from the run's start, the time axis of the whole report."""
    return NONE if moment is None else f"+{(moment - origin).total_seconds():.3f} s"


def text(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or NONE
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or NONE
    return str(value)


def _facts(title: str, pairs: Iterable[tuple[str, Any]]) -> Table:
    return Table(title, ("", ""), [(k, text(v)) for k, v in pairs], facts=True)


def report_tables(review: RunReview) -> list[Table]:
    tables = [_run_table(review)]
    if review.promotion is not None:
        tables += promotion_tables(review.promotion, review.started_at, "")
    if review.drill is not None:
        tables += _drill_tables(review.drill, review.started_at)
    if review.failback is not None:
        tables += _failback_tables(review.failback, review.started_at, "")
    if review.monitor is not None:
        tables += _monitor_tables(review.monitor, review.started_at)
    tables.append(_operator_actions_table(review))
    tables.append(_failures_table(review))
    tables.append(_timeline_table(review))
    if review.notes:
        tables.append(Table("Notes", ("what could not be decoded",), [(n,) for n in review.notes]))
    return tables


def _run_table(review: RunReview) -> Table:
    return _facts(
        "Run",
        [
            ("workflow", review.workflow_id),
            ("run", review.run_id),
            ("type", review.workflow_type),
            ("status", review.status.value),
            ("outcome", review.outcome),
            ("task queue", review.task_queue),
            ("started", when(review.started_at)),
            ("closed", when(review.closed_at)),
            ("duration", seconds(review.duration_s)),
            ("history events", review.history_events),
            ("parent workflow", review.parent_workflow_id),
            ("continued as new in run", review.continued_as_new_run_id),
            *((f"search attribute {k}", v) for k, v in review.search_attributes.items()),
            ("failure", review.failure),
        ],
    )


def promotion_tables(summary: PromotionSummary, origin: datetime, prefix: str) -> list[Table]:
    epochs = f"{text(summary.previous_epoch)} -> {text(summary.epoch)}"
    tables = [
        _facts(
            f"{prefix}Promotion",
            [
                ("system", summary.system),
                ("kind", summary.kind),
                ("outcome", summary.outcome),
                ("detail", summary.outcome_detail),
                ("requested by", summary.requested_by),
                ("reason", summary.reason),
                ("regions", f"{text(summary.from_region)} -> {text(summary.to_region)}"),
                ("epoch", epochs),
                ("detected", when(summary.detected_at)),
                ("RTO", seconds(summary.rto_s)),
                ("lease to DNS in sync", seconds(summary.lease_to_dns_s)),
                ("DNS changed", summary.dns_changed),
                ("discrepancy notional", summary.discrepancy_notional),
            ],
        ),
        _steps_table(f"{prefix}RTO breakdown", summary.rto_breakdown, origin),
        _gap_table(f"{prefix}Replication gap", summary.replication_gap),
        Table(
            f"{prefix}Venues",
            (
                "venue",
                "orders cancelled",
                "discrepancies",
                "unresolved",
                "fill findings",
                "still open after cancel",
                "waited for cooldown",
                "fencing layer held",
            ),
            [
                (
                    v.venue,
                    str(v.orders_cancelled),
                    text(v.counts) if v.counts else "none",
                    str(len(v.unresolved)),
                    str(v.fill_findings),
                    text(v.still_open_after_cancel),
                    text(v.waited_for_cooldown),
                    text(v.fencing),
                )
                for v in summary.venues
            ],
        ),
    ]
    unresolved = [(v.venue, f) for v in summary.venues for f in v.unresolved]
    if unresolved:
        tables.append(
            Table(
                f"{prefix}Unresolved findings",
                ("venue", "client order id", "kind", "symbol", "notional", "detail"),
                [
                    (venue, f.client_order_id, f.kind, f.symbol, str(f.notional), f.detail)
                    for venue, f in unresolved
                ],
            )
        )
    if summary.position_discrepancies:
        tables.append(
            Table(
                f"{prefix}Position discrepancies",
                ("symbol", "book qty", "recomputed qty", "difference", "notional"),
                [
                    (
                        p.symbol,
                        str(p.book_qty),
                        str(p.recomputed_qty),
                        str(p.difference),
                        f"{p.notional}{' (no price known)' if p.inferred_price else ''}",
                    )
                    for p in summary.position_discrepancies
                ],
            )
        )
    tables.append(
        Table(
            f"{prefix}Approvals and decisions",
            ("kind", "action", "by", "comment", "at"),
            [(a.kind, a.action, a.by, text(a.comment), when(a.at)) for a in summary.actions],
        )
    )
    return tables


def _steps_table(title: str, steps: list[StepTiming], origin: datetime) -> Table:
    return Table(
        title,
        ("step", "status", "started", "duration", "attempts", "detail"),
        [
            (
                s.name,
                s.status,
                offset(s.started_at, origin),
                seconds(s.duration_s),
                str(s.attempts),
                text(s.detail),
            )
            for s in steps
        ],
    )


def _gap_table(title: str, gap: GapFigures | None) -> Table:
    if gap is None:
        return Table(title, ("", ""), empty="not recorded", facts=True)
    return _facts(
        title,
        [
            ("stream last sequence", gap.stream_last_seq),
            ("applied before sync", gap.applied_before),
            ("applied after sync", gap.applied_after),
            ("events behind before sync", gap.behind_before),
            ("events missing after sync (gap)", gap.gap_events),
            ("lag before sync", seconds(gap.lag_before_s)),
        ],
    )


def _drill_tables(summary: DrillSummary, origin: datetime) -> list[Table]:
    verdict = {True: "PASSED", False: "FAILED", None: NONE}[summary.passed]
    tables = [
        _facts(
            "Drill",
            [
                ("verdict", verdict),
                ("system", summary.system),
                ("scenario", summary.scenario),
                ("outcome", summary.outcome),
                ("requested by", summary.requested_by),
                ("reason", summary.reason),
                ("started", when(summary.started_at)),
                ("finished", when(summary.finished_at)),
            ],
        ),
        Table(
            "Reasons for the verdict",
            ("reason",),
            [(r,) for r in summary.reasons],
            empty="nothing: every objective was met",
        ),
        Table(
            "Objectives",
            ("objective", "limit", "measured", "met"),
            [
                (
                    c.name,
                    f"{c.objective:g} {c.unit}",
                    NONE if c.measured is None else f"{c.measured:g} {c.unit}",
                    text(c.met) if c.met is not None else "not measured",
                )
                for c in summary.objectives
            ],
        ),
    ]
    if summary.fault is not None:
        fault = summary.fault
        tables.append(
            _facts(
                "Fault injected",
                [
                    ("action", fault.action),
                    ("target", fault.target),
                    ("at", when(fault.at)),
                    ("detail", fault.detail),
                ],
            )
        )
    tables.append(_steps_table("Drill steps", summary.steps, origin))
    if summary.promotion is not None:
        tables += promotion_tables(summary.promotion, origin, "Drill promotion: ")
    if summary.failback is not None:
        tables += _failback_tables(summary.failback, origin, "Drill ")
    tables.append(
        Table(
            "Drill approvals and decisions",
            ("kind", "action", "by", "comment", "at"),
            [(a.kind, a.action, a.by, text(a.comment), when(a.at)) for a in summary.actions],
        )
    )
    return tables


def _failback_tables(summary: FailbackSummary, origin: datetime, prefix: str) -> list[Table]:
    tables = [
        _facts(
            f"{prefix}Failback",
            [
                ("system", summary.system),
                ("outcome", summary.outcome),
                ("detail", summary.outcome_detail),
                ("regions", f"{text(summary.from_region)} -> {text(summary.to_region)}"),
                ("started", when(summary.started_at)),
                ("finished", when(summary.finished_at)),
                ("monitor following", summary.monitor_following),
            ],
        ),
        _steps_table(f"{prefix}Failback steps", summary.steps, origin),
        _gap_table(f"{prefix}Failback resync", summary.resync),
    ]
    if summary.promotion is not None:
        tables += promotion_tables(summary.promotion, origin, f"{prefix}Failback promotion: ")
    return tables


def _monitor_tables(summary: MonitorSummary, origin: datetime) -> list[Table]:
    return [
        Table(
            "Verdict changes",
            ("at", "vantage", "target", "verdict", "checks", "last failure"),
            [
                (
                    offset(c.at, origin),
                    c.vantage,
                    text(c.target),
                    c.verdict,
                    text(c.checks),
                    text(c.last_failure),
                )
                for c in summary.verdict_changes
            ],
        ),
        Table(
            "Promotions started",
            ("workflow", "started", "ended", "status", "outcome", "RTO"),
            [
                (
                    text(p.workflow_id),
                    offset(p.started_at, origin),
                    offset(p.ended_at, origin),
                    p.status.value,
                    text(p.outcome),
                    seconds(p.rto_s),
                )
                for p in summary.promotions
            ],
        ),
    ]


def _operator_actions_table(review: RunReview) -> Table:
    rows = []
    for a in review.operator_actions:
        if not a.accepted:
            outcome = f"rejected: {a.failure}"
        elif a.failure:
            outcome = f"failed: {a.failure}"
        else:
            outcome = text(a.result)
        rows.append(
            (
                offset(a.at, review.started_at),
                a.kind,
                a.name,
                text(a.by),
                a.identity,
                text(a.action),
                text(a.comment),
                outcome,
            )
        )
    return Table(
        "Operator actions",
        ("at", "kind", "name", "by", "client identity", "action", "comment", "outcome"),
        rows,
    )


def _failures_table(review: RunReview) -> Table:
    rows = [("run", review.failure)] if review.failure else []
    rows += [(entry.label, message) for entry in review.timeline for message in entry.failures]
    return Table("Failures", ("where", "message"), rows)


def _timeline_table(review: RunReview) -> Table:
    origin = review.started_at
    return Table(
        "Timeline",
        ("kind", "name", "scheduled", "started", "ended", "duration", "attempts", "status"),
        [
            (
                e.kind.value,
                e.label,
                offset(e.scheduled_at, origin),
                offset(e.started_at, origin),
                offset(e.ended_at, origin),
                seconds(e.duration_s),
                str(e.attempts),
                e.status.value,
            )
            for e in review.timeline
        ],
    )
