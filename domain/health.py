"""The health monitor's state machine: when a quorum of vantage points says "down", fail over.

The SystemMonitor workflow watches one protected system from several vantage points. Each
vantage's probe debounces its own observations (``confirmation_count`` consecutive failures
before DOWN, ``recovery_count`` successes before HEALTHY again) and reports only verdict
changes. The workflow turns those reports and operator signals into events, and ``step`` decides
the monitor's phase and whether to start a failover. Pure (no I/O, no clocks: every event carries
its own ``at``), because the workflow imports it and must replay it deterministically.

A down quorum is a strict majority of the policy's vantages reporting DOWN, so a vantage point
that loses its own network (it says DOWN, the others HEALTHY) can never start a failover.

Phase                  Event                                      Outcome
---------------------  -----------------------------------------  ------------------------------
NOMINAL, DEGRADED,     verdict makes a down quorum, monitor       DEGRADED, no action,
FAILOVER_COMPLETE        paused                                     blocked "paused by <who>"
                       ... else a failover ran and nobody acked   DEGRADED, no action, blocked
                                                                    "... waiting for an operator
                                                                    ack"
                       ... else last failover < cooldown_s ago    DEGRADED, no action, blocked
                                                                    with the seconds left
                       ... else                                   FAILOVER_IN_PROGRESS, action
                                                                    "failover", needs_ack set
NOMINAL, DEGRADED      verdict, no down quorum, some vantage      DEGRADED
                         DEGRADED or DOWN
                       verdict, all HEALTHY or UNKNOWN            NOMINAL
FAILOVER_COMPLETE      verdict, no down quorum                    NOMINAL once every vantage is
                                                                    HEALTHY, else unchanged
FAILOVER_IN_PROGRESS   verdict                                    recorded, nothing else
                       action finished, succeeded                 FAILOVER_COMPLETE, verdicts
                                                                    reset to UNKNOWN
                       action finished, failed                    DEGRADED, needs_ack set
any other phase        action finished                            ignored (state unchanged)
any                    target switched                            verdicts reset to UNKNOWN
                       ack                                        needs_ack and blocked reason
                                                                    cleared (the cooldown is not)
                       pause / resume                             paused, paused_by set / cleared
                       ack, pause, resume, target switched        then re-evaluated as a verdict
                                                                    would be, except while a
                                                                    failover is in progress

An ack or the end of a maintenance pause can therefore release a failover that a
standing down quorum was waiting for: that is what the ack is for. Every phase change is
recorded in ``history`` (the last ``HISTORY_LIMIT``), with the event that caused it.

What each vantage last reported (when, and what failed) is kept in ``seen``: when the monitor
fails over, ``quorum_evidence`` hands exactly that to the promotion as its confirmation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal, assert_never

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from domain.promotion import Identity, MonitorEvidence, VantageVerdict
from domain.readiness import DrReadiness

# Bounded so that the state continue-as-new hands over stays small however long the monitor runs.
HISTORY_LIMIT = 50

WAITING_FOR_ACK = "an automatic failover already ran; waiting for an operator ack"


class Verdict(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    # Failing, but fewer than confirmation_count consecutive failures so far.
    DEGRADED = "degraded"
    # confirmation_count consecutive failures.
    DOWN = "down"


class MonitorPhase(StrEnum):
    NOMINAL = "nominal"
    DEGRADED = "degraded"
    FAILOVER_IN_PROGRESS = "failover_in_progress"
    FAILOVER_COMPLETE = "failover_complete"


class MonitorPolicy(BaseModel):
    """Who votes and how often a failover may run automatically. Built from the topology
    (vantage point names, ``health.cooldown_s``); it holds no default of its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vantages: list[str] = Field(min_length=1)
    cooldown_s: Annotated[float, Field(gt=0)]

    @field_validator("vantages")
    @classmethod
    def _vantages_unique(cls, vantages: list[str]) -> list[str]:
        # A vantage listed twice would vote twice and could make a quorum on its own.
        duplicates = sorted({v for v in vantages if vantages.count(v) > 1})
        if duplicates:
            raise ValueError(f"duplicate vantage(s) {duplicates}")
        return vantages

    @property
    def quorum(self) -> int:
        """A strict majority: no minority of vantages, however unlucky, can fail over."""
        return len(self.vantages) // 2 + 1


