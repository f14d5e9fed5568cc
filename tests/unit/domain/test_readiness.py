"""DR readiness judged and debounced: one bad measurement is noise, N in a row is an alert."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.database import ReplicaLag
from domain.readiness import (
    ReadinessCounters,
    ReadinessSample,
    ReadinessThresholds,
    count,
    database_problem,
    next_ready,
    stream_problem,
)

T0 = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)
LIMITS = ReadinessThresholds(
    max_stream_lag_events=100,
    max_stream_lag_s=5.0,
    intervals=3,
    db_max_lag_bytes=1000,
    db_max_lag_s=5.0,
)


def sample(*problems: str) -> ReadinessSample:
    return ReadinessSample(measured_at=T0, problems=list(problems))


def feed(counters: ReadinessCounters, *goods: bool) -> ReadinessCounters:
    for good in goods:
        counters = count(counters, sample() if good else sample("behind"))
        counters.ready = next_ready(counters, LIMITS.intervals)
    return counters


def test_a_first_good_measurement_makes_an_unknown_standby_ready() -> None:
    assert feed(ReadinessCounters(), True).ready is True


def test_an_unknown_standby_stays_unknown_until_n_bad_measurements() -> None:
    assert feed(ReadinessCounters(), False, False).ready is None
    assert feed(ReadinessCounters(), False, False, False).ready is False


def test_fewer_than_n_bad_measurements_in_a_row_never_make_it_not_ready() -> None:
    counters = feed(ReadinessCounters(ready=True), False, False, True, False, False)
    assert counters.ready is True


def test_it_is_ready_again_only_after_n_good_measurements_in_a_row() -> None:
    counters = feed(ReadinessCounters(ready=True), False, False, False)
    assert counters.ready is False
    counters = feed(counters, True, True, False, True, True)
    assert counters.ready is False
    assert feed(counters, True).ready is True


@pytest.mark.parametrize(
    ("events", "seconds", "expected"),
    [
        (0, 0.0, None),
        (100, 5.0, None),
        (101, 0.2, "stream 101 event(s) behind (maximum 100)"),
        (3, 7.5, "stream 7.5 s behind (maximum 5 s)"),
        (None, None, None),
    ],
)
def test_the_stream_is_judged_by_events_and_age(
    events: int | None, seconds: float | None, expected: str | None
) -> None:
    assert stream_problem(events, seconds, LIMITS) == expected


def lag(**changes: object) -> ReplicaLag:
    base = {"bytes": 0, "seconds": 0.0, "replica_in_recovery": True, "primary_reachable": True}
    return ReplicaLag.model_validate(base | changes)


def test_the_database_is_judged_against_max_lag_on_failover() -> None:
    assert database_problem(lag(), LIMITS) is None
    assert database_problem(lag(bytes=2000), LIMITS) == (
        "database 2000 bytes not yet replayed (maximum 1000)"
    )
    assert "paused" in (database_problem(lag(replay_paused=True), LIMITS) or "")
    assert "not a replica" in (database_problem(lag(replica_in_recovery=False), LIMITS) or "")


def test_a_system_without_a_database_is_judged_by_its_stream_alone() -> None:
    no_db = LIMITS.model_copy(update={"db_max_lag_bytes": None, "db_max_lag_s": None})
    assert database_problem(lag(bytes=10**9), no_db) is None
