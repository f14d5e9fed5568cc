"""The lab OMS's metrics: a process with no Temporal worker, so prometheus-client, not the SDK.

What a desk wants from an OMS node is whether it keeps its fencing lease: renewals that
succeeded, renewals that failed and why, the epoch it trades under and whether it trades.
Each node has its own registry (several nodes share one test process) served at ``/metrics``.
"""

from __future__ import annotations

from enum import StrEnum

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

LEASE_RENEWALS = "failover_oms_lease_renewals"
LEASE_RENEWAL_FAILURES = "failover_oms_lease_renewal_failures"
OMS_TRADING = "failover_oms_trading"
OMS_LEASE_EPOCH = "failover_oms_lease_epoch"


class RenewalFailure(StrEnum):
    UNAVAILABLE = "unavailable"  # the store did not answer: retried until the TTL runs out
    TIMEOUT = "timeout"  # it answered too late to be worth anything
    LOST = "lost"  # another tenure holds the lease: the node fences at once
    ERROR = "error"  # any other store error


class OmsLeaseMetrics:
    """Counters and gauges of one OMS node, labelled with its system and region."""

    def __init__(self, system: str, region: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["system", "region"]
        self._labels = {"system": system, "region": region}
        self._renewals = Counter(
            LEASE_RENEWALS, "Lease renewals that succeeded", labels, registry=self.registry
        )
        self._failures = Counter(
            LEASE_RENEWAL_FAILURES,
            "Lease renewals that failed, by reason",
            [*labels, "reason"],
            registry=self.registry,
        )
        self._trading = Gauge(
            OMS_TRADING,
            "1 while the node holds the lease and trades",
            labels,
            registry=self.registry,
        )
        self._epoch = Gauge(
            OMS_LEASE_EPOCH, "Epoch of the lease the node holds", labels, registry=self.registry
        )
        self._renewals.labels(**self._labels)
        for reason in RenewalFailure:  # every reason at 0 from the start: rate() sees the first
            self._failures.labels(**self._labels, reason=reason.value)
        self._trading.labels(**self._labels).set(0)

    def renewed(self, epoch: int) -> None:
        self._renewals.labels(**self._labels).inc()
        self._epoch.labels(**self._labels).set(epoch)

    def renewal_failed(self, reason: RenewalFailure) -> None:
        self._failures.labels(**self._labels, reason=reason.value).inc()

    def set_trading(self, trading: bool, epoch: int | None = None) -> None:
        self._trading.labels(**self._labels).set(int(trading))
        if epoch is not None:
            self._epoch.labels(**self._labels).set(epoch)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def add_metrics_route(app: FastAPI, metrics: OmsLeaseMetrics) -> None:
    """Serve ``metrics`` at ``GET /metrics`` on the node's own API port."""

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