class PhaseChange(BaseModel):
    # Frozen: successive states share these records instead of copying them.
    model_config = ConfigDict(frozen=True)

    at: AwareDatetime
    phase: MonitorPhase
    reason: str


class VantageSeen(BaseModel):
    """A vantage point's last reported verdict: when it came, what failed, since when."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    at: AwareDatetime
    detail: str = ""
    # When its current streak of failed checks began (None while it passes).
    failing_since: AwareDatetime | None = None


class MonitorState(BaseModel):
    """All state of a long-running monitor: continue-as-new hands it over whole."""

    phase: MonitorPhase = MonitorPhase.NOMINAL
    # Per vantage; a vantage missing here has not reported yet and counts as UNKNOWN.
    verdicts: dict[str, Verdict] = Field(default_factory=dict)
    paused: bool = False
    paused_by: str | None = None
    # After an automatic failover the next one needs an operator ack, so a flapping system
    # cannot be failed back and forth without a person looking at it.
    needs_ack: bool = False
    last_action_at: AwareDatetime | None = None
    actions: int = 0
    # Why a standing down quorum did not start a failover (paused / needs ack / cooldown).
    blocked_reason: str | None = None
    history: list[PhaseChange] = Field(default_factory=list)
    # The region the monitor watches (None until its first plan names the primary). Here, not
    # beside the state, so continue-as-new hands the monitor over as this one object.
    active_region: str | None = None
    # Per vantage, its last report in full (the evidence a failover is handed).
    seen: dict[str, VantageSeen] = Field(default_factory=dict)
    # The standby side's readiness to take over (None until first measured, or never for a
    # monitor whose topology predates it).
    readiness: DrReadiness | None = None


# --- events -----------------------------------------------------------------------------------
# Timestamps must carry a zone: comparing a naive with an aware datetime would raise inside the
# workflow task and stall the monitor, so it is rejected when the event is built instead.


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VerdictChanged(_Event):
    kind: Literal["verdict"] = "verdict"
    vantage: str
    verdict: Verdict
    at: AwareDatetime
    # What the probe saw fail, and since when (the first failed check of the streak).
    detail: str = ""
    failing_since: AwareDatetime | None = None


class ActionFinished(_Event):
    kind: Literal["action_finished"] = "action_finished"
    succeeded: bool
    at: AwareDatetime
    detail: str


class Acknowledged(_Event):
    kind: Literal["ack"] = "ack"
    by: Identity
    at: AwareDatetime


class Paused(_Event):
    kind: Literal["pause"] = "pause"
    by: Identity
    at: AwareDatetime


class Resumed(_Event):
    kind: Literal["resume"] = "resume"
    by: Identity
    at: AwareDatetime


class TargetSwitched(_Event):
    """After a completed failover the monitor watches the new active side."""

    kind: Literal["target_switched"] = "target_switched"
    at: AwareDatetime
    detail: str


MonitorEvent = Annotated[
    VerdictChanged | ActionFinished | Acknowledged | Paused | Resumed | TargetSwitched,
    Field(discriminator="kind"),
]

Action = Literal["failover"] | None


# --- the state machine ------------------------------------------------------------------------


def step(
    state: MonitorState, event: MonitorEvent, policy: MonitorPolicy
) -> tuple[MonitorState, Action]:
    """Apply one event. Returns a new state and the action to take; ``state`` is not touched."""
    if isinstance(event, VerdictChanged) and event.vantage not in policy.vantages:
        raise ValueError(
            f"verdict from unknown vantage {event.vantage!r}; "
            f"this monitor's vantages are {policy.vantages}"
        )
    # A shallow copy the helpers below update in place. Safe because they only ever assign
    # fields, replacing ``verdicts`` and ``history`` with new containers rather than changing
    # the ones the input shares; a deep copy of 50 history entries per event would cost more
    # than everything else a step does.
    new = state.model_copy()

    if isinstance(event, ActionFinished):
        if new.phase is not MonitorPhase.FAILOVER_IN_PROGRESS:
            # A late or repeated report (a retried activity) of a failover already settled.
            return new, None
        _finish_failover(new, event, policy)
        return new, None

    if isinstance(event, VerdictChanged):
        new.verdicts = {**new.verdicts, event.vantage: event.verdict}
        new.seen = {
            **new.seen,
            event.vantage: VantageSeen(
                verdict=event.verdict,
                at=event.at,
                detail=event.detail,
                failing_since=event.failing_since,
            ),
        }
        cause = f"{event.vantage} reports {event.verdict}"
    elif isinstance(event, Acknowledged):
        # Releases the ack block only; the cooldown still runs from the last failover.
        new.needs_ack = False
        new.blocked_reason = None
        cause = f"acknowledged by {event.by}"
    elif isinstance(event, Paused):
        new.paused = True
        new.paused_by = event.by
        cause = f"paused by {event.by}"
    elif isinstance(event, Resumed):
        new.paused = False
        new.paused_by = None
        cause = f"resumed by {event.by}"
    elif isinstance(event, TargetSwitched):
        # The old verdicts describe the side we no longer depend on.
        new.verdicts = {}
        new.seen = {}
        cause = f"target switched ({event.detail})"
    else:
        assert_never(event)

    if new.phase is MonitorPhase.FAILOVER_IN_PROGRESS:
        # The running failover owns the system until it reports back: verdicts are recorded so
        # the state stays true, but nothing may start a second failover alongside it.
        return new, None
    return new, _evaluate(new, policy, event.at, cause)


def summary(state: MonitorState, policy: MonitorPolicy) -> str:
    """One line for logs, alerts and ``drctl``: phase, every vantage's verdict, what blocks."""
    verdicts = " ".join(f"{v}={state.verdicts.get(v, Verdict.UNKNOWN)}" for v in policy.vantages)
    parts = [
        state.phase.value,
        f"{verdicts} ({len(_down(state, policy))} down, quorum {policy.quorum})",
        f"{state.actions} failover(s)",
    ]
    if state.paused:
        parts.append(f"paused by {state.paused_by}")
    if state.needs_ack:
        parts.append("needs ack")
    if state.blocked_reason is not None:
        parts.append(f"blocked: {state.blocked_reason}")
    return "; ".join(parts)


