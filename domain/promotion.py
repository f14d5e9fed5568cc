"""The promotion runbook's vocabulary: its request, its plan, operator actions and its report.

Every model here crosses a Temporal boundary (workflow input, update, query, activity result),
so each is one pydantic model whose fields can grow without breaking callers. None holds a secret.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from domain.database import DbFence, DbPromotion, DbStateSummary, ReplicaLag
from domain.fencing import fencing_verdict
from domain.lease import LeaseRecord
from domain.reconciliation import FillFinding, OrderFinding, PositionDiscrepancy
from domain.topology import Name
from domain.venues import VenueCapability

Identity = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Comment = Annotated[str, Field(max_length=500)]

PROMOTION_WORKFLOW = "Promotion"
VENUE_RECOVERY_WORKFLOW = "VenueRecovery"


# Every runbook sets these (all Keyword) so past runs are found for review (`drctl incidents`).
# The one list of their names: the lab registers them, workflows/steps.py builds their keys.
DR_SYSTEM_ATTRIBUTE = "DrSystem"
DR_KIND_ATTRIBUTE = "DrKind"
DR_OUTCOME_ATTRIBUTE = "DrOutcome"
DR_SEARCH_ATTRIBUTES = (DR_SYSTEM_ATTRIBUTE, DR_KIND_ATTRIBUTE, DR_OUTCOME_ATTRIBUTE)


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


class VantageVerdict(_Boundary):
    """What one vantage point saw of the primary when the monitor decided."""

    vantage: Name
    region: Name
    verdict: Literal["healthy", "degraded", "down", "unknown"]
    at: datetime
    detail: Comment = ""


class MonitorEvidence(_Boundary):
    """The quorum a SystemMonitor promoted on. Handed to the promotion, it *is* the
    confirmation step: the primary is not probed again (the issue-14 no-re-confirmation rule).
    A manual ``drctl failover`` has none and confirms by probing from DR."""

    monitor_workflow_id: Annotated[str, Field(min_length=1, max_length=256)]
    decided_at: datetime
    quorum: Annotated[int, Field(ge=1)]
    verdicts: Annotated[list[VantageVerdict], Field(min_length=1)]

    @property
    def down_votes(self) -> int:
        return sum(1 for v in self.verdicts if v.verdict == "down")

    def shortfall(self) -> str | None:
        """Why this evidence cannot stand as the confirmation, or None when it can: fewer
        distinct vantage points saw the primary down than the monitor's own quorum."""
        down = {v.vantage for v in self.verdicts if v.verdict == "down"}
        if len(down) < self.quorum:
            return f"{len(down)} vantage point(s) saw the primary down, the quorum is {self.quorum}"
        return None

    def sentence(self) -> str:
        """What the confirmation step records: who saw what, when."""
        seen = "; ".join(
            f"{v.vantage} ({v.region}) {v.verdict} at {_clock(v.at)}"
            + (f": {v.detail}" if v.detail else "")
            for v in self.verdicts
        )
        return (
            f"monitor {self.monitor_workflow_id} decided at {self.decided_at:%H:%M:%S}: "
            f"{self.down_votes} of {len(self.verdicts)} vantage points saw the primary down "
            f"(quorum {self.quorum}); {seen}"
        )


def _clock(at: datetime) -> str:
    return f"{at:%H:%M:%S}.{at.microsecond // 1000:03d}"


