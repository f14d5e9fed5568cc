"""`drctl venues check` on a real lab: each venue through its own adapter (alpha lab, beta
ccxt on the Binance face, gamma FIX 4.4), read-only, and a venue that fails is named with why.

The lab's venues allow one session per member across their faces, and the lab topology's FIX
CompID for the runbooks is the member the lab OMS trades as: a FIX logon while that OMS trades
would end its session. So these checks run with the primary OMS fenced through the DR-control
API (it logs out of every venue cleanly), the member idle, as a desk would run the check on a
CompID of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest

from lab import stack
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import venue_secret_env
from tests.lab.conftest import LabRun


@pytest.fixture(scope="module")
def idle_member(lab: LabRun) -> LabRun:
    epoch = lab.get("oms-primary", "/health")["epoch"]
    response = httpx.post(
        lab.url("oms-primary") + "/control/deactivate", json={"epoch": epoch}, timeout=10
    )
    response.raise_for_status()
    assert response.json()["trading_state"] == "fenced"
    return lab


def venues_check(
    lab: LabRun, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drctl", "--config", str(lab.root / "topology.toml"),
         "venues", "check", "--system", "lab", *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    document = json.loads(result.stdout)
    return {v["venue"]: v for v in document["venues"]}


def test_each_venue_answers_ok_through_lab_ccxt_and_fix(idle_member: LabRun) -> None:
    lab = idle_member
    result = venues_check(lab, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["system"] == "lab" and document["ok"] is True
    assert document["fills_minutes"] == 15
    venues = rows(result)
    assert {v: r["adapter"] for v, r in venues.items()} == {
        "alpha": "lab",
        "beta": "ccxt",
        "gamma": "fix44",
    }
    for row in venues.values():
        assert row["ok"] is True and row["error"] is None, row
        assert row["session_s"] > 0
        assert isinstance(row["open_orders"], int) and isinstance(row["fills"], int)
    # Only the desk-owned gateway refuses stale epochs; FIX declares mass status and cancel.
    assert venues["alpha"]["capabilities"] == ["epoch_refusal"]
    assert venues["beta"]["capabilities"] == []
    assert venues["gamma"]["capabilities"] == ["mass_cancel", "mass_status"]


def test_the_table_for_a_person_names_each_venue_and_its_adapter(idle_member: LabRun) -> None:
    lab = idle_member
    result = venues_check(lab, "--fills-minutes", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["venue", "adapter", "check"]
    by_venue = {line.split()[0]: line.split() for line in lines[1:4]}
    assert {v: cells[1:3] for v, cells in by_venue.items()} == {
        "alpha": ["lab", "ok"],
        "beta": ["ccxt", "ok"],
        "gamma": ["fix44", "ok"],
    }
    assert lines[-1] == "all 3 venues of lab ok (fills counted over the last 5 min)"


def test_a_wrong_secret_fails_its_venue_naming_the_variable_never_the_value(
    idle_member: LabRun,
) -> None:
    lab = idle_member
    wrong = "0" * 64
    secret_env = venue_secret_env("beta")
    result = venues_check(lab, "--json", env={secret_env: wrong})
    assert result.returncode == 1, result.stdout + result.stderr
    venues = rows(result)
    assert venues["beta"]["ok"] is False
    assert venues["beta"]["error"].startswith("auth rejected: check "), venues["beta"]
    assert secret_env in venues["beta"]["error"]
    assert venues["alpha"]["ok"] and venues["gamma"]["ok"], venues
    secrets = read_secrets(LabPaths(lab.root)).values()
    for text in (result.stdout, result.stderr):
        assert wrong not in text
        assert not [s for s in secrets if s in text]


def test_a_killed_venue_is_a_failed_row_and_exit_status_1(idle_member: LabRun) -> None:
    lab = idle_member
    stack.chaos(lab.root, "kill", "venue", "gamma", ms=0)
    try:
        result = venues_check(lab, "--timeout", "10")
    finally:
        stack.chaos(lab.root, "heal", "venue", "gamma", ms=0)
    assert result.returncode == 1, result.stdout + result.stderr
    gamma = next(line for line in result.stdout.splitlines() if line.startswith("gamma"))
    assert "FAILED" in gamma and "unavailable:" in gamma, result.stdout
    assert result.stdout.splitlines()[-1].startswith("1 of 3 venues of lab FAILED")
    # The other venues answered whatever happened to gamma.
    for venue in ("alpha", "beta"):
        line = next(x for x in result.stdout.splitlines() if x.startswith(venue))
        assert line.split()[2] == "ok", line
