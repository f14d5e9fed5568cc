"""Our metrics, recorded through the Temporal SDK's metric meter.

Workflows pass ``workflow.metric_meter()`` (it records nothing while a workflow replays, so a
worker restart does not count a promotion twice); activities pass ``activity.metric_meter()``.
Both end on the worker's Prometheus ``/metrics`` beside the SDK's own metrics
(workers/telemetry.py), so a desk scrapes one endpoint per worker.

Every name starts with ``failover_``. Labels are bounded: a system, venue, feed, source, step,
vantage point, target, phase, verdict, outcome or wait kind from the topology or our own
vocabulary; never an order id, a run id or a credential. Names carry their unit (``_seconds``,
``_bytes``) and the exporter adds ``_total`` to counters, so what a dashboard queries is what
this module spells.

A gauge that says *which* of several states holds (monitor phase, active feed source, an
operator gate) is one series per state, 1 for the one that holds and 0 for the others: a panel
or an alert then selects the state by label, and an old state never lingers at 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final

from temporalio.common import MetricMeter

from domain.health import MonitorPhase, Verdict

PREFIX: Final = "failover_"

PROMOTIONS: Final = "failover_promotions"
PROMOTION_RTO: Final = "failover_promotion_rto_seconds"
LAST_PROMOTION_RTO: Final = "failover_last_promotion_rto_seconds"
PROMOTION_STEP_DURATION: Final = "failover_promotion_step_duration_seconds"
LAST_PROMOTION_STEP_DURATION: Final = "failover_last_promotion_step_duration_seconds"
VENUE_RTO: Final = "failover_venue_rto_seconds"
PROMOTION_WAITING_OPERATOR: Final = "failover_promotion_waiting_operator"
MONITOR_VERDICTS: Final = "failover_monitor_verdicts"
MONITOR_VANTAGE_VERDICT: Final = "failover_monitor_vantage_verdict"
MONITOR_PHASE: Final = "failover_monitor_phase"
DETECTION_LATENCY: Final = "failover_detection_latency_seconds"
REPLICATION_STREAM_LAG_EVENTS: Final = "failover_replication_stream_lag_events"
REPLICATION_STREAM_LAG_SECONDS: Final = "failover_replication_stream_lag_seconds"
REPLICATION_DB_LAG_BYTES: Final = "failover_replication_db_lag_bytes"
REPLICATION_DB_LAG_SECONDS: Final = "failover_replication_db_lag_seconds"
VENUE_WAIT: Final = "failover_venue_wait_seconds"
GHOST_ORDERS_CANCELLED: Final = "failover_ghost_orders_cancelled"
LEASE_EPOCH: Final = "failover_lease_epoch"
FEED_ACTIVE_SOURCE: Final = "failover_feed_active_source"
FEED_ACTIVE_RANK: Final = "failover_feed_active_rank"

# Seconds. Core's default buckets are for milliseconds; these span a probe round trip up to a
# promotion that waited on people.
_STEP_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
_RTO_BUCKETS: Final = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600, 1800, 3600)
HISTOGRAM_BUCKETS: Final[Mapping[str, tuple[float, ...]]] = {
    PROMOTION_RTO: _RTO_BUCKETS,
    VENUE_RTO: _RTO_BUCKETS,
    PROMOTION_STEP_DURATION: _STEP_BUCKETS,
    DETECTION_LATENCY: _STEP_BUCKETS,
    VENUE_WAIT: _STEP_BUCKETS,
}

# The value of MONITOR_VANTAGE_VERDICT: higher is worse, so "max by target" is the worst vote.
VERDICT_LEVEL: Final[Mapping[Verdict, int]] = {
    Verdict.HEALTHY: 0,
    Verdict.UNKNOWN: 1,
    Verdict.DEGRADED: 2,
    Verdict.DOWN: 3,
}


class OperatorGate(StrEnum):
    """What a promotion can wait on a person for."""

    APPROVAL = "approval"  # the second operator of a planned promotion
    DECISION = "decision"  # a discrepancy gate


class VenueWait(StrEnum):
    COOLDOWN = "cooldown"  # the venue's reconnect cooldown
    RETRY_AFTER = "retry_after"  # a Retry-After the venue sent


def record_promotion(
    meter: MetricMeter,
    system: str,
    outcome: str,
    rto_s: float,
    step_durations: Mapping[str, float],
) -> None:
    """A promotion ended: its outcome, its RTO (incident start to trading at DR, as the report
    measures it) and how long each step took."""
    labels = {"system": system, "outcome": outcome}
    meter.create_counter(PROMOTIONS, "Promotions that ended, by outcome").add(1, labels)
    meter.create_histogram_float(PROMOTION_RTO, "Promotion RTO", "s").record(rto_s, labels)
    meter.create_gauge_float(LAST_PROMOTION_RTO, "RTO of the last promotion", "s").set(
        rto_s, labels
    )
    histogram = meter.create_histogram_float(PROMOTION_STEP_DURATION, "Promotion step time", "s")
    last = meter.create_gauge_float(LAST_PROMOTION_STEP_DURATION, "Last promotion's steps", "s")
    for step, seconds in step_durations.items():
        step_labels = {"system": system, "step": step}
        histogram.record(seconds, step_labels)
        last.set(seconds, step_labels)


def record_venue_rto(meter: MetricMeter, system: str, venue: str, seconds: float) -> None:
    """One venue's recovery finished: incident start to the venue trading again at DR."""
    meter.create_histogram_float(VENUE_RTO, "Per-venue recovery time", "s").record(
        seconds, {"system": system, "venue": venue}
    )