class PromotionRequest(_Boundary):
    """Start a promotion. ``{"system": "lab", "requested_by": "alice"}`` is a complete input."""

    system: Name
    requested_by: Identity
    planned: bool = False
    reason: Comment = ""
    kind: DrKind | None = None
    to_region: Name | None = None
    detected_at: datetime | None = None
    # Set by the SystemMonitor: its quorum stands as the confirmation that the primary is down.
    evidence: MonitorEvidence | None = None
    # Set by the SystemMonitor when it promotes while the target region is not ready (stream or
    # database lag beyond the topology's bounds, or not measurable): the promotion still fences
    # the primary, but must not release trading before an operator decides at its gate.
    dr_not_ready_reason: Comment | None = None

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
    # Who we are at each venue (its ``account``). Plans recorded before per-venue accounts
    # carry one ``member`` for all venues instead; both decode, ``account_at`` reads either.
    accounts: dict[str, str] = Field(default_factory=dict)
    member: str | None = None
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

    # Venues whose dialect reads only inside a session (see VenueConfig.session_bound_reads).
    # Absent from plans recorded before it existed: those venues all read without a session.
    session_bound_reads: list[str] = Field(default_factory=list)
    # The task queue the plan was loaded on, that is where the promotion itself runs (the plan
    # is a local activity): recorded so that a replay, whose queue is its own, decides the same.
    loaded_on: str | None = None
    # The system has a [systems.database]: the promotion checks, fences and promotes it.
    # Absent from plans recorded before the database steps existed.
    has_database: bool = False

    @property
    def direction(self) -> Literal["failover", "failback"]:
        """Which database is promoted: the DR replica, or (failback) the primary site's."""
        return "failover" if self.dns_active == "dr" else "failback"

    # What each venue's adapter declares (read from the adapter class, without connecting):
    # the report says from it which fencing layer held each venue. Absent from plans recorded
    # before it existed; a venue missing here is "not recorded", never "none declared".
    venue_capabilities: dict[str, list[VenueCapability]] = Field(default_factory=dict)

    def account_at(self, venue: str) -> str:
        return self.accounts.get(venue) or self.member or self.system

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
    # Set when the SystemMonitor's quorum was the confirmation (no probe was sent from DR).
    evidence: MonitorEvidence | None = None

    @classmethod
    def from_evidence(cls, evidence: MonitorEvidence) -> PrimaryConfirmation:
        """The monitor's verdicts, one observation per vantage point."""
        return cls(
            down=True,
            observations=[
                ProbeObservation(
                    at=v.at,
                    ok=v.verdict != "down",
                    latency_ms=None,
                    detail=f"{v.vantage} ({v.region}): {v.verdict}"
                    + (f": {v.detail}" if v.detail else ""),
                )
                for v in evidence.verdicts
            ],
            evidence=evidence,
            attempt=0,
        )

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
    # What the DR OMS loaded from the promoted database in the same sync (None: no database,
    # or a sync from before the DR-control protocol covered the database).
    database_loaded: DbStateSummary | None = None

    @property
    def gap_events(self) -> int:
        return max(self.stream_last_seq - self.applied_after, 0)

    @property
    def behind_before(self) -> int:
        return max(self.stream_last_seq - self.applied_before, 0)


