"""`drctl monitor status` says how the standby stands, in sentences with its lag figures."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.readiness import DrReadiness, ReadinessSample
from drctl.monitor_commands import readiness_lines

T0 = datetime(2026, 11, 2, 10, 2, 3, tzinfo=UTC)


def test_a_ready_standby_shows_its_live_stream_and_database_lag() -> None:
    live = ReadinessSample(
        measured_at=T0, stream_lag_events=12, stream_lag_s=0.25, db_lag_bytes=2048, db_lag_s=0.0
    )
    readiness = DrReadiness(region="dr", ready=True, since=T0)
    assert readiness_lines(readiness, live) == [
        "DR readiness: dr ready since 10:02:03",
        "  stream lag: 12 event(s), 0.2 s",
        "  database lag: 2,048 bytes, 0.0 s",
        "  measured 10:02:03",
    ]


def test_a_standby_not_ready_says_why_and_without_a_database_says_so() -> None:
    sample = ReadinessSample(
        measured_at=T0, stream_lag_events=5000, stream_lag_s=None, problems=["behind"]
    )
    readiness = DrReadiness(
        region="dr", ready=False, since=T0, reason="stream 5000 event(s) behind", last=sample
    )
    lines = readiness_lines(readiness, None)
    assert lines[0] == "DR readiness: dr NOT READY since 10:02:03"
    assert lines[1] == "  why: stream 5000 event(s) behind"
    assert "  stream lag: 5,000 event(s), -" in lines
    assert "  database lag: - (no database, or not measurable)" in lines


def test_before_the_first_measurement_it_says_so() -> None:
    assert readiness_lines(None, None) == ["DR readiness: not measured yet"]