def quorum_evidence(
    state: MonitorState,
    policy: MonitorPolicy,
    regions: Mapping[str, str],
    monitor_workflow_id: str,
    decided_at: AwareDatetime,
) -> MonitorEvidence:
    """What the monitor decided on, for the promotion: every voting vantage's verdict, where it
    stands (``regions``), when it reported and what it saw; the quorum it needed."""
    verdicts = []
    for vantage in policy.vantages:
        seen = state.seen.get(vantage)
        verdicts.append(
            VantageVerdict(
                vantage=vantage,
                region=regions.get(vantage) or "unknown",
                verdict=state.verdicts.get(vantage, Verdict.UNKNOWN).value,
                at=seen.at if seen is not None else decided_at,
                detail=(seen.detail if seen is not None else "no report yet")[:500],
            )
        )
    return MonitorEvidence(
        monitor_workflow_id=monitor_workflow_id,
        decided_at=decided_at,
        quorum=policy.quorum,
        verdicts=verdicts,
    )


def detection_started_at(state: MonitorState, policy: MonitorPolicy) -> AwareDatetime | None:
    """When the outage was first seen: the earliest first failed check among the vantages that
    now say DOWN (None when no probe said; then detection latency is not measured)."""
    starts = [
        seen.failing_since
        for v in _down(state, policy)
        if (seen := state.seen.get(v)) is not None and seen.failing_since is not None
    ]
    return min(starts, default=None)


