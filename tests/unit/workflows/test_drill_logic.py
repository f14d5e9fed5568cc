"""Drill decisions with scripted activities and stand-in child runbooks, on the time-skipping
server: what a drill refuses, what it waits for, and how it judges what it measured.

The real drill against the real lab is tests/lab/test_drill.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.drill import DrillPlanRequest, LabFaultRequest, VenuesCheckRequest
from activities.runbook_control import (
    ApprovePromotionRequest,
    AwaitPromotionRequest,
    MonitorControlRequest,
    MonitorControlResult,
)
from domain.drill import (
    DrillPlan,
    DrillReport,
    FaultRecord,
    RunProgress,
)
from domain.health import MonitorPhase
from domain.lease import LeaseRecord
from domain.monitoring import MonitorStatus
from domain.promotion import (
    Approval,
    DrOutcome,
    PromotionReport,
)
from domain.venue_check import VenueCheck, VenuesCheck
from tests.unit.workflows.scripted_runbooks import (
    T0,
    ScriptedFailback,
    ScriptedPromotion,
    promotion_report,
)
from workflows.drill import DrillWorkflow

QUEUE = "region-dr"


class ScriptedWorld:
    """Activity answers for one drill; ``calls`` records what the drill did, in order."""

    def __init__(
        self,
        production: bool = False,
        blackout: str | None = None,
        lease_region: str = "primary",
        monitor: MonitorStatus | None = None,
        promotion_appears: bool = True,
        failing_venue: str | None = None,
    ) -> None:
        self.production = production
        self.failing_venue = failing_venue
        self.blackout = blackout
        self.lease_region = lease_region
        self.monitor = monitor
        self.promotion_appears = promotion_appears
        self.calls: list[str] = []

    def activities(self) -> list[Any]:
        world = self

        @activity.defn(name="load_drill_plan")
        async def load_drill_plan(request: DrillPlanRequest) -> DrillPlan:
            world.calls.append("load_drill_plan")
            return DrillPlan(
                system=request.system, production=world.production, primary_region="primary",
                dr_region="dr", primary_oms_url="http://p", dr_oms_url="http://d",
                lab_control=True, blackout=world.blackout, approval_timeout_s=600, ui_url="",
            )  # fmt: skip

        @activity.defn(name="read_lease")
        async def read_lease(system: str) -> LeaseRecord:
            world.calls.append("read_lease")
            return LeaseRecord(
                system="lab",
                region=world.lease_region,
                epoch=1,
                holder="oms",
                renewed_at=T0,
                ttl_s=3.0,
            )

        @activity.defn(name="monitor_control")
        async def monitor_control(request: MonitorControlRequest) -> MonitorControlResult:
            world.calls.append(f"monitor_control:{request.action}")
            return MonitorControlResult(
                running=world.monitor is not None,
                applied=request.action != "status",
                detail=request.action,
                status=world.monitor,
            )

        @activity.defn(name="check_venues")
        async def check_venues(request: VenuesCheckRequest) -> VenuesCheck:
            world.calls.append("check_venues")
            adapters = {"alpha": "lab", "beta": "ccxt", "gamma": "fix44"}
            return VenuesCheck(
                system=request.system,
                checked_at=T0,
                fills_minutes=request.fills_minutes,
                venues=[
                    VenueCheck(venue=venue, adapter=adapter, ok=True, session_s=0.01,
                               open_orders=3, fills=7)
                    if venue != world.failing_venue
                    else VenueCheck(venue=venue, adapter=adapter, ok=False,
                                    error="unavailable: connection refused")
                    for venue, adapter in adapters.items()
                ],
            )  # fmt: skip

        @activity.defn(name="lab_fault")
        async def lab_fault(request: LabFaultRequest) -> FaultRecord:
            world.calls.append(f"lab_fault:{request.action}")
            return FaultRecord(action=request.action, target=request.target, at=T0, detail="ok")

        @activity.defn(name="await_promotion")
        async def await_promotion(request: AwaitPromotionRequest) -> PromotionReport:
            world.calls.append("await_promotion")
            if not world.promotion_appears:
                raise ApplicationError("no promotion of lab completed", non_retryable=True)
            return promotion_report()

        @activity.defn(name="approve_promotion")
        async def approve_promotion(request: ApprovePromotionRequest) -> str:
            world.calls.append(f"approve_promotion:{request.approver}")
            return "approved"

        return [
            load_drill_plan, read_lease, monitor_control, check_venues, lab_fault,
            await_promotion, approve_promotion,
        ]  # fmt: skip


def nominal_monitor(**changes: Any) -> MonitorStatus:
    status = MonitorStatus(
        system="lab", phase=MonitorPhase.NOMINAL, active_region="primary", verdicts={},
        paused=False, needs_ack=False, blocked_reason=None, actions=0, last_action_at=None,
        promotion_workflow_id=None, history_length=10, cooldown_s=60.0,
    )  # fmt: skip
    return status.model_copy(update=changes)


class Workers:
    """The DR region's queue and the primary's (where a failback runs), polled together."""

    def __init__(self, env: WorkflowEnvironment, world: ScriptedWorld) -> None:
        self._workers = [
            Worker(
                env.client,
                task_queue=queue,
                workflows=[DrillWorkflow, ScriptedPromotion, ScriptedFailback],
                activities=world.activities(),
            )
            for queue in (QUEUE, "region-primary")
        ]
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Workers:
        for worker in self._workers:
            await self._stack.enter_async_context(worker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()


async def drill(
    env: WorkflowEnvironment, world: ScriptedWorld, request: dict[str, Any]
) -> tuple[Workers, WorkflowHandle[DrillWorkflow, DrillReport]]:
    worker = Workers(env, world)
    handle: WorkflowHandle[DrillWorkflow, DrillReport] = await env.client.start_workflow(
        "Drill",
        request,
        id=f"dr-drill/{uuid.uuid4().hex[:8]}",
        task_queue=QUEUE,
        result_type=DrillReport,
    )
    return worker, handle


async def run_drill(
    env: WorkflowEnvironment, world: ScriptedWorld, request: dict[str, Any]
) -> DrillReport:
    worker, handle = await drill(env, world, request)
    async with worker, asyncio.timeout(60):
        return await handle.result()


async def test_the_ui_input_runs_a_kill_primary_drill_that_passes(env: WorkflowEnvironment) -> None:
    world = ScriptedWorld(monitor=nominal_monitor())
    report = await run_drill(env, world, {"system": "lab"})
    assert report.passed, report.reasons
    assert report.outcome is DrOutcome.PASSED
    assert report.scenario.value == "kill-primary"
    # The fault is healed before the failback starts: the lab is left whole.
    assert world.calls.index("lab_fault:kill") < world.calls.index("await_promotion")
    assert world.calls.index("await_promotion") < world.calls.index("lab_fault:heal")
    assert report.failback is not None and report.failback.monitor_following == "primary"
    assert report.measured.rto_s == 4.0


async def test_a_venue_failing_the_pre_flight_fails_the_drill_before_any_fault(
    env: WorkflowEnvironment,
) -> None:
    world = ScriptedWorld(monitor=nominal_monitor(), failing_venue="gamma")
    report = await run_drill(env, world, {"system": "lab"})
    assert report.outcome is DrOutcome.FAILED and not report.passed
    assert report.reasons == [
        "pre-flight venues check failed, so no fault was injected: "
        "gamma: unavailable: connection refused"
    ]
    # Nothing was broken on purpose, and no promotion was waited for.
    assert world.calls == ["load_drill_plan", "read_lease", "check_venues"]
    step = next(s for s in report.steps if s.name == "venues_check")
    assert step.status == "failed" and step.detail == "gamma: unavailable: connection refused"
    assert report.venues_check is not None
    assert [v.venue for v in report.venues_check.failed] == ["gamma"]
    assert "  pre-flight: 1 of 3 venues failed" in report.summary_lines()


async def test_a_passing_pre_flight_is_on_the_drills_record(env: WorkflowEnvironment) -> None:
    world = ScriptedWorld(monitor=nominal_monitor())
    report = await run_drill(env, world, {"system": "lab", "failback": False})
    assert report.passed, report.reasons
    assert world.calls.index("check_venues") < world.calls.index("lab_fault:kill")
    assert report.venues_check is not None and report.venues_check.ok
    step = next(s for s in report.steps if s.name == "venues_check")
    assert step.status == "completed"


async def test_an_impossible_rto_objective_fails_with_the_reason(env: WorkflowEnvironment) -> None:
    world = ScriptedWorld(monitor=nominal_monitor())
    report = await run_drill(
        env, world, {"system": "lab", "objectives": {"max_rto_s": 0.001}, "failback": False}
    )
    assert not report.passed
    assert report.outcome is DrOutcome.FAILED
    assert report.reasons == ["RTO 4.00 s exceeds objective 0.001 s"]


async def test_a_production_system_is_refused_without_allow_production(
    env: WorkflowEnvironment,
) -> None:
    world = ScriptedWorld(production=True, monitor=nominal_monitor())
    report = await run_drill(env, world, {"system": "lab"})
    assert report.outcome is DrOutcome.REFUSED
    assert "marked production" in report.reasons[0]
    assert world.calls == ["load_drill_plan"], "nothing may be touched"


async def test_a_production_drill_waits_for_a_second_operators_approval(
    env: WorkflowEnvironment,
) -> None:
    world = ScriptedWorld(production=True)
    worker, handle = await drill(
        env,
        world,
        {
            "system": "lab",
            "scenario": "planned-switchover",
            "allow_production": True,
            "requested_by": "alice",
        },
    )
    async with worker:
        async with asyncio.timeout(20):
            while (await handle.query(DrillWorkflow.progress)).waiting_for is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # poll
        assert "approve_promotion:drill-approver" not in world.calls
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(DrillWorkflow.approve, Approval(approver="Alice"))
        await handle.execute_update(DrillWorkflow.approve, Approval(approver="bob"))
        report = await handle.result()
    assert report.passed, report.reasons
    assert [a.by for a in report.actions] == ["bob"]
    assert "approve_promotion:drill-approver" in world.calls
    # The monitor was held for the switchover and released after it.
    assert world.calls[-1] == "monitor_control:resume"


async def test_a_drill_inside_a_blackout_window_is_refused(env: WorkflowEnvironment) -> None:
    world = ScriptedWorld(blackout="mon,tue,wed,thu,fri 08:00-17:00 (market hours) UTC")
    report = await run_drill(env, world, {"system": "lab", "scenario": "planned-switchover"})
    assert report.outcome is DrOutcome.REFUSED
    assert "market hours" in report.reasons[0]
    assert world.calls == ["load_drill_plan"]


async def test_kill_primary_is_refused_while_the_monitor_could_not_act(
    env: WorkflowEnvironment,
) -> None:
    world = ScriptedWorld(monitor=nominal_monitor(needs_ack=True, last_action_at=datetime.now(UTC)))
    report = await run_drill(env, world, {"system": "lab"})
    assert report.outcome is DrOutcome.REFUSED
    assert "waits for an ack" in report.reasons[0]
    assert "lab_fault:kill" not in world.calls


async def test_a_drill_needs_the_primary_to_hold_the_lease(env: WorkflowEnvironment) -> None:
    world = ScriptedWorld(lease_region="dr", monitor=nominal_monitor())
    report = await run_drill(env, world, {"system": "lab"})
    assert report.outcome is DrOutcome.REFUSED
    assert "fail back before drilling again" in report.reasons[0]


async def test_when_the_monitor_never_promotes_the_drill_fails_and_heals_the_lab(
    env: WorkflowEnvironment,
) -> None:
    world = ScriptedWorld(monitor=nominal_monitor(), promotion_appears=False)
    report = await run_drill(env, world, {"system": "lab"})
    assert report.outcome is DrOutcome.FAILED
    assert any("did not promote DR" in r for r in report.reasons)
    assert "lab_fault:heal" in world.calls
    assert report.failback is None


async def test_ui_input_naming_the_requester_as_approver_fails_clearly(
    env: WorkflowEnvironment,
) -> None:
    world = ScriptedWorld()
    worker, handle = await drill(
        env, world, {"system": "lab", "requested_by": "alice", "approver": "alice"}
    )
    async with worker:
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "second, named identity" in str(failure.value.cause)
    assert world.calls == []


async def test_progress_names_the_step_in_flight(env: WorkflowEnvironment) -> None:
    world = ScriptedWorld(production=True)
    worker, handle = await drill(
        env,
        world,
        {"system": "lab", "allow_production": True, "scenario": "planned-switchover"},
    )
    async with worker:
        async with asyncio.timeout(20):
            progress: RunProgress = await handle.query(DrillWorkflow.progress)
            while progress.current_step != "production_approval":
                await asyncio.sleep(0.05)  # poll
                progress = await handle.query(DrillWorkflow.progress)
        await handle.terminate("test over")
    assert progress.outcome is DrOutcome.RUNNING
