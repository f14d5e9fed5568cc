"""The monitor promotes: its quorum is the confirmation, and the primary is not probed again.

A manual `drctl failover` probes the primary from DR for about two seconds (see
test_promotion_unplanned.py); a promotion the SystemMonitor starts carries the evidence its
vantage points already gathered, and the report records it as the confirm_primary_down step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from domain.promotion import PromotionReport
from domain.topology import load_topology
from lab.processes import wait_until
from lab.topology_gen import VANTAGES
from tests.lab.conftest import LabRun, drctl_runbook, running_lab
from workflows.data_converter import DATA_CONVERTER

PROMOTION_ID = "dr-promotion/lab"


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, PromotionReport]]:
    with running_lab(tmp_path_factory) as lab:
        started = drctl_runbook(lab, "monitor", "start", "--system", "lab")
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: _ready(lab), 60, poll_s=0.5), _monitor(lab)
        assert lab.drctl("chaos", "kill", "primary").returncode == 0
        assert wait_until(lambda: _promotion(lab)["state"] == "completed", 120, poll_s=0.5)
        yield lab, asyncio.run(_report(lab))


def _monitor(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "monitor", "status", "--system", "lab", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _ready(lab: LabRun) -> bool:
    """Nominal, every vantage point healthy, and DR ready (a promotion while DR is not ready
    stops at its gate, which is another test's scenario)."""
    status = _monitor(lab)
    readiness = status.get("readiness") or {}
    healthy = all(v == "healthy" for v in status["verdicts"].values())
    return status["phase"] == "nominal" and healthy and readiness.get("ready") is True


def _promotion(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "status", "--system", "lab", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


async def _client(lab: LabRun) -> Client:
    topology = load_topology(lab.root / "topology.toml")
    return await Client.connect(topology.temporal.address, data_converter=DATA_CONVERTER)


async def _report(lab: LabRun) -> PromotionReport:
    client = await _client(lab)
    return await client.get_workflow_handle(PROMOTION_ID, result_type=PromotionReport).result()


def test_the_monitors_quorum_is_recorded_as_the_confirmation(
    promoted: tuple[LabRun, PromotionReport],
) -> None:
    _, report = promoted
    assert report.outcome.value == "promoted", report.outcome_detail
    confirmation = report.confirmation
    assert confirmation is not None and confirmation.down
    evidence = confirmation.evidence
    assert evidence is not None and evidence.monitor_workflow_id == "dr-monitor/lab"
    assert evidence.shortfall() is None
    assert {v.vantage for v in evidence.verdicts} <= set(VANTAGES)
    step = next(s for s in report.steps if s.name == "confirm_primary_down")
    assert step.status == "completed"
    assert step.detail.startswith("monitor dr-monitor/lab decided at ")
    assert f"(quorum {evidence.quorum})" in step.detail


def test_the_primary_is_not_probed_again(promoted: tuple[LabRun, PromotionReport]) -> None:
    lab, _ = promoted

    async def scheduled() -> list[str]:
        client = await _client(lab)
        history = await client.get_workflow_handle(PROMOTION_ID).fetch_history()
        return [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        ]

    activities = asyncio.run(scheduled())
    assert "acquire_lease" in activities
    assert "confirm_primary_down" not in activities


def test_every_venue_has_its_own_rto(promoted: tuple[LabRun, PromotionReport]) -> None:
    _, report = promoted
    assert report.held_venues == []
    assert set(report.venue_rto_s) == {v.venue for v in report.venues}
    assert report.last_venue_rto_s == max(report.venue_rto_s.values()) == report.rto_s
