"""Real faults through `drctl lab chaos`, and heal. One lab for the module; each test heals."""

from __future__ import annotations

import socket
import time
from datetime import datetime

import httpx
import pytest

from lab.processes import wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import LAB_CONTROL_KEY_ENV
from tests.lab.conftest import LabRun


def healthy(lab: LabRun, component: str) -> bool:
    return next(c for c in lab.status()["components"] if c["name"] == component)["healthy"]


def process_state(lab: LabRun, component: str) -> str:
    return str(next(c for c in lab.status()["components"] if c["name"] == component)["process"])


def test_a_killed_venue_is_down_until_healed(lab: LabRun) -> None:
    result = lab.drctl("chaos", "kill", "venue", "beta")
    assert result.returncode == 0 and "killed venue-beta" in result.stdout
    assert process_state(lab, "venue-beta") == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(lab.url("venue-beta") + "/health", timeout=1)
    assert lab.drctl("chaos", "heal", "venue", "beta").returncode == 0
    assert healthy(lab, "venue-beta")


def test_the_control_api_kills_and_restarts_a_process_for_its_key_holder_only(
    lab: LabRun,
) -> None:
    key = read_secrets(LabPaths(lab.root))[LAB_CONTROL_KEY_ENV]
    url = lab.url("control") + "/chaos"
    body = {"action": "kill", "target": "venue", "name": "gamma"}
    refused = httpx.post(url, json=body, headers={"X-Api-Key": "not-the-key"}, timeout=5)
    assert refused.status_code == 401
    assert healthy(lab, "venue-gamma"), "a refused call must change nothing"
    unknown = httpx.post(
        url, json={"action": "kill", "target": "venue", "name": "delta"},
        headers={"X-Api-Key": key}, timeout=5,
    )  # fmt: skip
    assert unknown.status_code == 422
    assert "unknown venue 'delta'" in unknown.json()["detail"]
    killed = httpx.post(url, json=body, headers={"X-Api-Key": key}, timeout=5)
    assert killed.status_code == 200 and killed.json()["detail"].startswith("killed venue-gamma")
    assert process_state(lab, "venue-gamma") == "stopped"
    healed = httpx.post(
        url, json={**body, "action": "heal"}, headers={"X-Api-Key": key}, timeout=60
    )
    assert healed.status_code == 200 and healed.json()["detail"].startswith("restarted")
    assert healthy(lab, "venue-gamma")
    # The restart is recorded where `lab down` will find it.
    assert lab.state.components["venue-gamma"].pid != 0


def test_a_hung_dr_keeps_its_socket_open_but_never_answers(lab: LabRun) -> None:
    assert lab.drctl("chaos", "hang", "dr").returncode == 0
    try:
        assert process_state(lab, "oms-dr") == "hung"
        with socket.create_connection(("127.0.0.1", lab.state.ports.oms_dr), timeout=1):
            pass  # the kernel still accepts the connection...
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(lab.url("oms-dr") + "/health", timeout=0.5)  # ...but nobody answers
    finally:
        assert lab.drctl("chaos", "heal", "dr").returncode == 0
    assert wait_until(lambda: healthy(lab, "oms-dr"), 10)


def test_a_slowed_market_data_source_answers_late_until_healed(lab: LabRun) -> None:
    assert lab.drctl("chaos", "slow", "md", "md-b", "--ms", "2000").returncode == 0
    started = time.monotonic()
    httpx.get(lab.url("md-b") + "/tick", timeout=10).raise_for_status()
    assert time.monotonic() - started >= 2.0
    assert lab.drctl("chaos", "heal", "md", "md-b").returncode == 0
    started = time.monotonic()
    httpx.get(lab.url("md-b") + "/tick", timeout=5).raise_for_status()
    assert time.monotonic() - started < 2.0  # no longer held back (a liveness bound, not a speed)


def test_a_stale_market_data_source_freezes_its_exchange_time(lab: LabRun) -> None:
    assert lab.drctl("chaos", "stale", "md", "md-a").returncode == 0
    first = lab.get("md-a", "/tick?symbol=AAPL")
    assert wait_until(lambda: lab.get("md-a", "/tick?symbol=AAPL")["seq"] != first["seq"], 5), (
        "ticks stopped altogether"
    )
    assert lab.get("md-a", "/tick?symbol=AAPL")["exchange_ts"] == first["exchange_ts"]
    assert lab.drctl("chaos", "heal", "md", "md-a").returncode == 0
    assert wait_until(
        lambda: (
            datetime.fromisoformat(lab.get("md-a", "/tick?symbol=AAPL")["exchange_ts"])
            > datetime.fromisoformat(first["exchange_ts"])
        ),
        5,
    )


def test_unknown_chaos_targets_get_a_one_line_error(lab: LabRun) -> None:
    for args, message in [
        (
            ("kill", "venue", "delta"),
            "unknown venue 'delta'; the lab's venues are alpha, beta, gamma",
        ),
        (("kill", "moon"), "unknown chaos target 'moon'"),
        (("stale", "primary"), "stale applies to market-data sources only"),
    ]:
        result = lab.drctl("chaos", *args)
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and message in result.stderr
        assert "Traceback" not in result.stderr


def test_losing_nats_fences_the_primary_by_itself_and_heal_brings_the_stream_back(
    lab: LabRun,
) -> None:
    # Last in the module: the primary stays fenced afterwards, as it must.
    assert lab.get("oms-primary", "/health")["trading_state"] == "trading"
    applied_before = lab.get("oms-dr", "/health")["last_applied_seq"]
    assert lab.drctl("chaos", "kill", "nats").returncode == 0
    killed_at = time.monotonic()
    assert wait_until(lambda: lab.get("oms-primary", "/health")["trading_state"] == "fenced", 10), (
        "the primary kept trading without its lease"
    )
    ttl_s = 3.0  # the lab topology's lease.ttl_s
    # Fencing on time is the keeper's rule (tests/integration/test_lease_keeper.py); here a
    # liveness bound generous enough for a loaded machine.
    assert time.monotonic() - killed_at <= ttl_s + 5.0
    reason = lab.get("oms-primary", "/health")["fenced_reason"]
    assert "could not renew the lease within its TTL" in reason
    assert lab.drctl("chaos", "heal", "nats").returncode == 0
    # JetStream kept its store: the DR still has everything it applied, and the stream is back.
    assert lab.get("oms-dr", "/health")["last_applied_seq"] >= applied_before
    assert lab.get("oms-primary", "/health")["trading_state"] == "fenced"
