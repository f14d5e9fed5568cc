"""The promotion runbook's vocabulary: its request, its plan, operator actions and its report.

Every model here crosses a Temporal boundary (workflow input, update, query, activity result),
so each is one pydantic model whose fields can grow without breaking callers. None holds a secret.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.lease import LeaseRecord
from domain.reconciliation import FillFinding, OrderFinding, PositionDiscrepancy

Identity = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
SystemName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Comment = Annotated[str, Field(max_length=500)]

PROMOTION_WORKFLOW = "Promotion"
VENUE_RECOVERY_WORKFLOW = "VenueRecovery"


def promotion_workflow_id(system: str) -> str:
    """Fixed per system: two triggers can never run two promotions of one system."""
    return f"dr-promotion/{system}"


def region_task_queue(region: str) -> str:
    return f"region-{region}"


class DrKind(StrEnum):
    INCIDENT = "incident"
    PLANNED = "planned"
    DRILL = "drill"


class DrOutcome(StrEnum):
    RUNNING = "running"
    PROMOTED = "promoted"
    HELD_REDUCE_ONLY = "held_reduce_only"
    REFUSED = "refused"
    ABORTED = "aborted"
    # Drills only: the runbooks worked and met the drill's objectives, or did not.
    PASSED = "passed"
    FAILED = "failed"


class _Boundary(BaseModel):
    # Inputs typed into the Temporal UI must fail loudly on a misspelt field.
    model_config = ConfigDict(extra="forbid")


class PromotionRequest(_Boundary):
    """Start a promotion. ``{"system": "lab", "requested_by": "alice"}`` is a complete input."""

    system: SystemName
    requested_by: Identity
    planned: bool = False
    reason: Comment = ""
    kind: DrKind | None = None
    to_region: SystemName | None = None
    detected_at: datetime | None = None

    @property
    def dr_kind(self) -> DrKind:
        if self.kind is not None:
            return self.kind
        return DrKind.PLANNED if self.planned else DrKind.INCIDENT


class PromotionPlan(BaseModel):
    """What the topology says about this promotion, resolved once and kept in the history."""

    system: str
    production: bool
    from_region: str
    to_region: str
    from_oms_url: str
    to_oms_url: str
    venues: list[str]
    member: str
    discrepancy_tolerance_notional: Decimal
    fill_lookback_margin_s: float
    approval_timeout_s: float
    decision_timeout_s: float
    sync_timeout_s: float
    confirmation_count: int
    probe_interval_s: float
    lease_ttl_s: float
    ui_url: str
    # Which weighted record gets weight 100 once promoted: "dr" or "primary".
    dns_active: Literal["primary", "dr"]

    @property
    def task_queue(self) -> str:
        """Every step runs where the promotion lands: nothing may need the failed region."""
        return region_task_queue(self.to_region)


# --- activity results -----------------------------------------------------------------------


class Attempted(BaseModel):
    """Activity results carry the attempt that produced them, for the per-step audit."""

    attempt: int = 1


class ProbeObservation(BaseModel):
    at: datetime
    ok: bool
    latency_ms: float | None
    detail: str


class PrimaryConfirmation(Attempted):
    down: bool
    observations: list[ProbeObservation]

    @property
    def summary(self) -> str:
        failed = sum(1 for o in self.observations if not o.ok)
        return f"{failed}/{len(self.observations)} probes failed"


class LeaseGrant(Attempted):
    epoch: int
    region: str
    previous_region: str | None
    previous_expires_at: datetime | None

    @classmethod
    def from_record(cls, record: LeaseRecord, attempt: int) -> LeaseGrant:
        return cls(
            epoch=record.epoch,
            region=record.region,
            previous_region=record.previous_region,
            previous_expires_at=record.previous_expires_at,
            attempt=attempt,
        )


class FenceOutcome(Attempted):
    confirmed: bool
    detail: str


class ReplicationGap(Attempted):
    """How far behind DR was, and whether it caught up with the stream."""

    stream_last_seq: int
    applied_before: int
    applied_after: int
    lag_before_s: float | None

    @property
    def gap_events(self) -> int:
        return max(self.stream_last_seq - self.applied_after, 0)

    @property
    def behind_before(self) -> int:
        return max(self.stream_last_seq - self.applied_before, 0)


class ControlOutcome(Attempted):
    trading_state: str
    epoch: int


class VenueSessionGrant(Attempted):
    venue: str
    session_id: str
    waited_for_cooldown: bool


class CancelOutcome(Attempted):
    venue: str
    outcomes: dict[str, str]


class PositionCheck(Attempted):
    discrepancies: list[PositionDiscrepancy]
    positions: dict[str, int]
    rounds: int


# --- operator actions -----------------------------------------------------------------------


class Approval(_Boundary):
    approver: Identity
    comment: Comment = ""


class Decision(_Boundary):
    action: Literal["accept", "abort"]
    by: Identity
    comment: Comment = ""


class Resolution(_Boundary):
    """After a step failed for good: try it again, or stop here (the system stays fenced)."""

    action: Literal["retry", "abort"]
    by: Identity
    comment: Comment = ""


class RecordedAction(BaseModel):
    kind: Literal["approval", "decision", "resolution"]
    by: str
    action: str
    comment: str
    at: datetime


# --- progress and report --------------------------------------------------------------------


class StepRecord(BaseModel):
    name: str
    started_at: datetime
    ended_at: datetime | None = None
    attempts: int = 0
    status: Literal["running", "completed", "failed", "skipped"] = "running"
    detail: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class VenueRecoveryRequest(BaseModel):
    system: str
    venue: str
    member: str
    new_epoch: int
    takeover_at: datetime
    fills_since: datetime
    dr_oms_url: str


class VenueRecoveryReport(BaseModel):
    """One venue's recovery. Matched orders are only counted: the history must stay small
    enough for a venue with thousands of open orders (Temporal caps a payload at 2 MB)."""

    venue: str
    new_epoch: int
    waited_for_cooldown: bool
    # Defaulted so that histories recorded before it existed still decode on replay.
    matched: int = 0
    findings: list[OrderFinding]
    fill_findings: list[FillFinding]
    cancelled: list[str]
    still_open_after_cancel: list[str]
    steps: list[StepRecord]

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {"matched": self.matched} if self.matched else {}
        for finding in self.findings:
            out[finding.kind.value] = out.get(finding.kind.value, 0) + 1
        return out

    @property
    def unresolved(self) -> list[OrderFinding]:
        """Findings an operator must look at: everything but matches and confirmed cancels."""
        cancelled = set(self.cancelled) - set(self.still_open_after_cancel)
        return [
            f
            for f in self.findings
            if f.kind.value != "matched" and f.client_order_id not in cancelled
        ]


class PromotionProgress(BaseModel):
    workflow_id: str
    system: str
    kind: DrKind
    outcome: DrOutcome
    current_step: str | None
    waiting_for: str | None
    epoch: int | None
    steps: list[StepRecord]


class PromotionReport(BaseModel):
    workflow_id: str
    system: str
    kind: DrKind
    planned: bool
    requested_by: str
    reason: str
    outcome: DrOutcome
    outcome_detail: str
    from_region: str
    to_region: str
    epoch: int | None
    previous_epoch: int | None
    started_at: datetime
    finished_at: datetime
    detected_at: datetime | None
    rto_s: float | None
    lease_to_dns_s: float | None
    steps: list[StepRecord]
    confirmation: PrimaryConfirmation | None
    fence: FenceOutcome | None
    replication_gap: ReplicationGap | None
    venues: list[VenueRecoveryReport]
    position_discrepancies: list[PositionDiscrepancy]
    discrepancy_notional: Decimal
    actions: list[RecordedAction]
    dns_changed: bool | None
    ui_url: str

    @property
    def orders_cancelled(self) -> dict[str, int]:
        return {
            v.venue: len(set(v.cancelled) - set(v.still_open_after_cancel)) for v in self.venues
        }

    def brief(self) -> dict[str, object]:
        """What an alert carries: the outcome and its figures, not every finding."""
        return {
            "workflow_id": self.workflow_id,
            "system": self.system,
            "kind": self.kind.value,
            "outcome": self.outcome.value,
            "outcome_detail": self.outcome_detail,
            "from_region": self.from_region,
            "to_region": self.to_region,
            "epoch": self.epoch,
            "previous_epoch": self.previous_epoch,
            "rto_s": self.rto_s,
            "lease_to_dns_s": self.lease_to_dns_s,
            "replication_gap_events": self.replication_gap.gap_events
            if self.replication_gap
            else None,
            "orders_cancelled": self.orders_cancelled,
            "discrepancies": {v.venue: v.counts for v in self.venues},
            "discrepancy_notional": str(self.discrepancy_notional),
            "position_discrepancies": len(self.position_discrepancies),
            "actions": [f"{a.kind} {a.action} by {a.by}" for a in self.actions],
            "steps": {s.name: s.duration_s for s in self.steps},
            "ui_url": self.ui_url,
        }

    def summary_lines(self) -> list[str]:
        lines = [
            f"promotion of {self.system}: {self.outcome.value} ({self.outcome_detail})",
            f"  {self.from_region} -> {self.to_region}, epoch {self.previous_epoch} -> "
            f"{self.epoch}",
        ]
        if self.rto_s is not None:
            lines.append(f"  RTO {self.rto_s:.2f} s; lease to DNS in sync {self.lease_to_dns_s} s")
        if self.replication_gap is not None:
            gap = self.replication_gap
            lines.append(
                f"  replication: DR was {gap.behind_before} event(s) behind, "
                f"{gap.gap_events} missing after sync"
            )
        for venue in self.venues:
            lines.append(
                f"  {venue.venue}: {venue.counts} cancelled {self.orders_cancelled[venue.venue]}"
            )
        for step in self.steps:
            took = f"{step.duration_s:.3f} s" if step.duration_s is not None else "-"
            lines.append(f"    {step.name:<24} {step.status:<9} {took:>10}  x{step.attempts}")
        return lines
