"""The probe watch both monitors run: one long-lived activity per vantage point and target.

A watch runs on its vantage point's own task queue (the probe must leave from that place) and
returns only when its debounced verdict changes or its lifetime ends, so a healthy target costs a
handful of history events per hour. The monitor restarts it with the counters it returned, so a
streak of failures survives the restart that follows a verdict change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.probes import (
        ProbeActivities,
        ProbeCounters,
        ProbeTarget,
        WatchRequest,
        WatchResult,
    )
    from domain.health import Verdict
    from domain.monitoring import FeedPlan, MonitorPlan, VantagePlan

# A watch that cannot reach its vantage's worker is retried for ever: the monitor never stops
# watching because one vantage point's worker restarted.
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)


def start_watch(
    vantage: VantagePlan,
    target: ProbeTarget,
    reported: Verdict,
    counters: ProbeCounters | None,
    plan: MonitorPlan | FeedPlan,
) -> ActivityHandle[WatchResult]:
    """Watch ``target`` from ``vantage`` until its verdict differs from ``reported``."""
    request = WatchRequest(
        vantage=vantage.name,
        target=target,
        reported=reported,
        interval_s=plan.interval_s,
        latency_threshold_ms=plan.latency_threshold_ms,
        freshness_threshold_s=plan.freshness_threshold_s,
        confirmation_count=plan.confirmation_count,
        recovery_count=plan.recovery_count,
        max_lifetime_s=plan.watch_lifetime_s,
        http_proxy=vantage.http_proxy,
        counters=counters,
    )
    return workflow.start_activity_method(
        ProbeActivities.watch_target,
        request,
        task_queue=vantage.task_queue,
        start_to_close_timeout=timedelta(seconds=plan.watch_lifetime_s + 60),
        heartbeat_timeout=timedelta(seconds=plan.interval_s * 3 + 5),
        retry_policy=WATCH_RETRY,
    )


async def stop_watches(watches: Iterable[ActivityHandle[WatchResult]]) -> None:
    pending = list(watches)
    for watch in pending:
        watch.cancel()
    # Cancelled watches end with a cancellation error; that is their normal end here.
    await asyncio.gather(*pending, return_exceptions=True)
