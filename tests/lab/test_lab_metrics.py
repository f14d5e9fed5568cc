"""A running lab's metrics, scraped as Prometheus would and parsed by prometheus_client's own
parser: the worker's Temporal SDK metrics and the OMS nodes' lease and trading metrics. What a
promotion exports is read after the monitor's own promotion, in test_promotion_from_monitor.py."""

from __future__ import annotations

from lab.oms_metrics import LEASE_RENEWAL_FAILURES, LEASE_RENEWALS, OMS_LEASE_EPOCH, OMS_TRADING
from lab.processes import wait_until
from tests.lab.conftest import LabRun
from tests.lab.scrape import scrape, value


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
