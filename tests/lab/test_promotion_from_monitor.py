"""The monitor promotes: its quorum is the confirmation, and the primary is not probed again.
Afterwards the lab's /metrics say so (RTO, steps, verdicts, detection, lag) to Prometheus.

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

from activities.metrics import (
    DETECTION_LATENCY,
    LAST_PROMOTION_RTO,
    LAST_PROMOTION_STEP_DURATION,
    LEASE_EPOCH,
    MONITOR_PHASE,
    MONITOR_VANTAGE_VERDICT,
    MONITOR_VERDICTS,
    PROMOTION_RTO,
    PROMOTION_STEP_DURATION,
    PROMOTIONS,
    REPLICATION_DB_LAG_BYTES,
    REPLICATION_DB_LAG_SECONDS,
    REPLICATION_STREAM_LAG_EVENTS,
    REPLICATION_STREAM_LAG_SECONDS,
    VENUE_RTO,
)
from domain.promotion import PromotionReport
from domain.topology import load_topology
from lab.processes import wait_until
from lab.topology_gen import VANTAGES
from tests.lab.conftest import LabRun, drctl_runbook, running_lab
from tests.lab.scrape import samples, scrape, value
from tests.unit.test_dashboard_metrics import (
    alert_queries,
    dashboard_queries,
    queried_but_not_exported,
)
from workflows.data_converter import DATA_CONVERTER

PROMOTION_ID = "dr-promotion/lab"


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabRun, PromotionReport]]:
    with running_lab(tmp_path_factory) as lab:
        started = drctl_runbook(lab, "monitor", "start", "--system", "lab")
        assert started.returncode == 0, started.stderr
        # The feed monitor too: the metrics scraped after the promotion are a whole lab's.
        feed = drctl_runbook(lab, "monitor", "start", "--feed", "lab-md")
        assert feed.returncode == 0, feed.stderr
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


# --- what Prometheus scrapes afterwards -----------------------------------------------------


def _urls(lab: LabRun) -> dict[str, str]:
    return dict(lab.status()["metrics"])


def test_the_worker_exports_the_rto_and_step_durations(
    promoted: tuple[LabRun, PromotionReport],
) -> None:
    lab, report = promoted
    worker = _urls(lab)["worker"]
    outcome = {"system": "lab", "outcome": "promoted"}
    assert report.rto_s is not None
    assert value(worker, PROMOTIONS + "_total", **outcome) == 1
    assert value(worker, PROMOTION_RTO + "_count", **outcome) == 1
    assert value(worker, LAST_PROMOTION_RTO, **outcome) == pytest.approx(report.rto_s, abs=0.01)
    durations = {s.name: s.duration_s for s in report.steps if s.duration_s is not None}
    for step in ("acquire_lease", "check_db_replica", "promote_db_replica", "sync_dr_state"):
        assert value(worker, PROMOTION_STEP_DURATION + "_count", system="lab", step=step) == 1
        last = value(worker, LAST_PROMOTION_STEP_DURATION, system="lab", step=step)
        assert last == pytest.approx(durations[step], abs=0.01), step
    for venue in report.venue_rto_s:
        assert value(worker, VENUE_RTO + "_count", system="lab", venue=venue) == 1, venue
    assert value(worker, LEASE_EPOCH, system="lab") == report.epoch


def test_the_worker_exports_each_vantage_verdict_the_phase_and_the_detection(
    promoted: tuple[LabRun, PromotionReport],
) -> None:
    lab, _ = promoted
    worker = _urls(lab)["worker"]
    # Every vantage point said "down" about the primary before the monitor promoted.
    for vantage in VANTAGES:
        down = value(
            worker, MONITOR_VERDICTS + "_total", target="lab", vantage=vantage, verdict="down"
        )
        assert down is not None and down >= 1, vantage
    levels = {
        s.labels["vantage"] for s in samples(worker, MONITOR_VANTAGE_VERDICT)
        if s.labels.get("target") == "lab"
    }  # fmt: skip
    assert levels == set(VANTAGES)
    phases = {s.labels["phase"]: s.value for s in samples(worker, MONITOR_PHASE)
              if s.labels.get("system") == "lab"}  # fmt: skip
    assert sum(phases.values()) == 1, phases  # exactly one current phase
    assert value(worker, DETECTION_LATENCY + "_count", system="lab") == 1


def test_the_replication_lag_is_exported_for_the_stream_and_the_database(
    promoted: tuple[LabRun, PromotionReport],
) -> None:
    lab, _ = promoted
    worker = _urls(lab)["worker"]
    for name in (
        REPLICATION_STREAM_LAG_EVENTS,
        REPLICATION_STREAM_LAG_SECONDS,
        REPLICATION_DB_LAG_BYTES,
        REPLICATION_DB_LAG_SECONDS,
    ):
        lag = value(worker, name, system="lab")
        assert lag is not None and lag >= 0, name


def test_the_dashboard_and_alert_rules_query_only_what_this_lab_exports(
    promoted: tuple[LabRun, PromotionReport],
) -> None:
    lab, _ = promoted
    # The killed primary's OMS serves nothing; the DR OMS exports the same OMS metrics.
    urls = _urls(lab)
    exported = {s.name for name in ("worker", "oms-dr") for s in scrape(urls[name])}
    missing = queried_but_not_exported({**dashboard_queries(), **alert_queries()}, exported)
    assert not missing, f"queried but not in this lab's scrape: {missing}"
