"""An operator lowers a risk limit on the primary (it goes to the database only), and the
primary region dies a moment later. The promotion checks, fences and promotes the DR database,
the DR OMS loads the limit from it and enforces it, and the report says what the database did.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import psycopg
import pytest

from domain.promotion import PromotionReport
from lab.oms_schema import STALE_EPOCH_SQLSTATE
from lab.processes import wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import PRIMARY_DSN_ENV, REPLICA_DSN_ENV
from tests.lab.conftest import LabRun, drctl_runbook, running_lab

LOWERED = Decimal(3)


class Incident:
    def __init__(self, lab: LabRun, report: PromotionReport) -> None:
        self.lab = lab
        self.report = report


@pytest.fixture(scope="module")
def incident(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Incident]:
    with running_lab(tmp_path_factory) as lab:
        assert wait_until(lambda: "NVDA" in lab.get("oms-primary", "/health")["risk_limits"], 30)
        changed = httpx.post(
            lab.url("oms-primary") + "/admin/risk-limits",
            json={"symbol": "NVDA", "max_position": str(LOWERED)},
            timeout=5,
        )
        assert changed.status_code == 200, changed.text
        assert lab.drctl("chaos", "kill", "primary").returncode == 0
        result = drctl_runbook(
            lab, "failover", "--system", "lab", "--wait", "--json", "--as", "oncall"
        )
        assert result.returncode == 0, result.stderr + result.stdout
        yield Incident(lab, PromotionReport.model_validate_json(result.stdout))


def sql(lab: LabRun, variable: str, statement: str, *params: object) -> list[tuple[object, ...]]:
    dsn = read_secrets(LabPaths(lab.root))[variable]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


def test_the_dr_oms_enforces_the_limit_changed_just_before_the_primary_died(
    incident: Incident,
) -> None:
    report = incident.report
    assert report.outcome.value == "promoted", report.outcome_detail
    health = incident.lab.get("oms-dr", "/health")
    assert (health["role"], health["epoch"]) == ("active", report.epoch)
    assert Decimal(health["risk_limits"]["NVDA"]) == LOWERED
    assert health["database_error"] is None


def test_the_report_records_the_database_steps_and_what_dr_loaded(incident: Incident) -> None:
    report = incident.report
    completed = {s.name for s in report.steps if s.status == "completed"}
    assert {"check_db_replica", "fence_db_primary", "promote_db_replica"} <= completed
    database = report.database
    assert database is not None and database.beyond_maximum is None
    assert database.promotion is not None and database.promotion.promoted
    assert database.promotion.epoch == report.epoch
    assert database.loaded is not None and "NVDA" in database.loaded.symbols
    assert database.loaded.risk_parameters >= 4


def test_the_dr_database_is_primary_and_the_old_one_refuses_the_old_epoch(
    incident: Incident,
) -> None:
    lab, report = incident.lab, incident.report
    roles = {
        c["name"]: c["detail"].get("role")
        for c in lab.status()["components"]
        if c["kind"] == "postgres"
    }
    assert roles["postgres-dr"] == "primary"

    # The promoted database takes the new epoch's writes (the DR OMS records its orders)...
    def recorded_at_new_epoch() -> bool:
        count = "SELECT count(*) FROM pending_orders WHERE epoch = %s"
        return bool(sql(lab, REPLICA_DSN_ENV, count, report.epoch)[0][0])

    assert wait_until(recorded_at_new_epoch, 60)
    # ...and neither database commits a write of the old one.
    old_write = "SELECT * FROM oms_write_risk_limit(%s, 'NVDA', 1000)"
    for variable in (PRIMARY_DSN_ENV, REPLICA_DSN_ENV):
        with pytest.raises(psycopg.Error) as refused:
            sql(lab, variable, old_write, report.previous_epoch)
        assert refused.value.sqlstate in (STALE_EPOCH_SQLSTATE, "25006"), variable
    assert sql(lab, REPLICA_DSN_ENV, "SELECT max_position FROM risk_parameters "
               "WHERE symbol = 'NVDA'") == [(LOWERED,)]  # fmt: skip
