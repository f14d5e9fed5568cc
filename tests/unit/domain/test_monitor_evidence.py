"""The quorum a monitor fails over on becomes the promotion's evidence, exactly as it stood."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.health import (
    Action,
    MonitorPolicy,
    MonitorState,
    TargetSwitched,
    Verdict,
    VerdictChanged,
    detection_started_at,
    quorum_evidence,
    step,
)

T0 = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)
POLICY = MonitorPolicy(vantages=["dr", "obs-a", "obs-b"], cooldown_s=60)
REGIONS = {"dr": "dr", "obs-a": "eu-west", "obs-b": "us-east"}


def reported(
    state: MonitorState, vantage: str, verdict: Verdict, at_s: float, **seen: object
) -> tuple[MonitorState, Action]:
    event = VerdictChanged.model_validate(
        {"vantage": vantage, "verdict": verdict, "at": T0 + timedelta(seconds=at_s)} | seen
    )
    return step(state, event, POLICY)


def test_the_evidence_names_every_vantage_its_region_verdict_time_and_what_it_saw() -> None:
    state, _ = reported(MonitorState(), "obs-b", Verdict.DEGRADED, 1.0, detail="latency 900 ms")
    state, _ = reported(
        state, "dr", Verdict.DOWN, 3.0, detail="unreachable: ConnectError",
        failing_since=T0 + timedelta(seconds=0.5),
    )  # fmt: skip
    state, action = reported(
        state, "obs-a", Verdict.DOWN, 3.2, detail="unreachable: ConnectTimeout",
        failing_since=T0 + timedelta(seconds=0.3),
    )  # fmt: skip
    assert action == "failover"

    decided = T0 + timedelta(seconds=3.2)
    evidence = quorum_evidence(state, POLICY, REGIONS, "dr-monitor/lab", decided)

    assert evidence.monitor_workflow_id == "dr-monitor/lab"
    assert evidence.quorum == 2 and evidence.down_votes == 2
    assert evidence.decided_at == decided
    by_vantage = {v.vantage: v for v in evidence.verdicts}
    assert by_vantage["obs-a"].region == "eu-west"
    assert by_vantage["obs-a"].verdict == "down"
    assert by_vantage["obs-a"].at == T0 + timedelta(seconds=3.2)
    assert by_vantage["obs-a"].detail == "unreachable: ConnectTimeout"
    assert by_vantage["obs-b"].verdict == "degraded"
    assert by_vantage["obs-b"].detail == "latency 900 ms"
    # Detection began at the first failed check among those that say DOWN.
    assert detection_started_at(state, POLICY) == T0 + timedelta(seconds=0.3)


def test_a_vantage_that_never_reported_is_in_the_evidence_as_unknown() -> None:
    state, _ = reported(MonitorState(), "dr", Verdict.DOWN, 1.0)
    state, _ = reported(state, "obs-a", Verdict.DOWN, 2.0)
    evidence = quorum_evidence(state, POLICY, {}, "dr-monitor/lab", T0)
    silent = next(v for v in evidence.verdicts if v.vantage == "obs-b")
    assert silent.verdict == "unknown" and silent.detail == "no report yet"
    assert silent.region == "unknown"
    # No probe said when its failures began: detection latency is not measured.
    assert detection_started_at(state, POLICY) is None


def test_switching_the_target_forgets_what_was_seen_of_the_old_side() -> None:
    state, _ = reported(MonitorState(), "dr", Verdict.DOWN, 1.0, detail="x")
    state, _ = step(state, TargetSwitched(at=T0, detail="now watching dr"), POLICY)
    assert state.seen == {}
