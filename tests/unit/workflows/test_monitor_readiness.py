"""The SystemMonitor's handoff to the promotion: its quorum as evidence, DR readiness as a gate.

A real dev server; fake probe and readiness watches the test releases one by one, a fake
webhook activity and a stand-in Promotion. Scenarios a person would see: DR not ready is
alerted once and the promotion started then carries why; DR ready again is cleared once and
the next promotion carries nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.alerts import Alert, NotifyResult
from activities.plan import MonitorPlanRequest
from activities.probes import ProbeCounters, WatchRequest, WatchResult
from activities.readiness import ReadinessRequest, ReadinessResult
from domain.health import Verdict
from domain.monitoring import MonitorPlan, MonitorStatus, SystemMonitorRequest, VantagePlan
from domain.promotion import DR_SEARCH_ATTRIBUTES, PromotionRequest
from domain.readiness import ReadinessCounters, ReadinessSample, ReadinessThresholds
from lab.processes import find_binary
from tests.unit.workflows.scripted_runbooks import ScriptedPromotion
from workflows.system_monitor import SystemMonitorWorkflow

QUEUE = "region-dr"
VANTAGES = {"dr": "dr", "obs-a": "eu-west", "obs-b": "us-east"}
BEHIND = "stream 5000 event(s) behind (maximum 1000)"


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[SearchAttributeKey.for_keyword(n) for n in DR_SEARCH_ATTRIBUTES],
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


class World:
    """What the fakes answer; the test sets an event to let the next answer out."""

    def __init__(self) -> None:
        self.outage = asyncio.Event()
        self.dr_behind = asyncio.Event()
        self.dr_caught_up = asyncio.Event()
        self.alerts: list[Alert] = []

    def activities(self) -> list[Any]:
        world = self

        @activity.defn(name="load_monitor_plan")
        async def load_monitor_plan(request: MonitorPlanRequest) -> MonitorPlan:
            return MonitorPlan(
                system=request.system, primary_region="primary", dr_region="dr",
                oms_urls={"primary": "http://primary", "dr": "http://dr"},
                vantages=[
                    VantagePlan(name=n, region=r, task_queue=QUEUE, http_proxy=None)
                    for n, r in VANTAGES.items()
                ],
                interval_s=1, latency_threshold_ms=250, freshness_threshold_s=2,
                confirmation_count=3, recovery_count=5, cooldown_s=600, watch_lifetime_s=600,
                readiness=ReadinessThresholds(
                    max_stream_lag_events=1000, max_stream_lag_s=5, intervals=3
                ),
            )  # fmt: skip

        @activity.defn(name="watch_target")
        async def watch_target(request: WatchRequest) -> WatchResult:
            if request.target.name.endswith(":primary") and request.reported is Verdict.UNKNOWN:
                await world.outage.wait()
                return WatchResult(
                    vantage=request.vantage, target=request.target.name, verdict=Verdict.DOWN,
                    changed=True, checks=3, last_failure="unreachable: ConnectError",
                    counters=ProbeCounters(
                        verdict=Verdict.DOWN, consecutive_failed=3,
                        failing_since=datetime.now(UTC).timestamp() - 3,
                    ),
                )  # fmt: skip
            return await quiet()

        @activity.defn(name="watch_dr_readiness")
        async def watch_dr_readiness(request: ReadinessRequest) -> ReadinessResult:
            if request.region == "dr" and request.reported is None:
                await world.dr_behind.wait()
                return readiness(False, BEHIND)
            if request.region == "dr" and request.reported is False:
                await world.dr_caught_up.wait()
                return readiness(True)
            return await quiet()

        @activity.defn(name="notify")
        async def notify(alert: Alert) -> NotifyResult:
            world.alerts.append(alert)
            return NotifyResult(delivered=["oncall"], skipped=[])

        return [load_monitor_plan, watch_target, watch_dr_readiness, notify]


def readiness(ready: bool, *problems: str) -> ReadinessResult:
    sample = ReadinessSample(
        measured_at=datetime.now(UTC), stream_lag_events=0 if ready else 5000,
        stream_lag_s=0.0, problems=list(problems),
    )  # fmt: skip
    return ReadinessResult(
        region="dr", ready=ready, changed=True,
        counters=ReadinessCounters(ready=ready, consecutive_bad=0 if ready else 3, last=sample),
    )  # fmt: skip


async def quiet() -> Any:
    """A watch with nothing to report: it heartbeats until the monitor cancels it."""
    while True:
        activity.heartbeat()
        await asyncio.sleep(0.2)  # poll: a heartbeat is how cancellation reaches an activity


async def status(handle: WorkflowHandle[Any, Any]) -> MonitorStatus:
    return await handle.query("status", result_type=MonitorStatus)


async def until(condition: Any, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - a query is not an event
            await asyncio.sleep(0.05)  # poll


async def promotion_request(client: Client) -> PromotionRequest:
    """The input the monitor started the promotion with, as its history holds it."""
    handle = client.get_workflow_handle("dr-promotion/lab")
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [request] = await client.data_converter.decode(started.input.payloads, [PromotionRequest])
    assert isinstance(request, PromotionRequest)
    return request


async def monitored(env: WorkflowEnvironment, world: World) -> WorkflowHandle[Any, Any]:
    return await env.client.start_workflow(
        "SystemMonitor",
        SystemMonitorRequest(system="lab"),
        id=f"dr-monitor/{uuid.uuid4().hex[:8]}",
        task_queue=QUEUE,
    )


def worker(env: WorkflowEnvironment, world: World) -> Worker:
    return Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[SystemMonitorWorkflow, ScriptedPromotion],
        activities=world.activities(),
    )


async def test_a_promotion_started_while_dr_is_not_ready_carries_the_quorum_and_the_reason(
    env: WorkflowEnvironment,
) -> None:
    world = World()
    async with worker(env, world):
        handle = await monitored(env, world)
        world.dr_behind.set()

        async def not_ready() -> bool:
            r = (await status(handle)).readiness
            return r is not None and r.ready is False

        await until(not_ready)
        assert [a.summary.split(":")[0] for a in world.alerts] == ["DR not ready"]
        assert BEHIND in world.alerts[0].summary

        world.outage.set()

        async def promoted() -> bool:
            return (await status(handle)).phase.value == "failover_complete"

        await until(promoted)
        request = await promotion_request(env.client)
        await handle.terminate("test over")

    assert request.dr_not_ready_reason is not None and BEHIND in request.dr_not_ready_reason
    evidence = request.evidence
    assert evidence is not None
    assert evidence.monitor_workflow_id == handle.id
    # As the quorum stood when it was reached: two down, the third not yet reported.
    assert evidence.quorum == 2 and evidence.down_votes == 2
    assert {(v.vantage, v.region) for v in evidence.verdicts} == set(VANTAGES.items())
    down = [v for v in evidence.verdicts if v.verdict == "down"]
    assert all(v.detail == "unreachable: ConnectError" for v in down)
    assert request.detected_at is not None and evidence.decided_at <= request.detected_at
    # Not ready once: one alert, however long it lasts.
    assert len(world.alerts) == 1


async def test_dr_ready_again_is_cleared_once_and_the_next_promotion_is_not_held(
    env: WorkflowEnvironment,
) -> None:
    world = World()
    async with worker(env, world):
        handle = await monitored(env, world)
        world.dr_behind.set()

        async def alerted(n: int) -> Any:
            async def check() -> bool:
                return len(world.alerts) >= n

            return check

        await until(await alerted(1))
        world.dr_caught_up.set()
        await until(await alerted(2))

        async def ready() -> bool:
            r = (await status(handle)).readiness
            return r is not None and r.ready is True

        await until(ready)
        world.outage.set()

        async def promoted() -> bool:
            return (await status(handle)).phase.value == "failover_complete"

        await until(promoted)
        request = await promotion_request(env.client)
        await handle.terminate("test over")

    assert [a.summary.split(":")[0] for a in world.alerts] == ["DR not ready", "DR ready again"]
    assert [a.severity for a in world.alerts] == ["critical", "info"]
    assert len({a.idempotency_key for a in world.alerts}) == 2
    assert request.dr_not_ready_reason is None
    assert request.evidence is not None and request.evidence.down_votes == 2