class DatabaseGap(BaseModel):
    """The database beside the stream: how far the DR replica was behind when the promotion
    checked it (``lag``: bytes received but not replayed, seconds, and bytes the primary wrote
    that never arrived when it could still say), against the system's maxima, and what the
    promotion then did to it."""

    lag: ReplicaLag
    max_lag_bytes: int
    max_lag_s: float
    beyond_maximum: str | None = None
    # Who accepted promoting a replica further behind than the maxima (the data loss).
    data_loss_accepted_by: str | None = None
    fence: DbFence | None = None
    promotion: DbPromotion | None = None
    loaded: DbStateSummary | None = None

    def sentence(self) -> str:
        lag = self.lag
        behind = f"{plural(lag.bytes, 'byte')} / {lag.seconds:.1f} s behind"
        if lag.unreceived_bytes:
            behind += f", {plural(lag.unreceived_bytes, 'byte')} never received"
        out = f"the DR replica was {behind}"
        if self.beyond_maximum:
            who = self.data_loss_accepted_by
            out += f" (beyond the maximum; {'accepted by ' + who if who else 'not accepted'})"
        if self.promotion is not None:
            promoted = self.promotion
            out += (
                "; already promoted"
                if promoted.already_primary
                else f"; promoted at epoch {promoted.epoch} (timeline {promoted.timeline})"
            )
        if self.fence is not None:
            out += (
                "; old primary fenced"
                if self.fence.fenced_at_primary
                else "; old primary unreachable"
            )
        return out + "."


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
    # Runs recorded before per-venue accounts called it ``member``; both decode.
    account: Annotated[str, Field(validation_alias=AliasChoices("account", "member"))]
    new_epoch: int
    takeover_at: datetime
    fills_since: datetime
    dr_oms_url: str
    # The venue reads only inside a session it holds one of per account: log on first, then
    # reconcile, never both at once. Absent from runs recorded before it existed.
    session_bound_reads: bool = False


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
    # From the plan (see PromotionPlan.venue_capabilities); empty in runs recorded before it.
    venue_capabilities: dict[str, list[VenueCapability]] = Field(default_factory=dict)
    # Per-venue release: from the same origin as ``rto_s`` to each venue trading at DR.
    # Absent (empty) in reports of runs that released every venue at once.
    venue_rto_s: dict[str, float] = Field(default_factory=dict)
    first_venue_rto_s: float | None = None
    last_venue_rto_s: float | None = None
    # Venues left reduce-only (above tolerance, no operator acceptance).
    held_venues: list[str] = Field(default_factory=list)
    # None: no database configured (its steps are recorded as skipped), or not reached.
    database: DatabaseGap | None = None

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
            "venue_rto_s": self.venue_rto_s,
            "held_venues": self.held_venues,
            "database_lag_bytes": self.database.lag.bytes if self.database else None,
            "database_lag_s": self.database.lag.seconds if self.database else None,
            "discrepancies": {v.venue: v.counts for v in self.venues},
            "discrepancy_notional": str(self.discrepancy_notional),
            "position_discrepancies": len(self.position_discrepancies),
            "actions": [f"{a.kind} {a.action} by {a.by}" for a in self.actions],
            "steps": {s.name: s.duration_s for s in self.steps},
            "ui_url": self.ui_url,
        }

    def summary_lines(self) -> list[str]:
        """The report for a person: every line a sentence, never a Python repr."""
        lines = [f"promotion of {self.system}: {self.outcome.value} ({self.outcome_detail})"]
        if self.epoch is None:
            lines.append(f"  {self.from_region} to {self.to_region}; the lease did not move.")
        else:
            lines.append(
                f"  {self.from_region} to {self.to_region}; lease epoch "
                f"{_or_none(self.previous_epoch)} -> {self.epoch}."
            )
        if self.rto_s is not None:
            dns = (
                f"DNS in sync {self.lease_to_dns_s:.2f} s after the lease moved"
                if self.lease_to_dns_s is not None
                else "DNS not changed"
            )
            lines.append(f"  RTO {self.rto_s:.2f} s; {dns}.")
        if self.venue_rto_s:
            each = ", ".join(f"{venue} {s:.2f} s" for venue, s in self.venue_rto_s.items())
            lines.append(
                f"  trading released per venue: {each} (first {self.first_venue_rto_s:.2f} s, "
                f"last {self.last_venue_rto_s:.2f} s)."
            )
        if self.held_venues:
            lines.append(f"  held reduce-only: {', '.join(self.held_venues)}.")
        if self.replication_gap is not None:
            lines.append(f"  replication: {replication_sentence(self.replication_gap)}")
        if self.database is not None:
            lines.append(f"  database: {self.database.sentence()}")
        for venue in self.venues:
            capabilities = self.venue_capabilities.get(venue.venue)
            lines.append(f"  {venue.venue}: {venue_sentence(venue, capabilities)}")
        if self.position_discrepancies:
            count = len(self.position_discrepancies)
            lines.append(
                f"  positions: {plural(count, 'symbol')} {'differs' if count == 1 else 'differ'}"
                f" from the venues' fills (notional {self.discrepancy_notional}; see report)."
            )
        lines += [f"    {step_line(step)}" for step in self.steps]
        return lines


