"""The health monitor's decisions: each scenario is what the on-call person sees.

Three vantage points (London, New York, Singapore) watch one system; two of them make a quorum.
The cooldown is five minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from domain.health import (
    HISTORY_LIMIT,
    WAITING_FOR_ACK,
    Acknowledged,
    Action,
    ActionFinished,
    MonitorEvent,
    MonitorPhase,
    MonitorPolicy,
    MonitorState,
    Paused,
    Resumed,
    TargetSwitched,
    Verdict,
    VerdictChanged,
    step,
    summary,
)

POLICY = MonitorPolicy(vantages=["ldn", "nyc", "sgp"], cooldown_s=300)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

HEALTHY, DEGRADED, DOWN = Verdict.HEALTHY, Verdict.DEGRADED, Verdict.DOWN


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def verdict(vantage: str, value: Verdict, seconds: float) -> VerdictChanged:
    return VerdictChanged(vantage=vantage, verdict=value, at=at(seconds))


def run(
    events: list[MonitorEvent], state: MonitorState | None = None
) -> tuple[MonitorState, list[Action]]:
    """Feed events in order; return the final state and every non-None action taken."""
    state = state or MonitorState()
    actions: list[Action] = []
    for event in events:
        state, action = step(state, event, POLICY)
        if action is not None:
            actions.append(action)
    return state, actions


def all_healthy(seconds: float) -> list[MonitorEvent]:
    return [verdict(v, HEALTHY, seconds) for v in POLICY.vantages]


def first_failover() -> MonitorState:
    """London and New York see the system go down at t=10: the first failover starts."""
    state, actions = run(
        [*all_healthy(0), verdict("ldn", DOWN, 10), verdict("nyc", DOWN, 10)],
    )
    assert actions == ["failover"]
    return state


def test_a_new_monitor_starts_nominal() -> None:
    state, actions = run([verdict("ldn", HEALTHY, 0)])
    assert (state.phase, actions, state.history) == (MonitorPhase.NOMINAL, [], [])


def test_one_vantage_losing_its_own_network_never_fails_over() -> None:
    state, actions = run([*all_healthy(0), verdict("sgp", DOWN, 10)])

    assert actions == []
    assert state.phase is MonitorPhase.DEGRADED
    assert state.blocked_reason is None  # nothing was blocked: there was no quorum to act on


def test_a_down_quorum_fails_over_exactly_once() -> None:
    state, actions = run(
        [
            *all_healthy(0),
            verdict("ldn", DOWN, 10),
            verdict("nyc", DOWN, 11),
            verdict("sgp", DOWN, 12),  # the third vote changes nothing: a failover is running
            verdict("nyc", DEGRADED, 13),
            verdict("nyc", DOWN, 14),
        ]
    )

    assert actions == ["failover"]
    assert state.phase is MonitorPhase.FAILOVER_IN_PROGRESS
    assert (state.actions, state.last_action_at, state.needs_ack) == (1, at(11), True)
    assert state.history[-1].phase is MonitorPhase.FAILOVER_IN_PROGRESS
    assert "2/3 vantages down (ldn, nyc)" in state.history[-1].reason


def test_a_blip_shows_degraded_then_nominal() -> None:
    state, actions = run(
        [*all_healthy(0), verdict("nyc", DEGRADED, 10), verdict("nyc", HEALTHY, 12)]
    )

    assert actions == []
    assert [c.phase for c in state.history] == [MonitorPhase.DEGRADED, MonitorPhase.NOMINAL]
    assert [c.at for c in state.history] == [at(10), at(12)]


def test_a_second_outage_right_after_a_failover_waits_for_an_ack() -> None:
    state, actions = run(
        [
            ActionFinished(succeeded=True, at=at(40), detail="dr promoted, epoch 4"),
            TargetSwitched(at=at(41), detail="watching dr"),
            *all_healthy(50),
            verdict("ldn", DOWN, 400),  # well past the cooldown: only the ack holds it back
            verdict("sgp", DOWN, 401),
        ],
        state=first_failover(),
    )

    assert actions == []
    assert state.phase is MonitorPhase.DEGRADED
    assert state.blocked_reason == WAITING_FOR_ACK

    state, actions = run([Acknowledged(by="alice", at=at(402))], state=state)

    assert actions == ["failover"]  # the ack released the failover the quorum was waiting for
    assert (state.phase, state.actions, state.blocked_reason) == (
        MonitorPhase.FAILOVER_IN_PROGRESS,
        2,
        None,
    )
    assert state.history[-1].reason.startswith("acknowledged by alice")


def test_an_ack_inside_the_cooldown_still_waits_and_says_how_long() -> None:
    state, actions = run(
        [
            ActionFinished(succeeded=True, at=at(40), detail="dr promoted"),
            TargetSwitched(at=at(41), detail="watching dr"),
            verdict("ldn", DOWN, 60),
            verdict("nyc", DOWN, 60),
            Acknowledged(by="alice", at=at(70)),  # 60 s after the failover at t=10
        ],
        state=first_failover(),
    )

    assert actions == []
    assert state.phase is MonitorPhase.DEGRADED
    assert not state.needs_ack
    assert state.blocked_reason is not None
    assert "cooldown: 240 s left of 300 s" in state.blocked_reason

    # The cooldown ends silently; the next verdict after it fails over.
    state, actions = run([verdict("sgp", DOWN, 310)], state=state)
    assert actions == ["failover"]
    assert state.last_action_at == at(310)


def test_a_paused_monitor_never_fails_over() -> None:
    state, actions = run(
        [
            *all_healthy(0),
            Paused(by="bob", at=at(5)),
            verdict("ldn", DOWN, 10),
            verdict("nyc", DOWN, 11),
            verdict("sgp", DOWN, 12),
        ]
    )

    assert actions == []
    assert (state.phase, state.paused, state.paused_by) == (MonitorPhase.DEGRADED, True, "bob")
    assert state.blocked_reason == "paused by bob"
    assert "paused by bob" in summary(state, POLICY)


def test_resuming_with_a_standing_down_quorum_fails_over() -> None:
    state, actions = run(
        [
            *all_healthy(0),
            Paused(by="bob", at=at(5)),
            verdict("ldn", DOWN, 10),
            verdict("nyc", DOWN, 11),
            Resumed(by="bob", at=at(20)),
        ]
    )

    assert actions == ["failover"]
    assert (state.phase, state.paused, state.paused_by) == (
        MonitorPhase.FAILOVER_IN_PROGRESS,
        False,
        None,
    )
    assert state.last_action_at == at(20)


def test_resuming_after_the_outage_cleared_does_nothing() -> None:
    state, actions = run(
        [
            Paused(by="bob", at=at(5)),
            verdict("ldn", DOWN, 10),
            verdict("nyc", DOWN, 11),
            verdict("ldn", HEALTHY, 12),
            verdict("nyc", HEALTHY, 13),
            Resumed(by="bob", at=at(20)),
        ]
    )

    assert actions == []
    assert state.phase is MonitorPhase.NOMINAL


def test_a_failed_failover_leaves_the_monitor_degraded_and_waiting_for_an_ack() -> None:
    state = first_failover()
    # Someone acks while it runs; the failure must still not be retried by itself.
    state, _ = run([Acknowledged(by="alice", at=at(20))], state=state)
    state, actions = run(
        [
            ActionFinished(succeeded=False, at=at(30), detail="lease store unreachable"),
            verdict("sgp", DOWN, 400),  # still down, cooldown over: only the ack blocks
        ],
        state=state,
    )

    assert actions == []
    assert (state.phase, state.needs_ack) == (MonitorPhase.DEGRADED, True)
    assert state.blocked_reason == WAITING_FOR_ACK
    assert any(c.reason == "failover failed: lease store unreachable" for c in state.history)

    state, actions = run([Acknowledged(by="carol", at=at(410))], state=state)
    assert actions == ["failover"]


def test_after_a_completed_failover_the_monitor_watches_the_new_side_and_returns_to_nominal() -> (
    None
):
    state, actions = run(
        [
            ActionFinished(succeeded=True, at=at(40), detail="dr promoted"),
            TargetSwitched(at=at(41), detail="watching dr"),
        ],
        state=first_failover(),
    )
    assert (state.phase, state.verdicts) == (MonitorPhase.FAILOVER_COMPLETE, {})

    # Not yet every vantage has seen the new side: still FAILOVER_COMPLETE, not NOMINAL.
    state, actions = run([verdict("ldn", HEALTHY, 45), verdict("nyc", HEALTHY, 46)], state=state)
    assert state.phase is MonitorPhase.FAILOVER_COMPLETE

    state, actions = run([verdict("sgp", HEALTHY, 47)], state=state)
    assert actions == []
    assert state.phase is MonitorPhase.NOMINAL
    assert [c.phase for c in state.history] == [
        MonitorPhase.DEGRADED,  # London alone, before New York made it a quorum
        MonitorPhase.FAILOVER_IN_PROGRESS,
        MonitorPhase.FAILOVER_COMPLETE,
        MonitorPhase.NOMINAL,
    ]


def test_an_ack_right_after_a_failover_does_not_fail_back_onto_the_failed_side() -> None:
    state, actions = run(
        [
            ActionFinished(succeeded=True, at=at(40), detail="dr promoted"),
            Acknowledged(by="alice", at=at(400)),  # before the target switch, past the cooldown
        ],
        state=first_failover(),
    )

    assert actions == []
    assert state.phase is MonitorPhase.FAILOVER_COMPLETE


def test_a_down_quorum_on_the_new_side_before_an_ack_is_blocked() -> None:
    state, actions = run(
        [
            ActionFinished(succeeded=True, at=at(40), detail="dr promoted"),
            TargetSwitched(at=at(41), detail="watching dr"),
            verdict("ldn", DOWN, 400),
            verdict("nyc", DOWN, 401),
        ],
        state=first_failover(),
    )

    assert actions == []
    assert (state.phase, state.blocked_reason) == (MonitorPhase.DEGRADED, WAITING_FOR_ACK)


def test_a_verdict_from_an_unknown_vantage_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="'tokyo'"):
        step(MonitorState(), verdict("tokyo", DOWN, 0), POLICY)


def test_a_late_action_report_is_ignored() -> None:
    state, _ = run([*all_healthy(0), verdict("nyc", DEGRADED, 5)])
    after, action = step(state, ActionFinished(succeeded=True, at=at(6), detail="x"), POLICY)

    assert action is None
    assert after == state


def test_history_keeps_the_last_phase_changes() -> None:
    flaps: list[MonitorEvent] = []
    for i in range(HISTORY_LIMIT):
        flaps += [verdict("nyc", DEGRADED, 2 * i), verdict("nyc", HEALTHY, 2 * i + 1)]
    state, _ = run(flaps)

    assert len(state.history) == HISTORY_LIMIT
    assert state.history[-1].at == at(2 * HISTORY_LIMIT - 1)


def test_the_summary_names_every_vantage_and_what_blocks() -> None:
    state, _ = run(
        [
            ActionFinished(succeeded=True, at=at(40), detail="dr promoted"),
            TargetSwitched(at=at(41), detail="watching dr"),
            verdict("ldn", DOWN, 400),
            verdict("nyc", DOWN, 401),
        ],
        state=first_failover(),
    )

    line = summary(state, POLICY)
    assert "\n" not in line
    assert line.startswith("degraded; ldn=down nyc=down sgp=unknown (2 down, quorum 2)")
    assert f"blocked: {WAITING_FOR_ACK}" in line


@pytest.mark.parametrize(("vantages", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_the_quorum_is_a_strict_majority(vantages: int, quorum: int) -> None:
    policy = MonitorPolicy(vantages=[f"v{i}" for i in range(vantages)], cooldown_s=1)
    assert policy.quorum == quorum


def test_a_vantage_listed_twice_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"duplicate vantage\(s\) \['ldn'\]"):
        MonitorPolicy(vantages=["ldn", "nyc", "ldn"], cooldown_s=300)


def test_a_timestamp_without_a_zone_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        VerdictChanged(vantage="ldn", verdict=DOWN, at=datetime(2025, 3, 1, 12, 0))


def test_events_decode_by_kind() -> None:
    decoded = TypeAdapter(MonitorEvent).validate_json(
        '{"kind": "ack", "by": "alice", "at": "2025-03-01T12:00:00Z"}'
    )
    assert decoded == Acknowledged(by="alice", at=T0)
