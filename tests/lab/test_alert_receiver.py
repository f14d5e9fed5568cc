"""The lab alert receiver, as a webhook sender and `drctl lab alerts` see it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from drctl import lab_alerts
from lab import processes
from lab.alerts.app import create_app
from lab.processes import LabError, ProcessSpec
from lab.stack import Component, LabPaths, LabState, write_state
from lab.topology_gen import ALERT_URL_ENV, LabPorts

TOKEN = "s3cret-token"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as http:
        yield http


async def test_a_wrong_token_is_not_found_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/alerts/guess", json={"summary": "x"}, headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 404
    assert (await client.get("/alerts")).json() == {"alerts": []}


async def test_a_repeated_idempotency_key_is_acknowledged_and_stored_once(
    client: httpx.AsyncClient,
) -> None:
    for expected in (False, True):
        response = await client.post(
            f"/alerts/{TOKEN}", json={"summary": "DR promoted"}, headers={"Idempotency-Key": "k1"}
        )
        assert response.status_code == 200
        assert response.json() == {"duplicate": expected}

    [stored] = (await client.get("/alerts")).json()["alerts"]
    assert stored["idempotency_key"] == "k1"
    assert stored["alert"] == {"summary": "DR promoted"}
    assert stored["received_at"]


async def test_a_body_that_is_not_a_json_object_is_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post(f"/alerts/{TOKEN}", json=["not", "an", "object"])

    assert response.status_code == 422


def test_without_the_url_variable_the_receiver_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != ALERT_URL_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "lab.alerts", "--port", str(processes.free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert ALERT_URL_ENV in result.stderr


def run_drctl_lab_alerts(lab_dir: Path, *options: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path)
    lab_alerts.add_parser(parser.add_subparsers(dest="lab_command", required=True))
    args = parser.parse_args(["--dir", str(lab_dir), "alerts", *options])
    return int(args.run(args))


def test_drctl_lab_alerts_prints_one_line_per_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = processes.free_port()
    spec = ProcessSpec(
        name="alerts",
        argv=[sys.executable, "-m", "lab.alerts", "--port", str(port)],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={ALERT_URL_ENV: f"http://127.0.0.1:{port}/alerts/{TOKEN}"},
        log_path=tmp_path / "alerts.log",
    )
    pid = processes.start(spec)
    try:
        processes.wait_ready(spec, pid, 30)
        paths = LabPaths(tmp_path)
        state = LabState(dir=paths.root, topology_path=paths.topology, ports=LabPorts())
        state.components["alerts"] = Component(spec=spec, pid=pid, kind="alerts")
        write_state(paths, state)
        alert = {"kind": "promotion_completed", "severity": "info", "summary": "DR is trading"}
        httpx.post(spec.env[ALERT_URL_ENV], json=alert, timeout=5).raise_for_status()

        assert run_drctl_lab_alerts(tmp_path) == 0
        [line] = capsys.readouterr().out.splitlines()
        assert "info" in line and "promotion_completed" in line and "DR is trading" in line

        assert run_drctl_lab_alerts(tmp_path, "--json") == 0
        assert '"DR is trading"' in capsys.readouterr().out
    finally:
        processes.stop(pid)


def test_drctl_lab_alerts_without_a_receiver_says_how_to_fix_it(tmp_path: Path) -> None:
    paths = LabPaths(tmp_path)
    write_state(paths, LabState(dir=paths.root, topology_path=paths.topology, ports=LabPorts()))

    with pytest.raises(LabError, match="restart it with drctl lab up"):
        run_drctl_lab_alerts(tmp_path)
