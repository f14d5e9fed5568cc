"""Drills and failback: their requests, what a drill measures, how it is judged, their reports.

A drill proves the runbooks work before an incident does: in the lab it injects a real fault and
lets the health monitor promote DR by itself; anywhere else it runs a planned switchover. Either
way it then fails back and judges the detection time, RTO and replication gap against the
objectives in its request. ``{"system": "lab"}`` typed into the Temporal UI is a complete input.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, model_validator

from domain.database import DbReseed, ReplicaLag
from domain.promotion import (
    Comment,
    DrKind,
    DrOutcome,
    Identity,
    PromotionReport,
    RecordedAction,
    ReplicationGap,
    StepRecord,
    _Boundary,
    replication_sentence,
    step_line,
)
from domain.topology import WEEKDAYS, BlackoutWindow, DrillConfig, Name
from domain.venue_check import VenuesCheck

DRILL_WORKFLOW = "Drill"
FAILBACK_WORKFLOW = "Failback"


def drill_workflow_id(system: str) -> str:
    """One drill per system at a time (a schedule's runs get its timestamp appended)."""
    return f"dr-drill/{system}"


def drill_schedule_id(system: str) -> str:
    return f"dr-drill-schedule/{system}"


def failback_workflow_id(system: str) -> str:
    return f"dr-failback/{system}"


class DrillScenario(StrEnum):
    # A real fault through the lab's control API; the monitor must detect it and promote.
    KILL_PRIMARY = "kill-primary"
    # Any environment: a planned promotion to DR, approved by the drill's named approver.
    PLANNED_SWITCHOVER = "planned-switchover"


class DrillObjectives(_Boundary):
    """What a passing drill must show. Detection is judged only where there is a fault."""

    max_detection_s: Annotated[float, Field(gt=0)] = 30.0
    max_rto_s: Annotated[float, Field(gt=0)] = 60.0
    max_replication_gap_events: Annotated[int, Field(ge=0)] = 0


class DrillRequest(_Boundary):
    """Run a drill. ``{"system": "lab"}`` is complete: the scenario follows from the system
    (kill-primary where the lab's control API exists, else planned-switchover)."""

    system: Name
    scenario: DrillScenario | None = None
    requested_by: Identity = "temporal-ui"
    approver: Identity = "drill-approver"
    objectives: DrillObjectives = DrillObjectives()
    failback: bool = True
    allow_production: bool = False
    override_blackout: bool = False
    reason: Comment = ""
    # How long the drill waits for the monitor's promotion (kill-primary) or a planned one.
    promotion_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300.0

    @model_validator(mode="after")
    def _two_people(self) -> Self:
        if self.approver.casefold() == self.requested_by.casefold():
            raise ValueError(
                f"approver {self.approver!r} is also requested_by: a drill's planned promotion "
                "is approved by a second, named identity"
            )
        return self


class DrillPlan(BaseModel):
    """What the topology says about a drill, resolved once and kept in the history."""

    system: str
    production: bool
    primary_region: str
    dr_region: str
    primary_oms_url: str
    dr_oms_url: str
    lab_control: bool
    # The blackout window the drill's start time falls in, described; None outside them.
    blackout: str | None
    approval_timeout_s: float
    ui_url: str

    def scenario_for(self, request: DrillRequest) -> DrillScenario:
        if request.scenario is not None:
            return request.scenario
        return DrillScenario.KILL_PRIMARY if self.lab_control else DrillScenario.PLANNED_SWITCHOVER


class FaultRecord(BaseModel):
    action: Literal["kill", "heal"]
    target: str
    at: datetime
    detail: str


class FailbackRequest(_Boundary):
    """Return a system to its primary region: resync the old primary, then a planned
    promotion back, approved by a second operator (``approver`` sends it when given)."""

    system: Name
    requested_by: Identity
    approver: Identity | None = None
    reason: Comment = ""
    kind: DrKind = DrKind.PLANNED


class FailbackReport(BaseModel):
    workflow_id: str
    system: str
    from_region: str
    to_region: str
    outcome: DrOutcome
    outcome_detail: str
    started_at: datetime
    finished_at: datetime
    steps: list[StepRecord]
    resync: ReplicationGap | None
    promotion: PromotionReport | None
    monitor_following: str | None
    # The old primary's database re-seeded as a replica of the new primary, and its lag once
    # caught up. Defaulted: reports from before the failback re-seeded still decode.
    db_reseed: DbReseed | None = None
    db_lag: ReplicaLag | None = None

    def summary_lines(self) -> list[str]:
        lines = [f"failback of {self.system}: {self.outcome.value} ({self.outcome_detail})"]
        lines.append(f"  {self.from_region} to {self.to_region}.")
        if self.resync is not None:
            lines.append(f"  resync of {self.to_region}: {replication_sentence(self.resync)}")
        if self.db_reseed is not None:
            lines.append(f"  database of {self.to_region}: {self._reseed_sentence()}")
        if self.monitor_following is not None:
            lines.append(f"  the health monitor now follows {self.monitor_following}.")
        lines += [f"    {step_line(step)}" for step in self.steps]
        return lines

    def _reseed_sentence(self) -> str:
        reseed = self.db_reseed
        assert reseed is not None
        if reseed.method == "no_database":
            return "none configured; nothing to re-seed."
        done = (
            "already a streaming replica of the new primary"
            if reseed.method == "already_streaming"
            else f"re-seeded with {reseed.method} as a replica of the new primary"
        )
        lag = self.db_lag
        if lag is None:
            return f"{done}."
        return f"{done}; it streams, {lag.bytes:,} bytes and {lag.seconds:.1f} s behind."


class DrillMeasurements(BaseModel):
    """Seconds, from the fault (kill-primary) or from trading stopping (planned)."""

    detection_s: float | None = None
    rto_s: float | None = None
    replication_gap_events: int | None = None
    behind_before_events: int | None = None
    replication_lag_s: float | None = None


def measure(
    scenario: DrillScenario, fault: FaultRecord | None, promotion: PromotionReport | None
) -> DrillMeasurements:
    if promotion is None:
        return DrillMeasurements()
    steps = {s.name: s for s in promotion.steps if s.status == "completed"}
    released = steps.get("release_trading")
    if scenario is DrillScenario.KILL_PRIMARY:
        origin = fault.at if fault else None
        detection = (
            (promotion.detected_at - origin).total_seconds()
            if origin and promotion.detected_at
            else None
        )
    else:
        stopped = steps.get("deactivate_primary")
        origin = stopped.started_at if stopped else None
        detection = None
    rto = (
        (released.ended_at - origin).total_seconds()
        if origin and released and released.ended_at
        else None
    )
    gap = promotion.replication_gap
    return DrillMeasurements(
        detection_s=round(detection, 3) if detection is not None else None,
        rto_s=round(rto, 3) if rto is not None else None,
        replication_gap_events=gap.gap_events if gap else None,
        behind_before_events=gap.behind_before if gap else None,
        replication_lag_s=gap.lag_before_s if gap else None,
    )


def judge(
    scenario: DrillScenario,
    objectives: DrillObjectives,
    measured: DrillMeasurements,
    promotion: PromotionReport | None,
    failback: FailbackReport | None,
    failback_requested: bool,
) -> list[str]:
    """Every reason the drill fails; an empty list is a pass."""
    reasons: list[str] = []
    if promotion is None:
        reasons.append("no promotion ran")
    elif promotion.outcome is not DrOutcome.PROMOTED:
        reasons.append(f"promotion ended {promotion.outcome.value}: {promotion.outcome_detail}")
    if scenario is DrillScenario.KILL_PRIMARY:
        if measured.detection_s is None:
            reasons.append("detection time not measured")
        elif measured.detection_s > objectives.max_detection_s:
            reasons.append(
                f"detection took {measured.detection_s:.2f} s, objective "
                f"{objectives.max_detection_s:g} s"
            )
    if measured.rto_s is None:
        if promotion is not None and promotion.outcome is DrOutcome.PROMOTED:
            reasons.append("RTO not measured")
    elif measured.rto_s > objectives.max_rto_s:
        reasons.append(f"RTO {measured.rto_s:.2f} s exceeds objective {objectives.max_rto_s:g} s")
    gap = measured.replication_gap_events
    if gap is not None and gap > objectives.max_replication_gap_events:
        reasons.append(
            f"replication gap of {gap} event(s) exceeds objective "
            f"{objectives.max_replication_gap_events}"
        )
    if failback_requested:
        if failback is None:
            reasons.append("failback did not run")
        elif failback.outcome is not DrOutcome.PROMOTED:
            reasons.append(f"failback ended {failback.outcome.value}: {failback.outcome_detail}")
    return reasons


class DrillReport(BaseModel):
    workflow_id: str
    system: str
    scenario: DrillScenario
    requested_by: str
    reason: str
    outcome: DrOutcome
    passed: bool
    reasons: list[str]
    objectives: DrillObjectives
    measured: DrillMeasurements
    fault: FaultRecord | None
    started_at: datetime
    finished_at: datetime
    steps: list[StepRecord]
    promotion: PromotionReport | None
    failback: FailbackReport | None
    actions: list[RecordedAction]
    ui_url: str
    # The pre-flight venues check; None where it did not run (refused first, or a run recorded
    # before the drill had a pre-flight).
    venues_check: VenuesCheck | None = None

    def summary_lines(self) -> list[str]:
        verdict = "PASSED" if self.passed else f"FAILED ({self.outcome.value})"
        lines = [f"drill of {self.system} ({self.scenario.value}): {verdict}"]
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.venues_check is not None:
            check = self.venues_check
            lines.append(
                f"  pre-flight: all {len(check.venues)} venues answered through their adapters"
                if check.ok
                else f"  pre-flight: {len(check.failed)} of {len(check.venues)} venues failed"
            )
        m, o = self.measured, self.objectives
        if self.scenario is DrillScenario.KILL_PRIMARY:
            lines.append(f"  detection {_s(m.detection_s)} (objective {o.max_detection_s:g} s)")
        lines.append(f"  RTO {_s(m.rto_s)} (objective {o.max_rto_s:g} s)")
        gap, behind = m.replication_gap_events, m.behind_before_events
        lines.append(
            f"  replication gap {'-' if gap is None else gap} event(s) (objective "
            f"{o.max_replication_gap_events}); DR was {'-' if behind is None else behind} behind"
        )
        if self.failback is not None:
            lines.append(
                f"  failback: {self.failback.outcome.value} ({self.failback.outcome_detail})"
            )
        lines += [f"    {step_line(step)}" for step in self.steps]
        return lines


def _s(value: float | None) -> str:
    return f"{value:.2f} s" if value is not None else "-"


def blackout_at(moment: datetime, config: DrillConfig) -> BlackoutWindow | None:
    """The blackout window ``moment`` falls in, in the drill timezone; None if none."""
    local = moment.astimezone(ZoneInfo(config.timezone))
    day = WEEKDAYS[local.weekday()]
    clock = local.time().replace(tzinfo=None)
    for window in config.blackouts:
        if day in window.days and window.start <= clock < window.end:
            return window
    return None


class RunProgress(BaseModel):
    """What a drill or failback is doing now (their ``progress`` query)."""

    workflow_id: str
    system: str
    outcome: DrOutcome
    current_step: str | None
    waiting_for: str | None
    steps: list[StepRecord]