# --- sentences for people -------------------------------------------------------------------

# How each finding kind reads in a sentence; unknown kinds read as their value.
_FINDING_WORDS = {
    "drift": "drift",
    "missing_at_venue": "missing at the venue",
    "ghost": "ghost",
    "old_epoch": "old-epoch",
}


def plural(count: int, noun: str) -> str:
    """``1 order``, ``1,000 orders``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _or_none(value: object) -> str:
    return "none" if value is None else str(value)


def replication_sentence(gap: ReplicationGap) -> str:
    behind = gap.behind_before
    before = "DR was in step" if behind == 0 else f"DR was {plural(behind, 'event')} behind"
    if gap.gap_events == 0:
        return f"{before}; nothing missing after sync."
    return f"{before}; {plural(gap.gap_events, 'event')} still missing after sync."


def venue_sentence(
    venue: VenueRecoveryReport, capabilities: Collection[VenueCapability] | None = None
) -> str:
    """``2 ghost orders cancelled and confirmed gone; 1,000 matched.``, then which fencing layer
    held the venue when its declared ``capabilities`` are known (None: not recorded)."""
    kinds: dict[str, int] = {}
    for finding in venue.findings:
        kinds[finding.kind.value] = kinds.get(finding.kind.value, 0) + 1
    gone = set(venue.cancelled) - set(venue.still_open_after_cancel)
    by_id = {f.client_order_id: f.kind.value for f in venue.findings}
    cancelled_kinds: dict[str, int] = {}
    for order_id in sorted(gone):
        kind = by_id.get(order_id, "unknown")
        cancelled_kinds[kind] = cancelled_kinds.get(kind, 0) + 1
    if cancelled_kinds:
        what = " and ".join(
            plural(n, f"{_FINDING_WORDS.get(kind, kind)} order")
            for kind, n in sorted(cancelled_kinds.items())
        )
        action = f"{what} cancelled and confirmed gone"
    else:
        action = "nothing to cancel" if not venue.cancelled else "no cancel confirmed"
    if venue.still_open_after_cancel:
        action += (
            f", but {plural(len(venue.still_open_after_cancel), 'order')} still open "
            "after cancelling"
        )
    # Cancelled ghosts and old-epoch orders are told above; every other finding is counted.
    for kind, n in cancelled_kinds.items():
        kinds[kind] = kinds.get(kind, 0) - n
    figures = [f"{venue.matched:,} matched"] if venue.matched else []
    figures += [
        f"{n:,} {_FINDING_WORDS.get(kind, kind)}"
        for kind, n in sorted(kinds.items())
        if n > 0 and kind != "matched"
    ]
    fill_kinds: dict[str, int] = {}
    for fill in venue.fill_findings:
        fill_kinds[fill.kind] = fill_kinds.get(fill.kind, 0) + 1
    figures += [plural(n, f"{kind} fill") for kind, n in sorted(fill_kinds.items())]
    fills = len(venue.fill_findings)
    look = venue.unresolved or venue.still_open_after_cancel or fills
    sentence = action + "; " + (", ".join(figures) if figures else "no open orders")
    if look:
        sentence += " (see report)"
    if venue.waited_for_cooldown:
        sentence += "; waited out a reconnect cooldown"
    if capabilities is not None:
        sentence += f". Fencing: {fencing_verdict(venue, capabilities).describe()}"
    return sentence + "."


def step_line(step: StepRecord) -> str:
    took = f"{step.duration_s:.3f} s" if step.duration_s is not None else "-"
    tries = plural(step.attempts, "attempt") if step.attempts else ""
    return f"{step.name:<24} {step.status:<9} {took:>10}  {tries:<10} {step.detail}".rstrip()
