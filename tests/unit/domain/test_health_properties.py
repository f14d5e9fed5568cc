"""Health monitor invariants over generated event sequences.

A Hypothesis state machine feeds ``step`` random sequences of verdicts, action reports, acks,
pauses, resumes and target switches, each a whole number of seconds after the one before, over
one to five vantages, and checks every invariant after every event. One generated run checks
them all: generating long sequences is what costs time, and long sequences are what reach second
and third failovers, pauses over a standing quorum, and gaps that land exactly on the cooldown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pydantic import TypeAdapter

from domain.health import (
    HISTORY_LIMIT,
    Acknowledged,
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
)

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVENT = TypeAdapter(MonitorEvent)
# Whole seconds, small against the 10-60 s cooldowns: a second failover can then come inside
# the cooldown, after it, or exactly on its edge.
GAPS = st.integers(min_value=1, max_value=10)
OPERATORS = st.sampled_from(["alice", "bob"])


class HealthMonitorMachine(RuleBasedStateMachine):
    """The workflow's side: it owns the state and feeds every event through ``step``."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = MonitorPolicy(vantages=["v0"], cooldown_s=10)  # until choose_policy runs
        self.state = MonitorState()
        self.now = T0
        self.failovers: list[datetime] = []
        self.acks = 0
        self.acks_since_failover = 0

    @initialize(
        vantages=st.integers(min_value=1, max_value=5), cooldown=st.sampled_from([10, 30, 60])
    )
    def choose_policy(self, vantages: int, cooldown: int) -> None:
        self.policy = MonitorPolicy(
            vantages=[f"v{i}" for i in range(vantages)], cooldown_s=cooldown
        )

    # --- events: verdicts get three rules of seven, DOWN two of those: outages are the point

    @rule(gap=GAPS, data=st.data())
    def vantage_sees_down(self, gap: int, data: st.DataObject) -> None:
        self.verdict(gap, data, Verdict.DOWN)

    @rule(gap=GAPS, data=st.data())
    def vantage_sees_it_down_again(self, gap: int, data: st.DataObject) -> None:
        self.verdict(gap, data, Verdict.DOWN)

    @rule(gap=GAPS, data=st.data(), verdict=st.sampled_from(Verdict))
    def vantage_reports(self, gap: int, data: st.DataObject, verdict: Verdict) -> None:
        self.verdict(gap, data, verdict)

    @rule(gap=GAPS, succeeded=st.booleans())
    def failover_finishes(self, gap: int, succeeded: bool) -> None:
        self.feed(ActionFinished(succeeded=succeeded, at=self.tick(gap), detail="done"))

    @rule(gap=GAPS, by=OPERATORS)
    def operator_acks(self, gap: int, by: str) -> None:
        self.acks += 1
        self.acks_since_failover += 1
        self.feed(Acknowledged(by=by, at=self.tick(gap)))

    # Resumes outnumber pauses two to one: a monitor paused half the time would rarely fail
    # over, and the invariants about repeated failovers would go untested.
    @rule(gap=GAPS, by=OPERATORS, pause=st.sampled_from([False, False, True]))
    def operator_pauses_or_resumes(self, gap: int, by: str, pause: bool) -> None:
        at = self.tick(gap)
        self.feed(Paused(by=by, at=at) if pause else Resumed(by=by, at=at))

    @rule(gap=GAPS)
    def target_switches(self, gap: int) -> None:
        self.feed(TargetSwitched(at=self.tick(gap), detail="watching dr"))

    # --- invariants, checked after every event --------------------------------------------

    @invariant()
    def failovers_are_at_least_a_cooldown_apart(self) -> None:
        # Equivalently: any window shorter than cooldown_s holds at most one failover.
        for earlier, later in pairwise(self.failovers):
            assert (later - earlier).total_seconds() >= self.policy.cooldown_s

    @invariant()
    def every_failover_after_the_first_follows_an_ack(self) -> None:
        assert len(self.failovers) <= 1 + self.acks

    @invariant()
    def blocked_only_over_a_standing_down_quorum(self) -> None:
        if self.state.blocked_reason is not None:
            assert self.down_quorum()
            assert self.state.phase is MonitorPhase.DEGRADED

    @invariant()
    def history_stays_bounded(self) -> None:
        assert len(self.state.history) <= HISTORY_LIMIT
        assert self.state.actions == len(self.failovers)

    # --- the workflow's side ----------------------------------------------------------------

    def verdict(self, gap: int, data: st.DataObject, verdict: Verdict) -> None:
        vantage = data.draw(st.sampled_from(self.policy.vantages), label="vantage")
        self.feed(VerdictChanged(vantage=vantage, verdict=verdict, at=self.tick(gap)))

    def tick(self, gap: int) -> datetime:
        self.now += timedelta(seconds=gap)
        return self.now

    def down_quorum(self) -> bool:
        # Counted here rather than with policy.quorum, so a wrong quorum cannot vouch for itself.
        verdicts = self.state.verdicts
        down = [v for v in self.policy.vantages if verdicts.get(v) is Verdict.DOWN]
        return 2 * len(down) > len(self.policy.vantages)

    def feed(self, event: MonitorEvent) -> None:
        before = self.state.model_dump()
        paused_before = self.state.paused
        after, action = step(self.state, event, self.policy)

        # step never mutates its input: the workflow keeps the old state until it returns.
        assert self.state.model_dump() == before
        # Continue-as-new safety: state and events survive the JSON the history stores.
        assert MonitorState.model_validate_json(after.model_dump_json()) == after
        assert EVENT.validate_json(EVENT.dump_json(event)) == event
        self.state = after

        if action == "failover":
            # A paused monitor never fails over; resuming is what may release it.
            assert not after.paused
            assert not paused_before or isinstance(event, Resumed)
            # No failover without a down quorum at that moment.
            assert self.down_quorum()
            assert after.phase is MonitorPhase.FAILOVER_IN_PROGRESS
            # Every failover after the first needs an ack since the one before.
            assert not self.failovers or self.acks_since_failover > 0
            self.failovers.append(event.at)
            self.acks_since_failover = 0


HealthMonitorMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=100)
TestHealthMonitorInvariants = HealthMonitorMachine.TestCase
