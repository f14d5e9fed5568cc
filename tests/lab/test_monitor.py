"""The health monitor on the real lab: it fails over by itself, and only when it should.

One lab and one monitor for the module, scenarios in the order a bad morning unfolds: a healthy
system, one vantage point losing its own network, a short hang, the primary dying, then the
new active side flapping.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.monitoring import MonitorStatus
from domain.topology import load_topology
from lab import stack
from lab.processes import wait_until
from lab.topology_gen import VANTAGES
from tests.lab.conftest import LabRun, drctl_runbook, replay_and_record, running_lab

DETECTION_BUDGET_S = 3 * 1.0 + 1.0  # confirmation_count x interval_s + one interval (lab)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab(tmp_path_factory) as run:
        started = drctl_runbook(run, "monitor", "start", "--system", "lab")
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: monitor(run)["phase"] == "nominal" and _all(run, "healthy"), 30)
        yield run


def monitor(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "monitor", "status", "--system", "lab", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _all(lab: LabRun, verdict: str) -> bool:
    return all(v == verdict for v in monitor(lab)["verdicts"].values())


def promotion(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "status", "--system", "lab", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


def test_starting_the_monitor_twice_is_harmless(lab: LabRun) -> None:
    again = drctl_runbook(lab, "monitor", "start", "--system", "lab")
    assert again.returncode == 0
    assert again.stdout.strip() == "dr-monitor/lab is already running"


def test_a_healthy_system_costs_almost_no_history(lab: LabRun) -> None:
    status = monitor(lab)
    assert set(status["verdicts"]) == set(VANTAGES)
    # Start, the plan, three watches scheduled and started, and the first verdicts; the DR
    # readiness watch (its version marker, its first "ready" and its renewal): while healthy
    # the watches say nothing more until their lifetime ends.
    first = status["history_length"]
    assert first <= 50
    # Three probe intervals of a healthy system add nothing to the history.
    assert not wait_until(lambda: monitor(lab)["history_length"] != first, 3)


def test_monitor_status_says_dr_is_ready_with_its_stream_and_database_lag(lab: LabRun) -> None:
    def ready() -> bool:
        readiness = monitor(lab)["readiness"]
        return readiness is not None and readiness["ready"] is True

    assert wait_until(ready, 20)
    status = monitor(lab)
    assert status["readiness"]["region"] == "dr"
    # Read live from the readiness watch's heartbeat: figures, not just a flag.
    live = status["readiness_live"]
    assert live is not None and live["stream_lag_events"] is not None
    assert live["db_lag_bytes"] is not None and live["problems"] == []
    text = drctl_runbook(lab, "monitor", "status", "--system", "lab")
    assert text.returncode == 0, text.stderr
    assert "DR readiness: dr ready since" in text.stdout
    assert "stream lag: " in text.stdout and "database lag: " in text.stdout


def test_the_worker_exports_the_monitors_phase_verdicts_and_live_replication_lag(
    lab: LabRun,
) -> None:
    url = lab.status()["metrics"]["worker"]
    wanted = {
        ("failover_monitor_phase", "system", "lab"),
        ("failover_monitor_vantage_verdict", "target", "lab"),
        ("failover_replication_stream_lag_events", "system", "lab"),
        ("failover_replication_db_lag_bytes", "system", "lab"),
    }

    def exported() -> set[tuple[str, str, str]]:
        text = httpx.get(url, timeout=5).text
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        return {(s.name, k, v) for s in samples for k, v in s.labels.items()} & wanted

    assert wait_until(lambda: exported() == wanted, 20), exported()


def test_replay_paused_on_the_dr_database_makes_dr_not_ready_then_ready_again(
    lab: LabRun,
) -> None:
    assert lab.drctl("chaos", "lag", "db").returncode == 0
    try:

        def not_ready() -> bool:
            readiness = monitor(lab)["readiness"]
            return readiness is not None and readiness["ready"] is False

        # Three intervals of 1 s in the lab topology, plus the measurement's own time.
        assert wait_until(not_ready, 15)
        assert "replay is paused" in monitor(lab)["readiness"]["reason"]
    finally:
        assert lab.drctl("chaos", "heal", "db").returncode == 0
    assert wait_until(lambda: monitor(lab)["readiness"]["ready"] is True, 15)


def test_one_vantage_point_cut_off_never_fails_over(lab: LabRun) -> None:
    assert lab.drctl("chaos", "partition", "vantage", "dr").returncode == 0
    try:
        assert wait_until(lambda: monitor(lab)["verdicts"]["dr"] == "down", 15)
        status = monitor(lab)
        assert status["phase"] == "degraded"
        assert status["verdicts"]["obs-a"] == status["verdicts"]["obs-b"] == "healthy"
        # A full detection window later, still nothing has started.
        assert not wait_until(lambda: monitor(lab)["phase"] != "degraded", DETECTION_BUDGET_S)
        assert monitor(lab)["actions"] == 0
    finally:
        assert lab.drctl("chaos", "heal", "vantage", "dr").returncode == 0
    assert wait_until(lambda: monitor(lab)["phase"] == "nominal", 20)
    assert promotion(lab)["state"] == "never"


def test_a_hang_shorter_than_the_confirmation_window_degrades_then_recovers(
    lab: LabRun,
) -> None:
    # Driven in-process: through the CLI, the round trips alone could stretch the hang past
    # the confirmation window (or past the primary's lease-renewal margin).
    stack.chaos(lab.root, "hang", "primary", None, 0)
    try:
        # Heal as soon as a vantage point notices: well inside the confirmation window.
        assert wait_until(lambda: "degraded" in fast_verdicts(lab), 10, poll_s=0.05)
    finally:
        stack.chaos(lab.root, "heal", "primary", None, 0)
    assert monitor(lab)["phase"] == "degraded"
    assert wait_until(lambda: monitor(lab)["phase"] == "nominal", 20)
    assert monitor(lab)["actions"] == 0
    assert promotion(lab)["state"] == "never"
    assert lab.get("oms-primary", "/health")["trading_state"] == "trading"


def fast_verdicts(lab: LabRun) -> list[str]:
    async def query() -> list[str]:
        topology = load_topology(lab.root / "topology.toml")
        client = await Client.connect(
            topology.temporal.address, data_converter=pydantic_data_converter
        )
        status = await client.get_workflow_handle("dr-monitor/lab").query(
            "status", result_type=MonitorStatus
        )
        return [v.value for v in status.verdicts.values()]

    return asyncio.run(query())


def test_killing_the_primary_starts_a_promotion_by_itself(
    lab: LabRun,
) -> None:
    assert lab.drctl("chaos", "kill", "primary").returncode == 0
    killed_at = time.time()
    assert wait_until(lambda: promotion(lab)["state"] != "never", 20, poll_s=0.2)
    started = promotion(lab)
    assert wait_until(lambda: promotion(lab)["state"] == "completed", 90, poll_s=0.5)
    done = promotion(lab)
    assert done["outcome"] == "promoted", done
    started_at = datetime.fromisoformat(done["started_at"]).timestamp()
    # How fast is a figure (bench/, the drill's detection time); here: it acted on the kill.
    assert started_at >= killed_at - 1.0, started
    status = monitor(lab)
    assert status["actions"] == 1 and status["needs_ack"] is True
    assert wait_until(lambda: monitor(lab)["active_region"] == "dr", 10)
    assert lab.get("oms-dr", "/health")["trading_state"] == "trading"


def test_a_flapping_active_side_needs_an_ack_and_respects_the_cooldown(lab: LabRun) -> None:
    assert wait_until(lambda: monitor(lab)["phase"] == "nominal", 30)
    assert lab.drctl("chaos", "kill", "dr").returncode == 0
    try:
        assert wait_until(lambda: "ack" in (monitor(lab)["blocked_reason"] or ""), 20)
        assert monitor(lab)["actions"] == 1
        acked = drctl_runbook(lab, "monitor", "ack", "--system", "lab", "--as", "oncall")
        assert acked.returncode == 0 and acked.stdout.strip() == "acknowledged by oncall"
        # Acknowledged, but still inside the 60 s cooldown of the lab topology.
        status = monitor(lab)
        assert "cooldown" in (status["blocked_reason"] or ""), status
        assert status["actions"] == 1
    finally:
        assert lab.drctl("chaos", "heal", "dr").returncode == 0
    refused = drctl_runbook(lab, "monitor", "ack", "--system", "lab", "--as", "oncall")
    assert refused.returncode == 1
    assert "nothing to acknowledge" in refused.stderr


def test_the_monitor_history_replays_deterministically(lab: LabRun) -> None:
    # The monitor is still running: its history so far (verdicts, a failover, a blocked
    # failover, an ack) must replay against today's code.
    replayed = asyncio.run(
        # "monitor--" is the HealthMonitor recorded before the split: never overwrite it.
        replay_and_record(lab.root / "topology.toml", ["dr-monitor/lab"], "system-monitor")
    )
    assert replayed == 1
