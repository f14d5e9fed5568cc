"""Choosing a feed's market-data source: leave on a majority DOWN, return after the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.feeds import (
    FeedPolicy,
    FeedState,
    apply_switch,
    choose_source,
    next_recovery_check,
    record_verdict,
)
from domain.health import Verdict

T0 = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)
POLICY = FeedPolicy(
    ranked_sources=["md-a", "md-b", "md-c"], vantages=["v1", "v2", "v3"], recovery_window_s=10
)


def seen(state: FeedState, source: str, verdicts: list[Verdict], at: datetime = T0) -> FeedState:
    for vantage, verdict in zip(POLICY.vantages, verdicts, strict=False):
        state = record_verdict(state, source, vantage, verdict, at, POLICY)
    return state


H, D = Verdict.HEALTHY, Verdict.DOWN


def test_a_majority_down_on_the_active_source_moves_to_the_best_healthy_one() -> None:
    state = seen(
        seen(seen(FeedState(active="md-a"), "md-b", [H, H, H]), "md-c", [H, H]), "md-a", [D, D]
    )
    switch = choose_source(state, T0, POLICY)
    assert switch is not None and (switch.from_source, switch.to_source) == ("md-a", "md-b")
    assert "majority" in switch.reason


def test_one_vantage_point_seeing_the_source_down_changes_nothing() -> None:
    state = seen(seen(FeedState(active="md-a"), "md-b", [H, H, H]), "md-a", [D, H, H])
    assert choose_source(state, T0, POLICY) is None


def test_with_nothing_healthy_to_go_to_the_feed_stays() -> None:
    state = seen(seen(FeedState(active="md-a"), "md-b", [D, D, D]), "md-a", [D, D, D])
    assert choose_source(state, T0, POLICY) is None


def test_the_primary_is_taken_back_only_after_the_whole_recovery_window() -> None:
    state = seen(FeedState(active="md-b"), "md-b", [H, H, H])
    state = seen(state, "md-a", [H, H, H], at=T0)
    assert choose_source(state, T0 + timedelta(seconds=9), POLICY) is None
    assert next_recovery_check(state, T0 + timedelta(seconds=9), POLICY) == pytest.approx(1)
    switch = choose_source(state, T0 + timedelta(seconds=10), POLICY)
    assert switch is not None and switch.to_source == "md-a"
    assert apply_switch(state, switch).active == "md-a"


def test_a_break_in_health_restarts_the_recovery_window() -> None:
    state = seen(FeedState(active="md-b"), "md-a", [H, H, H], at=T0)
    state = seen(state, "md-a", [D, D], at=T0 + timedelta(seconds=5))
    state = seen(state, "md-a", [H, H], at=T0 + timedelta(seconds=6))
    assert choose_source(state, T0 + timedelta(seconds=12), POLICY) is None
    assert choose_source(state, T0 + timedelta(seconds=16), POLICY) is not None


def test_an_unknown_source_or_vantage_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown source 'md-x'"):
        record_verdict(FeedState(active="md-a"), "md-x", "v1", H, T0, POLICY)
    with pytest.raises(ValueError, match="unknown vantage point 'v9'"):
        record_verdict(FeedState(active="md-a"), "md-a", "v9", H, T0, POLICY)


verdict = st.sampled_from(list(Verdict))
event = st.tuples(
    st.sampled_from(POLICY.ranked_sources), st.sampled_from(POLICY.vantages), verdict,
    st.integers(min_value=0, max_value=30),
)  # fmt: skip


@given(st.lists(event, max_size=60))
def test_a_switch_never_leaves_a_source_a_majority_sees_healthy_for_a_worse_one(
    events: list[tuple[str, str, Verdict, int]],
) -> None:
    state, at = FeedState(active="md-a"), T0
    for source, vantage, v, step_s in events:
        at += timedelta(seconds=step_s)
        state = record_verdict(state, source, vantage, v, at, POLICY)
        switch = choose_source(state, at, POLICY)
        if switch is None:
            continue
        ranked = POLICY.ranked_sources
        worse = ranked.index(switch.to_source) > ranked.index(switch.from_source)
        if worse:
            seen_active = [
                state.verdicts.get(switch.from_source, {}).get(v) for v in POLICY.vantages
            ]
            assert seen_active.count(Verdict.DOWN) >= POLICY.quorum
        state = apply_switch(state, switch)
        assert FeedState.model_validate_json(state.model_dump_json()) == state