def _evaluate(state: MonitorState, policy: MonitorPolicy, at: AwareDatetime, cause: str) -> Action:
    """Decide phase and action from the verdicts as they stand. Updates ``state`` in place."""
    down = _down(state, policy)
    if len(down) >= policy.quorum:
        outage = f"{len(down)}/{len(policy.vantages)} vantages down ({', '.join(down)})"
        blocked = _blocked_by(state, policy, at)
        state.blocked_reason = blocked
        if blocked is not None:
            _enter(state, MonitorPhase.DEGRADED, at, f"{cause}; {outage}; blocked: {blocked}")
            return None
        state.actions += 1
        state.last_action_at = at
        state.needs_ack = True
        _enter(state, MonitorPhase.FAILOVER_IN_PROGRESS, at, f"{cause}; {outage}; failover")
        return "failover"

    state.blocked_reason = None
    if state.phase is MonitorPhase.FAILOVER_COMPLETE:
        # UNKNOWN here means "the new side has not been probed yet", not "fine": the monitor
        # reports nominal again only once every vantage has seen the new side healthy.
        if all(state.verdicts.get(v) is Verdict.HEALTHY for v in policy.vantages):
            _enter(state, MonitorPhase.NOMINAL, at, f"{cause}; every vantage healthy")
        return None
    unwell = [
        f"{v}={state.verdicts[v]}"
        for v in policy.vantages
        if state.verdicts.get(v) in (Verdict.DEGRADED, Verdict.DOWN)
    ]
    if unwell:
        _enter(state, MonitorPhase.DEGRADED, at, f"{cause}; not healthy: {', '.join(unwell)}")
    else:
        # A new monitor knows nothing yet and starts nominal: UNKNOWN alone is no alarm.
        _enter(state, MonitorPhase.NOMINAL, at, f"{cause}; no vantage degraded or down")
    return None


def _finish_failover(state: MonitorState, event: ActionFinished, policy: MonitorPolicy) -> None:
    if event.succeeded:
        # The verdicts described the side we just failed away from. Kept, they would let the
        # next ack (the natural reply to a failover) fire a second failover back onto it.
        state.verdicts = {}
        state.seen = {}
        state.blocked_reason = None
        _enter(state, MonitorPhase.FAILOVER_COMPLETE, event.at, f"failover done: {event.detail}")
        return
    # Set rather than assumed: even if someone acked while it ran, a failed failover must not
    # be retried automatically; a person decides.
    state.needs_ack = True
    # The outage that started it may still stand: say why nothing happens about it.
    quorum_down = len(_down(state, policy)) >= policy.quorum
    state.blocked_reason = _blocked_by(state, policy, event.at) if quorum_down else None
    _enter(state, MonitorPhase.DEGRADED, event.at, f"failover failed: {event.detail}")


def _down(state: MonitorState, policy: MonitorPolicy) -> list[str]:
    # Only the policy's vantages vote: a verdict left over from a vantage removed from the
    # topology (state carried over by continue-as-new) must not count.
    return [v for v in policy.vantages if state.verdicts.get(v) is Verdict.DOWN]


def _blocked_by(state: MonitorState, policy: MonitorPolicy, at: AwareDatetime) -> str | None:
    """Why a down quorum may not fail over now, most deliberate block first; None if free."""
    if state.paused:
        return f"paused by {state.paused_by}"
    if state.needs_ack:
        return WAITING_FOR_ACK
    if state.last_action_at is not None:
        elapsed = (at - state.last_action_at).total_seconds()
        if elapsed < policy.cooldown_s:
            # Rounded up: "0 s left" while still blocked would read as a bug.
            left = math.ceil(policy.cooldown_s - elapsed)
            return (
                f"in cooldown: {left} s left of {policy.cooldown_s:g} s since the last "
                f"failover at {state.last_action_at.isoformat()}"
            )
    return None


def _enter(state: MonitorState, phase: MonitorPhase, at: AwareDatetime, reason: str) -> None:
    if state.phase is phase:
        return
    state.phase = phase
    state.history = [*state.history, PhaseChange(at=at, phase=phase, reason=reason)][
        -HISTORY_LIMIT:
    ]
