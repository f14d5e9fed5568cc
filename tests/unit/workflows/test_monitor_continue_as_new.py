"""The monitor continues-as-new when the server suggests it, and carries its whole state over.

A HealthMonitor (the type before SystemMonitor and FeedMonitor were split) does the same, and
continues as a SystemMonitor: that is how running monitors survive the upgrade.

A real dev server with its suggestion threshold lowered to a few dozen events (dynamic config),
and a fake probe that flips its verdict on every call so the history grows fast.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.plan import MonitorPlanRequest
from activities.probes import ProbeCounters, WatchRequest, WatchResult
from domain.health import Verdict
from domain.monitoring import (
    HEALTH_MONITOR_WORKFLOW,
    SYSTEM_MONITOR_WORKFLOW,
    MonitorPlan,
    MonitorRequest,
    MonitorStatus,
    OperatorAction,
    SystemMonitorRequest,
    VantagePlan,
)
from domain.promotion import DR_SEARCH_ATTRIBUTES
from lab.processes import find_binary
from workflows.feed_monitor import FeedMonitorWorkflow
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.system_monitor import SystemMonitorWorkflow

QUEUE = "region-dr"
SUGGEST_AFTER_EVENTS = 40


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in DR_SEARCH_ATTRIBUTES],
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER_EVENTS}",
        ],
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@activity.defn(name="load_monitor_plan")
async def load_monitor_plan(request: MonitorPlanRequest) -> MonitorPlan:
    return MonitorPlan(
        system=request.system, primary_region="primary", dr_region="dr",
        oms_urls={"primary": "http://primary", "dr": "http://dr"},
        vantages=[VantagePlan(name="v1", task_queue=QUEUE, http_proxy=None)],
        interval_s=1, latency_threshold_ms=250, freshness_threshold_s=2, confirmation_count=3,
        recovery_count=5, cooldown_s=60, watch_lifetime_s=600,
    )  # fmt: skip


@activity.defn(name="watch_target")
async def flapping_watch(request: WatchRequest) -> WatchResult:
    await asyncio.sleep(0.02)  # poll: pace the fake probe a little, like a real check
    verdict = Verdict.DEGRADED if request.reported != Verdict.DEGRADED else Verdict.HEALTHY
    return WatchResult(
        vantage=request.vantage, target=request.target.name, verdict=verdict, changed=True,
        checks=1, last_failure=None, counters=ProbeCounters(verdict=verdict),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("started_as", "request_"),
    [
        (SYSTEM_MONITOR_WORKFLOW, SystemMonitorRequest(system="lab")),
        # Started before the upgrade: it continues as the new type, keeping its state.
        (HEALTH_MONITOR_WORKFLOW, MonitorRequest(system="lab")),
    ],
    ids=["system-monitor", "health-monitor-upgrades"],
)
async def test_the_monitor_continues_as_new_and_keeps_its_state(
    env: WorkflowEnvironment, started_as: str, request_: SystemMonitorRequest | MonitorRequest
) -> None:
    worker = Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[SystemMonitorWorkflow, FeedMonitorWorkflow, HealthMonitorWorkflow],
        activities=[load_monitor_plan, flapping_watch],
    )
    async with worker:
        handle: WorkflowHandle[object, None] = await env.client.start_workflow(
            started_as,
            request_,
            id=f"dr-monitor/{uuid.uuid4().hex[:8]}",
            task_queue=QUEUE,
        )
        first_run = handle.result_run_id
        await handle.execute_update("pause", OperatorAction(by="maint"), result_type=str)
        latest = env.client.get_workflow_handle(handle.id)
        async with asyncio.timeout(60):
            while (await latest.describe()).run_id == first_run:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # poll
        status = await latest.query("status", result_type=MonitorStatus)
        continued_as = (await latest.describe()).workflow_type
        await latest.terminate("test over")
    assert status.paused is True  # the operator's pause survived the new run
    assert status.system == "lab"
    assert status.active_region == "primary"
    assert continued_as == SYSTEM_MONITOR_WORKFLOW
    assert status.history_length < SUGGEST_AFTER_EVENTS * 2
    described = await env.client.get_workflow_handle(handle.id, run_id=first_run).describe()
    assert described.status is not None and described.status.name == "CONTINUED_AS_NEW"
