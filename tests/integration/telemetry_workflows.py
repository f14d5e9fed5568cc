"""Tiny workflows for the telemetry tests: they record every metric of activities/metrics.py
through the SDK's meters and run activities and a child workflow for the tracing test. They
run in the workflow sandbox, like the real runbooks."""

from __future__ import annotations

import os
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from activities import metrics
    from domain.health import MonitorPhase, Verdict

# The tracing test plants a value in this variable; no span may carry it.
SECRET_ENV = "TELEMETRY_TEST_VENUE_API_KEY"
_TIMEOUT = timedelta(seconds=30)


@activity.defn
async def record_venue_recovery_metrics(venue: str) -> int:
    """What a venue recovery records: lag, waits and ghosts, through the activity's meter."""
    meter = activity.metric_meter()
    metrics.record_replication_lag(meter, "alpha", 3, 0.25, db_bytes=4096, db_seconds=0.5)
    metrics.record_venue_wait(meter, venue, metrics.VenueWait.COOLDOWN, 2.0)
    metrics.record_venue_wait(meter, venue, metrics.VenueWait.RETRY_AFTER, 1.0)
    metrics.record_ghosts_cancelled(meter, venue, 2)
    return 2


@activity.defn
async def sign_venue_request(venue: str) -> str:
    """Reads a credential from the environment as a venue activity does, and returns none of it."""
    key = os.environ[SECRET_ENV]
    return f"{venue} signed with a key of {len(key)} characters"


@workflow.defn
class RecordEveryMetric:
    @workflow.run
    async def run(self, venue: str) -> int:
        meter = workflow.metric_meter()
        metrics.set_monitor_phase(meter, "alpha", MonitorPhase.DEGRADED)
        metrics.record_monitor_verdict(meter, "alpha", "east", Verdict.DOWN)
        metrics.record_monitor_verdict(meter, "alpha", "west", Verdict.HEALTHY)
        metrics.record_detection_latency(meter, "alpha", 3.5)
        metrics.set_promotion_waiting_operator(meter, "alpha", metrics.OperatorGate.APPROVAL, True)
        metrics.set_lease_epoch(meter, "alpha", 7)
        metrics.set_feed_active_source(meter, "md", "backup", 2, ["main", "backup"])
        ghosts = await workflow.execute_activity(
            record_venue_recovery_metrics, venue, start_to_close_timeout=_TIMEOUT
        )
        metrics.record_venue_rto(meter, "alpha", venue, 12.0)
        metrics.set_promotion_waiting_operator(meter, "alpha", metrics.OperatorGate.APPROVAL, False)
        metrics.record_promotion(
            meter, "alpha", "promoted", 14.5, {"acquire_lease": 0.4, "recover_venues": 12.0}
        )
        return ghosts


@workflow.defn
class RecoverOneVenue:
    @workflow.run
    async def run(self, venue: str) -> str:
        return await workflow.execute_activity(
            sign_venue_request, venue, start_to_close_timeout=_TIMEOUT
        )


@workflow.defn
class TracedPromotion:
    """Two activities and a child workflow: the shape of a promotion, in miniature."""

    @workflow.run
    async def run(self, venue: str) -> list[str]:
        first = await workflow.execute_activity(
            sign_venue_request, venue, start_to_close_timeout=_TIMEOUT
        )
        second = await workflow.execute_activity(
            record_venue_recovery_metrics, venue, start_to_close_timeout=_TIMEOUT
        )
        child = await workflow.execute_child_workflow(
            RecoverOneVenue.run, venue, id=f"{workflow.info().workflow_id}-venue-{venue}"
        )
        return [first, str(second), child]
