"""The Grafana dashboard and the Prometheus alert rules, read as a desk would load them.

Each query must name at least one metric, and every metric it names must be one we define. That
a real worker exports each name is checked against a live scrape in
tests/integration/test_metrics_scrape.py, with the extraction defined here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from activities import metrics
from lab import oms_metrics

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "failover-runbooks.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"

# A metric name in PromQL, once string literals (label values such as phase="failover_...")
# are removed. Ours start with failover_, the SDK's with temporal_.
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])((?:failover|temporal)_[A-Za-z0-9_:]*)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def metric_names_in(expr: str) -> set[str]:
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(path: Path = DASHBOARD) -> dict[str, str]:
    """``"<panel title> [refId]"`` → PromQL, for every panel target and template variable."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    queries = {
        f"{panel['title']} [{target['refId']}]": target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    }
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        queries[f"variable {variable['name']}"] = (
            query["query"] if isinstance(query, dict) else str(query)
        )
    return queries


def alert_queries(path: Path = ALERTS) -> dict[str, str]:
    """Alert (or recording rule) name → PromQL."""
    rules = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {
        rule.get("alert") or rule["record"]: rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }


def queried_but_not_exported(queries: dict[str, str], exported: set[str]) -> list[str]:
    """``"<where>: <metric>"`` for every metric a query reads that ``exported`` lacks."""
    return sorted(
        f"{where}: {name}"
        for where, expr in queries.items()
        for name in metric_names_in(expr)
        if name not in exported
    )


def defined_metric_names() -> set[str]:
    """Every sample name our definitions can produce, as the exporters spell them."""
    ours = {v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str)}
    ours |= {v for k, v in vars(oms_metrics).items() if k.isupper() and isinstance(v, str)}
    ours = {name for name in ours if name.startswith(metrics.PREFIX)}
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    return {name + suffix for name in ours for suffix in suffixes}


def test_dashboard_has_the_panels_a_desk_watches() -> None:
    titles = {query.rsplit(" [", 1)[0] for query in dashboard_queries()}
    for wanted in (
        "Monitor phase per system",
        "Verdict per vantage point",
        "Detection latency",
        "Promotion RTO history",
        "Steps of the last promotion",
        "Per-venue RTO p95 over the range",
        "Position stream lag",
        "Database replica lag",
        "Waits imposed by venues (cooldown, Retry-After)",
        "Ghost orders cancelled in the range",
        "Lease epoch",
        "OMS lease renewals and failures",
        "Feed active source",
    ):
        assert wanted in titles, f"the dashboard has no panel {wanted!r}"


def test_every_panel_query_reads_a_metric() -> None:
    empty = [
        where
        for where, expr in dashboard_queries().items()
        if not where.startswith("variable") and not metric_names_in(expr)
    ]
    assert not empty, f"panels whose query names no failover_/temporal_ metric: {empty}"


def test_every_alert_has_a_query_severity_and_summary() -> None:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    problems = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            if not metric_names_in(rule.get("expr", "")):
                problems.append(f"{name}: expr names no metric")
            if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
                problems.append(f"{name}: severity must be warning or critical")
            if not rule.get("annotations", {}).get("summary"):
                problems.append(f"{name}: no summary")
    assert not problems, problems
    names = set(alert_queries())
    for wanted in (
        "FailoverMonitorDegraded",
        "DrStreamLagHigh",
        "DrDatabaseLagHigh",
        "OmsLeaseRenewalFailing",
        "PromotionWaitingOnOperator",
    ):
        assert wanted in names


def test_dashboard_and_alerts_query_only_metrics_we_define() -> None:
    """Ours must be spelt as defined; the SDK's are checked against the live scrape."""
    defined = defined_metric_names()
    queries = {**dashboard_queries(), **alert_queries()}
    unknown = {
        f"{where}: {name}"
        for where, expr in queries.items()
        for name in metric_names_in(expr)
        if name.startswith(metrics.PREFIX) and name not in defined
    }
    assert not unknown, f"queries name metrics nobody defines: {sorted(unknown)}"


def test_label_values_do_not_count_as_metric_names() -> None:
    expr = 'max by (system) (failover_monitor_phase{phase="failover_in_progress"}) == 1'
    assert metric_names_in(expr) == {"failover_monitor_phase"}
    assert metric_names_in("rate(temporal_request_total[5m]) / foo_failover_x") == {
        "temporal_request_total"
    }
