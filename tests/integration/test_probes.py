"""The probe against real lab processes: stages, debouncing, and keeping the cadence."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.probes import ProbeActivities, ProbeCounters, ProbeTarget, WatchRequest
from domain.health import Verdict
from lab import processes
from lab.processes import ProcessSpec


@pytest.fixture(scope="module")
def market_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = processes.free_port()
    spec = ProcessSpec(
        name="md",
        argv=[sys.executable, "-m", "lab.marketdata", "--name", "md-a", "--port", str(port)],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        log_path=Path(tmp_path_factory.mktemp("md")) / "md.log",
    )
    pid = processes.start(spec)
    try:
        processes.wait_ready(spec, pid, 20)
        yield f"http://127.0.0.1:{port}"
    finally:
        processes.stop(pid)


def watch(url: str, kind: str, reported: Verdict, **overrides: object) -> WatchRequest:
    fields: dict[str, object] = {
        "vantage": "v1",
        "target": ProbeTarget(name="t", kind=kind, url=url),  # type: ignore[arg-type]
        "reported": reported,
        "interval_s": 0.2,
        "latency_threshold_ms": 150,
        "freshness_threshold_s": 2,
        "confirmation_count": 3,
        "recovery_count": 2,
        "max_lifetime_s": 5,
    }
    fields.update(overrides)
    return WatchRequest.model_validate(fields)


async def test_a_fresh_increasing_feed_is_healthy_at_once(market_data: str) -> None:
    result = await ActivityEnvironment().run(
        ProbeActivities().watch_target, watch(market_data, "market_data", Verdict.UNKNOWN)
    )
    assert (result.verdict, result.changed, result.checks) == (Verdict.HEALTHY, True, 1)


async def test_an_unreachable_target_is_down_after_exactly_the_confirmation_count() -> None:
    closed = f"http://127.0.0.1:{processes.free_port()}"
    result = await ActivityEnvironment().run(
        ProbeActivities().watch_target, watch(closed, "oms", Verdict.DEGRADED,
            counters=ProbeCounters(verdict=Verdict.DEGRADED, consecutive_failed=1, checks=1))
    )  # fmt: skip
    assert result.verdict == Verdict.DOWN
    assert result.checks == 3  # one carried over from the previous watch, two more here
    assert result.counters.consecutive_failed == 3
    assert result.last_failure is not None and result.last_failure.startswith("unreachable")


async def test_a_down_verdict_says_when_its_streak_of_failures_began() -> None:
    closed = f"http://127.0.0.1:{processes.free_port()}"
    result = await ActivityEnvironment().run(
        ProbeActivities().watch_target, watch(closed, "oms", Verdict.DEGRADED)
    )
    assert result.verdict == Verdict.DOWN
    # The first of the three failed checks: where the monitor's detection latency starts.
    counters = result.counters
    assert counters.failing_since is not None and counters.last_check_at is not None
    assert counters.last_check_at - counters.failing_since == pytest.approx(0.4, abs=0.3)


async def test_a_restarted_watch_keeps_the_probe_cadence() -> None:
    closed = f"http://127.0.0.1:{processes.free_port()}"
    carried = ProbeCounters(
        verdict=Verdict.DEGRADED, consecutive_failed=1, checks=1, last_check_at=time.time()
    )
    started = time.monotonic()
    await ActivityEnvironment().run(
        ProbeActivities().watch_target,
        watch(closed, "oms", Verdict.DEGRADED, counters=carried),
    )
    # Two more checks at 0.2 s intervals after the carried one: never sooner than 0.4 s.
    assert time.monotonic() - started >= 0.38


async def test_a_healthy_target_stays_silent_until_its_lifetime_ends(market_data: str) -> None:
    started = time.monotonic()
    result = await ActivityEnvironment().run(
        ProbeActivities().watch_target,
        watch(market_data, "market_data", Verdict.HEALTHY, max_lifetime_s=1.0),
    )
    assert result.changed is False and result.verdict == Verdict.HEALTHY
    assert time.monotonic() - started >= 1.0
    assert result.checks >= 4
