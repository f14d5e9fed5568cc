"""A running lab's metrics, scraped as Prometheus would and parsed by prometheus_client's own
parser: the worker's Temporal SDK metrics, the OMS nodes' lease and trading metrics, and, after
a promotion, the promotion's RTO and step durations."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from activities.metrics import (
    LAST_PROMOTION_RTO,
    LAST_PROMOTION_STEP_DURATION,
    PROMOTION_RTO,
    PROMOTION_STEP_DURATION,
    PROMOTIONS,
)
from domain.promotion import PromotionReport
from lab.oms_metrics import LEASE_RENEWAL_FAILURES, LEASE_RENEWALS, OMS_LEASE_EPOCH, OMS_TRADING
from lab.processes import wait_until
from tests.lab.conftest import LabRun, drctl_runbook


def scrape(url: str) -> Iterator[Sample]:
    response = httpx.get(url, timeout=5)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    for family in text_string_to_metric_families(response.text):
        yield from family.samples


def value(url: str, name: str, **labels: str) -> float | None:
    for sample in scrape(url):
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def test_status_lists_every_metrics_url(lab: LabRun) -> None:
    metrics = lab.status()["metrics"]
    state = lab.state
    assert metrics == {
        "worker": f"http://127.0.0.1:{state.ports.worker_metrics}/metrics",
        "oms-primary": f"http://127.0.0.1:{state.ports.oms_primary}/metrics",
        "oms-dr": f"http://127.0.0.1:{state.ports.oms_dr}/metrics",
    }
    text = lab.drctl("status").stdout
    assert all(url in text for url in metrics.values())


def test_the_worker_serves_the_temporal_sdk_metrics(lab: LabRun) -> None:
    url = lab.status()["metrics"]["worker"]

    def polling() -> bool:
        # Each of the worker's task queues has pollers once it runs.
        names = {s.name for s in scrape(url)}
        return "temporal_num_pollers" in names and "temporal_request_total" in names

    assert wait_until(polling, 30)
    queues = {s.labels.get("task_queue") for s in scrape(url) if s.name == "temporal_num_pollers"}
    assert {"region-primary", "region-dr"} <= queues


def test_the_oms_nodes_export_lease_renewals_and_trading_state(lab: LabRun) -> None:
    primary = lab.status()["metrics"]["oms-primary"]
    dr = lab.status()["metrics"]["oms-dr"]
    labels = {"system": "lab", "region": "primary"}
    renewals = LEASE_RENEWALS + "_total"
    # The lease TTL is 3 s and the keeper renews every TTL/3: renewals keep coming.
    assert wait_until(lambda: (value(primary, renewals, **labels) or 0) >= 2, 20)
    first = value(primary, renewals, **labels) or 0
    assert wait_until(lambda: (value(primary, renewals, **labels) or 0) > first, 10)
    assert value(primary, OMS_TRADING, **labels) == 1
    assert value(primary, OMS_LEASE_EPOCH, **labels) == 1
    for reason in ("unavailable", "timeout", "lost", "error"):
        assert value(primary, LEASE_RENEWAL_FAILURES + "_total", **labels, reason=reason) == 0
    # The DR node trades nothing and renews nothing until it is promoted.
    assert value(dr, OMS_TRADING, system="lab", region="dr") == 0
    assert value(dr, renewals, system="lab", region="dr") == 0


def test_after_a_promotion_the_worker_exports_its_rto_and_step_durations(lab: LabRun) -> None:
    """Last in the module: it promotes DR."""
    assert lab.drctl("chaos", "kill", "primary").returncode == 0
    result = drctl_runbook(lab, "failover", "--system", "lab", "--wait", "--json", "--as", "oncall")
    assert result.returncode == 0, result.stderr + result.stdout
    report = PromotionReport.model_validate_json(result.stdout)
    assert report.outcome.value == "promoted" and report.rto_s is not None
    worker = lab.status()["metrics"]["worker"]
    promoted = {"system": "lab", "outcome": "promoted"}
    assert value(worker, PROMOTIONS + "_total", **promoted) == 1
    assert value(worker, PROMOTION_RTO + "_count", **promoted) == 1
    assert value(worker, LAST_PROMOTION_RTO, **promoted) == pytest.approx(report.rto_s, abs=0.01)
    durations = {s.name: s.duration_s for s in report.steps if s.duration_s is not None}
    for step in ("acquire_lease", "check_db_replica", "promote_db_replica", "sync_dr_state"):
        assert value(worker, PROMOTION_STEP_DURATION + "_count", system="lab", step=step) == 1
        last = value(worker, LAST_PROMOTION_STEP_DURATION, system="lab", step=step)
        assert last == pytest.approx(durations[step], abs=0.01), step
    # The DR OMS now holds the lease: it trades, renews, and says so.
    dr = lab.status()["metrics"]["oms-dr"]
    labels = {"system": "lab", "region": "dr"}
    assert value(dr, OMS_TRADING, **labels) == 1
    assert value(dr, OMS_LEASE_EPOCH, **labels) == report.epoch
    assert wait_until(lambda: (value(dr, LEASE_RENEWALS + "_total", **labels) or 0) > 0, 10)
