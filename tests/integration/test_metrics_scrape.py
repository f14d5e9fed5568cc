"""A worker's /metrics, scraped over HTTP and parsed by Prometheus's own text parser.

A real worker in a Prometheus-enabled runtime runs a workflow that records every metric of
activities/metrics.py through the workflow's and the activity's meters; a lab OMS's metrics are
read from its /metrics route. The Grafana dashboard and the alert rules are then checked
against what the scrapes really contain.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from temporalio.worker import Worker

from lab import processes
from lab.oms_metrics import OmsLeaseMetrics, RenewalFailure, add_metrics_route
from tests.conftest import DevServer
from tests.integration.telemetry_client import connect_when_ready
from tests.integration.telemetry_workflows import RecordEveryMetric, record_venue_recovery_metrics
from tests.unit.test_dashboard_metrics import (
    alert_queries,
    dashboard_queries,
    queried_but_not_exported,
)
from workers.telemetry import metrics_runtime

SCRAPE_TIMEOUT_S = 20.0
# Labels a metric of ours may carry: ours (all bounded: topology names and our vocabulary) and
# what the SDK's meters add. Nothing that grows with orders, runs or time.
ALLOWED_LABELS = {
    *("system", "venue", "step", "vantage", "target", "outcome", "phase", "verdict", "gate"),
    *("feed", "source", "kind", "region", "reason"),
    *("namespace", "service_name", "task_queue", "workflow_type", "activity_type", "le"),
}


@dataclass
class Scrape:
    samples: list[Sample]
    text: str

    @property
    def names(self) -> set[str]:
        return {s.name for s in self.samples}

    def named(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.named(name) if labels.items() <= s.labels.items()]
        seen = [s.labels for s in self.named(name)]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples; {name} has {seen}"
        return found[0]


def parse(text: str) -> Scrape:
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return Scrape(samples, text)


async def scrape_until(url: str, wanted: str) -> Scrape:
    """Scrape until ``wanted`` appears: the exporter serves what core has flushed so far."""
    deadline = asyncio.get_running_loop().time() + SCRAPE_TIMEOUT_S
    async with httpx.AsyncClient() as http:
        while True:
            response = await http.get(url)
            response.raise_for_status()
            scrape = parse(response.text)
            if wanted in scrape.names:
                return scrape
            assert asyncio.get_running_loop().time() < deadline, f"{wanted} never appeared"
            await asyncio.sleep(0.2)  # poll


@pytest.fixture(scope="module")
async def worker_scrape(dev_server: DevServer) -> AsyncIterator[Scrape]:
    port = processes.free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")
    client = await connect_when_ready(dev_server, runtime)
    queue = f"metrics-{uuid.uuid4()}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[RecordEveryMetric],
        activities=[record_venue_recovery_metrics],
    ):
        ghosts = await client.execute_workflow(
            RecordEveryMetric.run, "nyse", id=f"metrics-{uuid.uuid4()}", task_queue=queue
        )
        assert ghosts == 2
        scrape = await scrape_until(f"http://127.0.0.1:{port}/metrics", "failover_promotions_total")
    yield scrape
    # The exporter lives as long as its runtime; the client holds the runtime.
    del client, runtime
    gc.collect()
    deadline = asyncio.get_running_loop().time() + SCRAPE_TIMEOUT_S
    while processes.port_in_use(port):
        assert asyncio.get_running_loop().time() < deadline, "the metrics endpoint stayed open"
        await asyncio.sleep(0.1)  # poll


@pytest.fixture(scope="module")
async def oms_scrape() -> Scrape:
    oms = OmsLeaseMetrics("alpha", "primary")
    oms.renewed(epoch=4)
    oms.renewed(epoch=4)
    oms.renewal_failed(RenewalFailure.UNAVAILABLE)
    oms.set_trading(True, epoch=4)
    app = FastAPI()
    add_metrics_route(app, oms)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://oms") as http:
        response = await http.get("/metrics")
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_promotion_rto_outcome_and_step_durations(worker_scrape: Scrape) -> None:
    labels = {"system": "alpha", "outcome": "promoted"}
    assert worker_scrape.value("failover_promotions_total", **labels) == 1
    assert worker_scrape.value("failover_promotion_rto_seconds_count", **labels) == 1
    assert worker_scrape.value("failover_promotion_rto_seconds_sum", **labels) == 14.5
    assert worker_scrape.value("failover_last_promotion_rto_seconds", **labels) == 14.5
    # 14.5 s lands in the 15 s bucket, not the 10 s one: our buckets, in seconds.
    assert worker_scrape.value("failover_promotion_rto_seconds_bucket", le="10", **labels) == 0
    assert worker_scrape.value("failover_promotion_rto_seconds_bucket", le="15", **labels) == 1
    for step, seconds in {"acquire_lease": 0.4, "recover_venues": 12.0}.items():
        assert (
            worker_scrape.value(
                "failover_promotion_step_duration_seconds_sum", system="alpha", step=step
            )
            == seconds
        )
        assert (
            worker_scrape.value(
                "failover_last_promotion_step_duration_seconds", system="alpha", step=step
            )
            == seconds
        )
    assert worker_scrape.value("failover_venue_rto_seconds_sum", system="alpha", venue="nyse") == 12
    assert (
        worker_scrape.value("failover_promotion_waiting_operator", system="alpha", gate="approval")
        == 0
    )


async def test_monitor_phase_verdicts_and_detection(worker_scrape: Scrape) -> None:
    phases = {
        s.labels["phase"]: s.value
        for s in worker_scrape.named("failover_monitor_phase")
        if s.labels["system"] == "alpha"
    }
    assert phases == {
        "nominal": 0,
        "degraded": 1,
        "failover_in_progress": 0,
        "failover_complete": 0,
    }
    for vantage, verdict, level in (("east", "down", 3), ("west", "healthy", 0)):
        assert (
            worker_scrape.value(
                "failover_monitor_verdicts_total", target="alpha", vantage=vantage, verdict=verdict
            )
            == 1
        )
        assert (
            worker_scrape.value("failover_monitor_vantage_verdict", target="alpha", vantage=vantage)
            == level
        )
    assert worker_scrape.value("failover_detection_latency_seconds_sum", system="alpha") == 3.5


async def test_lag_waits_and_ghosts_recorded_by_an_activity(worker_scrape: Scrape) -> None:
    by_activity = {"activity_type": "record_venue_recovery_metrics"}
    lag = {"system": "alpha", **by_activity}
    assert worker_scrape.value("failover_replication_stream_lag_events", **lag) == 3
    assert worker_scrape.value("failover_replication_stream_lag_seconds", **lag) == 0.25
    assert worker_scrape.value("failover_replication_db_lag_bytes", **lag) == 4096
    assert worker_scrape.value("failover_replication_db_lag_seconds", **lag) == 0.5
    for kind, seconds in (("cooldown", 2.0), ("retry_after", 1.0)):
        assert (
            worker_scrape.value("failover_venue_wait_seconds_sum", venue="nyse", kind=kind)
            == seconds
        )
    assert worker_scrape.value("failover_ghost_orders_cancelled_total", venue="nyse") == 2


async def test_lease_epoch_and_feed_source(worker_scrape: Scrape) -> None:
    assert worker_scrape.value("failover_lease_epoch", system="alpha") == 7
    assert worker_scrape.value("failover_feed_active_rank", feed="md") == 2
    assert worker_scrape.value("failover_feed_active_source", feed="md", source="backup") == 1
    assert worker_scrape.value("failover_feed_active_source", feed="md", source="main") == 0


async def test_the_sdk_metrics_share_the_endpoint(worker_scrape: Scrape) -> None:
    assert (
        worker_scrape.value("temporal_workflow_completed_total", workflow_type="RecordEveryMetric")
        >= 1
    )
    assert worker_scrape.named("temporal_activity_execution_latency_bucket")
    assert "temporal_num_pollers" in worker_scrape.names


async def test_our_labels_are_bounded(worker_scrape: Scrape, oms_scrape: Scrape) -> None:
    ours = [s for s in worker_scrape.samples + oms_scrape.samples if s.name.startswith("failover_")]
    assert ours
    unexpected = {f"{s.name}:{label}" for s in ours for label in s.labels} - {
        f"{s.name}:{label}" for s in ours for label in s.labels if label in ALLOWED_LABELS
    }
    assert not unexpected, f"labels outside the bounded set: {sorted(unexpected)}"


async def test_oms_lease_renewals_and_failures(oms_scrape: Scrape) -> None:
    oms = {"system": "alpha", "region": "primary"}
    assert oms_scrape.value("failover_oms_lease_renewals_total", **oms) == 2
    assert (
        oms_scrape.value("failover_oms_lease_renewal_failures_total", reason="unavailable", **oms)
        == 1
    )
    assert oms_scrape.value("failover_oms_lease_renewal_failures_total", reason="lost", **oms) == 0
    assert oms_scrape.value("failover_oms_trading", **oms) == 1
    assert oms_scrape.value("failover_oms_lease_epoch", **oms) == 4


async def test_every_metric_the_dashboard_queries_is_exported(
    worker_scrape: Scrape, oms_scrape: Scrape
) -> None:
    missing = queried_but_not_exported(dashboard_queries(), worker_scrape.names | oms_scrape.names)
    assert not missing, f"dashboard queries metrics no scrape contains: {missing}"


async def test_every_metric_the_alert_rules_query_is_exported(
    worker_scrape: Scrape, oms_scrape: Scrape
) -> None:
    missing = queried_but_not_exported(alert_queries(), worker_scrape.names | oms_scrape.names)
    assert not missing, f"alert rules query metrics no scrape contains: {missing}"