def set_promotion_waiting_operator(
    meter: MetricMeter, system: str, gate: OperatorGate, waiting: bool
) -> None:
    """1 while a promotion's ``gate`` waits on a person, 0 once it has an answer. An alert
    fires when it stays 1 too long."""
    meter.create_gauge(PROMOTION_WAITING_OPERATOR, "Promotion waiting on an operator").set(
        int(waiting), {"system": system, "gate": gate.value}
    )


def record_monitor_verdict(meter: MetricMeter, target: str, vantage: str, verdict: Verdict) -> None:
    """One vantage point's verdict on one target (a system or a feed source)."""
    labels = {"target": target, "vantage": vantage}
    meter.create_counter(MONITOR_VERDICTS, "Verdicts by vantage point").add(
        1, {**labels, "verdict": verdict.value}
    )
    meter.create_gauge(
        MONITOR_VANTAGE_VERDICT, "Latest verdict: 0 healthy, 1 unknown, 2 degraded, 3 down"
    ).set(VERDICT_LEVEL[verdict], labels)


def set_monitor_phase(meter: MetricMeter, system: str, phase: MonitorPhase) -> None:
    gauge = meter.create_gauge(MONITOR_PHASE, "1 for the monitor's current phase, else 0")
    for each in MonitorPhase:
        gauge.set(int(each is phase), {"system": system, "phase": each.value})


def record_detection_latency(meter: MetricMeter, system: str, seconds: float) -> None:
    """First failed probe to the quorum's confirmation that the primary is down."""
    meter.create_histogram_float(DETECTION_LATENCY, "Failure detection latency", "s").record(
        seconds, {"system": system}
    )


def record_replication_lag(
    meter: MetricMeter,
    system: str,
    stream_events: int,
    stream_seconds: float,
    db_bytes: int | None = None,
    db_seconds: float | None = None,
) -> None:
    """How far DR is behind: the position stream, and the database replica where there is one."""
    labels = {"system": system}
    meter.create_gauge(REPLICATION_STREAM_LAG_EVENTS, "Stream events DR has not applied").set(
        stream_events, labels
    )
    meter.create_gauge_float(REPLICATION_STREAM_LAG_SECONDS, "Stream lag", "s").set(
        stream_seconds, labels
    )
    if db_bytes is not None:
        meter.create_gauge(REPLICATION_DB_LAG_BYTES, "Replica WAL bytes behind", "By").set(
            db_bytes, labels
        )
    if db_seconds is not None:
        meter.create_gauge_float(REPLICATION_DB_LAG_SECONDS, "Replica replay lag", "s").set(
            db_seconds, labels
        )


def record_venue_wait(meter: MetricMeter, venue: str, kind: VenueWait, seconds: float) -> None:
    """A wait imposed by a venue: its reconnect cooldown, or a Retry-After it sent."""
    meter.create_histogram_float(VENUE_WAIT, "Waits imposed by a venue", "s").record(
        seconds, {"venue": venue, "kind": kind.value}
    )


def record_ghosts_cancelled(meter: MetricMeter, venue: str, n: int) -> None:
    """Orders live at the venue that the book did not know, cancelled by a recovery. Zero is
    recorded too: a venue's series exists from its first recovery on."""
    meter.create_counter(GHOST_ORDERS_CANCELLED, "Ghost orders cancelled").add(n, {"venue": venue})


def set_lease_epoch(meter: MetricMeter, system: str, epoch: int) -> None:
    meter.create_gauge(LEASE_EPOCH, "Epoch of the system's fencing lease").set(
        epoch, {"system": system}
    )


def set_feed_active_source(
    meter: MetricMeter, feed: str, source: str, rank: int, sources: Iterable[str]
) -> None:
    """The feed now reads ``source`` (of rank ``rank``); ``sources`` are all the feed's
    sources, so the one it left goes back to 0."""
    gauge = meter.create_gauge(FEED_ACTIVE_SOURCE, "1 for the feed's active source, else 0")
    for each in {*sources, source}:
        gauge.set(int(each == source), {"feed": feed, "source": each})
    meter.create_gauge(FEED_ACTIVE_RANK, "Rank of the feed's active source (1 = best)").set(
        rank, {"feed": feed}
    )
