"""The lab's database as a user sees it: a primary PostgreSQL and its streaming DR replica beside
the OMS, risk limits that live only in the database, the epoch fence, and database chaos.

One lab for the module. The tests run in file order, and the last one on the lab promotes the
DR database, so the lab is never put back the way it was.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from temporalio.testing import ActivityEnvironment

from activities.database import DatabaseActivities, DbEpochRequest
from domain.topology import load_topology
from lab.oms_schema import STALE_EPOCH_SQLSTATE
from lab.processes import free_port, wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import (
    PRIMARY_DSN_ENV,
    REPLICA_DSN_ENV,
    SYSTEM,
    VENUES,
    LabPorts,
    lab_topology_toml,
    venue_key_env,
    venue_secret_env,
)
from tests.lab.conftest import LabRun, lease_of


def database(lab: LabRun, name: str) -> dict[str, Any]:
    """One postgres component of `drctl lab status --json`."""
    return next(c for c in lab.status()["components"] if c["name"] == name)


def dsn(lab: LabRun, variable: str) -> str:
    return read_secrets(LabPaths(lab.root))[variable]


def sql(lab: LabRun, variable: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """One statement over a direct connection, as any client holding the DSN could send it."""
    with psycopg.connect(dsn(lab, variable), autocommit=True, connect_timeout=2) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


def max_position(lab: LabRun, variable: str, symbol: str) -> Decimal | None:
    rows = sql(lab, variable, "SELECT max_position FROM risk_parameters WHERE symbol = %s", symbol)
    return rows[0][0] if rows else None


def set_risk_limit(lab: LabRun, symbol: str, limit: int) -> dict[str, Any]:
    response = httpx.post(
        lab.url("oms-primary") + "/admin/risk-limits",
        json={"symbol": symbol, "max_position": limit},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def limits_in_force(lab: LabRun, oms: str) -> dict[str, Decimal]:
    return {s: Decimal(v) for s, v in lab.get(oms, "/health")["risk_limits"].items()}


def test_status_shows_the_primary_database_and_its_streaming_dr_replica(lab: LabRun) -> None:
    primary, dr = database(lab, "postgres-primary"), database(lab, "postgres-dr")
    assert primary["healthy"] and primary["process"] == "running" and primary["pid"] > 0
    assert primary["detail"]["role"] == "primary"
    assert dr["healthy"] and dr["detail"]["role"] == "replica"
    assert dr["detail"]["streaming"] is True and dr["detail"]["replay_paused"] is False
    assert dr["detail"]["lag_bytes"] >= 0 and dr["detail"]["lag_s"] >= 0
    text = lab.drctl("status").stdout
    assert "postgres-primary" in text and "primary" in text
    assert "postgres-dr" in text and "replica, streaming, lag" in text
    # The topology names the variables; the DSNs are in the lab's secrets only.
    config = load_topology(lab.root / "topology.toml").system(SYSTEM).database
    assert config is not None
    assert (config.primary_dsn_env, config.replica_dsn_env) == (PRIMARY_DSN_ENV, REPLICA_DSN_ENV)
    topology_text = (lab.root / "topology.toml").read_text()
    for variable in (PRIMARY_DSN_ENV, REPLICA_DSN_ENV):
        assert dsn(lab, variable) not in topology_text
    assert "postgresql://" not in topology_text


def test_the_primary_oms_records_its_pending_orders_under_its_epoch(lab: LabRun) -> None:
    epoch = lab.get("oms-primary", "/health")["epoch"]

    def recorded() -> bool:
        rows = sql(lab, PRIMARY_DSN_ENV, "SELECT DISTINCT epoch FROM pending_orders")
        return bool(rows) and {r[0] for r in rows} == {epoch}

    assert wait_until(recorded, 30)
    # Every symbol the lab trades has a limit, written by the OMS that took the lease.
    seeded = sql(lab, PRIMARY_DSN_ENV, "SELECT symbol, epoch FROM risk_parameters")
    assert {s for s, _ in seeded} >= {"AAPL", "MSFT", "NVDA", "ESZ6"}
    assert limits_in_force(lab, "oms-primary").keys() >= {"AAPL", "MSFT", "NVDA", "ESZ6"}


def test_a_risk_limit_changed_through_the_operator_endpoint_reaches_the_replica_not_the_stream(
    lab: LabRun,
) -> None:
    epoch = lab.get("oms-primary", "/health")["epoch"]
    changed = set_risk_limit(lab, "NVDA", 3)
    assert Decimal(changed["max_position"]) == 3 and changed["epoch"] == epoch
    # In the primary's database, under the writer's epoch; the primary enforces it at once.
    rows = sql(lab, PRIMARY_DSN_ENV, "SELECT max_position, epoch FROM risk_parameters "
               "WHERE symbol = 'NVDA'")  # fmt: skip
    assert rows == [(Decimal(3), epoch)]
    assert limits_in_force(lab, "oms-primary")["NVDA"] == 3
    # On the DR replica by streaming replication...
    assert wait_until(lambda: max_position(lab, REPLICA_DSN_ENV, "NVDA") == 3, 10)
    # ...and not on the stream: the DR OMS applies every stream event, yet does not know it.
    assert limits_in_force(lab, "oms-dr").get("NVDA") != 3
    # The DR OMS's sync covers the database: it loads from its (replica) database and says what.
    response = httpx.post(lab.url("oms-dr") + "/control/sync", timeout=30)
    assert response.status_code == 200, response.text
    loaded = response.json()["database"]
    assert loaded["risk_parameters"] >= 4 and loaded["pending_orders"] >= 0
    assert "NVDA" in loaded["symbols"] and loaded["last_change_at"] is not None
    assert limits_in_force(lab, "oms-dr")["NVDA"] == 3


def test_the_primary_sends_no_order_that_could_breach_a_lowered_limit(lab: LabRun) -> None:
    def refusals() -> int:
        return int(lab.get("oms-primary", "/health")["risk_refusals"].get("MSFT", 0))

    before = refusals()
    set_risk_limit(lab, "MSFT", 0)
    try:
        # Whatever the position, one side of MSFT now breaches at limit 0: the strategy's
        # orders on it are held back, and counted.
        assert wait_until(lambda: refusals() >= before + 3, 60)
    finally:
        set_risk_limit(lab, "MSFT", 1000)


def test_a_risk_limit_change_is_refused_by_the_standby_dr(lab: LabRun) -> None:
    response = httpx.post(
        lab.url("oms-dr") + "/admin/risk-limits", json={"symbol": "AAPL", "max_position": 1},
        timeout=5,
    )  # fmt: skip
    assert response.status_code == 409
    assert "standby" in response.json()["detail"]


def test_chaos_lag_db_grows_the_replica_lag_until_heal(lab: LabRun) -> None:
    def lag() -> dict[str, Any]:
        return dict(database(lab, "postgres-dr")["detail"])

    paused = lab.drctl("chaos", "lag", "db")
    assert paused.returncode == 0 and "replay paused on postgres-dr" in paused.stdout
    try:
        # The primary OMS keeps writing; the replica receives the WAL and applies none of it.
        assert wait_until(lambda: lag()["lag_bytes"] > 0, 20)
        first = lag()["lag_bytes"]
        assert wait_until(lambda: lag()["lag_bytes"] > first and lag()["lag_s"] > 0, 20)
        assert lag()["replay_paused"] is True
        assert "paused" in lab.drctl("status").stdout
    finally:
        healed = lab.drctl("chaos", "heal", "db")
    assert healed.returncode == 0 and "replay resumed on postgres-dr" in healed.stdout
    assert wait_until(lambda: not lag()["replay_paused"] and lag()["lag_s"] < 1.0, 20)


def test_the_old_primary_brought_back_after_the_dr_promotion_cannot_commit_its_old_epoch(
    lab: LabRun,
) -> None:
    epoch, _ = asyncio.run(lease_of(lab))
    killed = lab.drctl("chaos", "kill", "db-primary")
    assert killed.returncode == 0 and "killed postgres-primary" in killed.stdout
    assert database(lab, "postgres-primary")["detail"]["role"] == "down"
    # Promote the DR database as the promotion's step does: the real activity, the lab's DSNs.
    steps = DatabaseActivities(
        load_topology(lab.root / "topology.toml"), read_secrets(LabPaths(lab.root))
    )
    promoted = asyncio.run(
        ActivityEnvironment().run(
            steps.promote_db_replica, DbEpochRequest(system=SYSTEM, epoch=epoch + 1)
        )
    )
    assert promoted.promoted and promoted.epoch == epoch + 1
    assert database(lab, "postgres-dr")["detail"]["role"] == "primary"
    # Healed, the former primary comes back only as a replica of the promoted one.
    healed = lab.drctl("chaos", "heal", "db")
    assert healed.returncode == 0 and "postgres-primary started as replica" in healed.stdout
    assert database(lab, "postgres-primary")["detail"]["role"] == "replica"
    # Directly over SQL, as the old OMS would write: a server in recovery commits nothing,
    # whatever the client sets.
    old_write = "SELECT * FROM oms_write_risk_limit(%s, 'AAPL', 1)"
    for statement in ("SET default_transaction_read_only = off", None):
        with (
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
            psycopg.connect(dsn(lab, PRIMARY_DSN_ENV), autocommit=True) as conn,
        ):
            if statement:
                conn.execute(statement.encode())
            conn.execute(old_write.encode(), (epoch,))
    # The promoted database refuses the old epoch itself, and takes the new one.
    with pytest.raises(psycopg.Error) as refused:
        sql(lab, REPLICA_DSN_ENV, old_write, epoch)
    assert refused.value.sqlstate == STALE_EPOCH_SQLSTATE
    sql(lab, REPLICA_DSN_ENV, old_write, epoch + 1)
    assert max_position(lab, REPLICA_DSN_ENV, "AAPL") == 1


def test_an_oms_whose_database_variable_is_unset_says_which_and_does_not_start(
    tmp_path: Path,
) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text(lab_topology_toml(LabPorts()))
    env = {k: v for k, v in os.environ.items() if k not in (PRIMARY_DSN_ENV, REPLICA_DSN_ENV)}
    env |= {venue_key_env(v): "key" for v in VENUES} | {venue_secret_env(v): "s" for v in VENUES}
    for region, variable, value in (
        ("primary", PRIMARY_DSN_ENV, None),
        ("dr", REPLICA_DSN_ENV, "not a connection string"),
    ):
        run_env = env if value is None else env | {variable: value}
        result = subprocess.run(
            [sys.executable, "-m", "lab.oms", "--config", str(topology), "--system", SYSTEM,
             "--region", region, "--port", str(free_port())],
            capture_output=True, text=True, env=run_env, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert variable in result.stderr and "Traceback" not in result.stderr
        assert value is None or value not in result.stderr  # the name, never the value
