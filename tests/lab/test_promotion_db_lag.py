"""The DR database is behind when the primary region dies: the promotion asks a person before it
promotes it, the decision and who took it are in the report, and "abort" leaves everything
fenced: the lease moved, DR never trades, the DR database is not promoted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from domain.promotion import PromotionProgress, PromotionReport
from lab.processes import wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import REPLICA_DSN_ENV
from tests.faults.conftest import PROMOTION_ID, promotion_result, temporal
from tests.lab.conftest import LabRun, drctl_runbook, lease_of, running_lab

# The lab topology's max_lag_on_failover_s: the replica must be further behind than this.
MAX_LAG_S = 5.0


class Aborted:
    def __init__(self, lab: LabRun, report: PromotionReport, question: str) -> None:
        self.lab = lab
        self.report = report
        self.question = question


def replica_lag(lab: LabRun) -> dict[str, Any]:
    component = next(c for c in lab.status()["components"] if c["name"] == "postgres-dr")
    return dict(component["detail"])


@pytest.fixture(scope="module")
def aborted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Aborted]:
    with running_lab(tmp_path_factory) as lab:
        assert wait_until(lambda: "AAPL" in lab.get("oms-primary", "/health")["risk_limits"], 30)
        assert lab.drctl("chaos", "lag", "db").returncode == 0
        # A change the replica receives but does not apply, then time for it to age.
        changed = httpx.post(
            lab.url("oms-primary") + "/admin/risk-limits",
            json={"symbol": "AAPL", "max_position": "7"},
            timeout=5,
        )
        assert changed.status_code == 200, changed.text
        assert wait_until(lambda: (replica_lag(lab)["lag_s"] or 0) > MAX_LAG_S + 0.5, 30)
        assert lab.drctl("chaos", "kill", "primary").returncode == 0
        started = drctl_runbook(lab, "failover", "--system", "lab", "--as", "oncall")
        assert started.returncode == 0, started.stdout + started.stderr
        question = asyncio.run(_question_asked(lab))
        decided = drctl_runbook(
            lab, "decide", PROMOTION_ID, "abort", "--as", "bob",
            "--comment", "DR database too far behind",
        )  # fmt: skip
        assert decided.returncode == 0, decided.stdout + decided.stderr
        report = asyncio.run(_report(lab))
        yield Aborted(lab, report, question)


async def _question_asked(lab: LabRun) -> str:
    client = await temporal(lab)
    handle = client.get_workflow_handle(PROMOTION_ID)

    async def waiting() -> str:
        progress = await handle.query("progress", result_type=PromotionProgress)
        return progress.waiting_for or ""

    for _ in range(600):
        if "decision" in (asked := await waiting()):
            return asked
        await asyncio.sleep(0.1)  # poll
    raise AssertionError(f"no operator decision asked for: {await waiting()!r}")


async def _report(lab: LabRun) -> PromotionReport:
    return await promotion_result(await temporal(lab), 60)


def test_the_promotion_asks_a_person_naming_the_database_lag(aborted: Aborted) -> None:
    assert "database replica is behind" in aborted.question, aborted.question
    gate = next(s for s in aborted.report.steps if s.name == "database_gate")
    assert gate.status in ("completed", "failed"), gate
    assert not any(
        s.name == "promote_db_replica" and s.status == "completed" for s in aborted.report.steps
    )


def test_the_abort_and_who_took_it_are_in_the_report(aborted: Aborted) -> None:
    assert aborted.report.outcome.value == "aborted", aborted.report.outcome_detail
    decisions = [a for a in aborted.report.actions if a.kind == "decision"]
    assert [(a.by, a.action) for a in decisions] == [("bob", "abort")]
    assert decisions[0].comment == "DR database too far behind"


def test_abort_leaves_everything_fenced(aborted: Aborted) -> None:
    lab = aborted.lab
    # The lease moved (the old primary is fenced by it), but DR never trades and its
    # database is still a replica in recovery: nothing was promoted blind.
    epoch, region = asyncio.run(lease_of(lab))
    assert (epoch, region) == (aborted.report.epoch, "dr")
    assert lab.get("oms-dr", "/health")["trading_state"] != "trading"
    assert lab.get("oms-dr", "/health")["released_venues"] == []
    dsn = read_secrets(LabPaths(lab.root))[REPLICA_DSN_ENV]
    with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row == (True,)
