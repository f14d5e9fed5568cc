"""Drill: prove the runbooks work, on a schedule, and judge them against objectives.

Before either scenario breaks anything, a pre-flight checks every venue through its adapter
(the check `drctl venues check` runs); a venue that fails it fails the drill with the reason, and
nothing is injected.

kill-primary (the lab): check the monitor is armed -> kill the primary OMS through the lab's
control API -> wait for the promotion the monitor starts by itself -> restart the old primary
-> Failback.
planned-switchover (any environment): hold the monitor -> a planned promotion to DR, approved
by the drill's named approver -> the monitor follows -> Failback -> release the monitor.

Then detection, RTO and replication gap are measured from the promotion's own report and judged
against the request's objectives: the result says pass or fail, with every reason.

Refused before anything is touched: a production system without ``allow_production`` and a
second operator's approval, a start inside a blackout window (market hours), a lab scenario on a
system without the lab, a primary that does not hold the lease, a monitor that could not act.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.drill import (
        DrillActivities,
        DrillPlanRequest,
        LabFaultRequest,
        VenuesCheckRequest,
    )
    from activities.runbook_control import AwaitPromotionRequest, RunbookControlActivities
    from domain.drill import (
        DRILL_WORKFLOW,
        FAILBACK_WORKFLOW,
        DrillPlan,
        DrillReport,
        DrillRequest,
        DrillScenario,
        FailbackReport,
        FailbackRequest,
        FaultRecord,
        RunProgress,
        failback_workflow_id,
        judge,
        measure,
    )
    from domain.health import MonitorPhase
    from domain.promotion import (
        Approval,
        DrKind,
        DrOutcome,
        PromotionReport,
        PromotionRequest,
        RecordedAction,
        region_task_queue,
    )
    from domain.venue_check import VenuesCheck
    from workflows.runbook_control import lease_holder, monitor_action, planned_promotion
    from workflows.steps import (
        SERVICE_RETRY,
        StepLog,
        failure_message,
        parse_input,
        upsert_dr_attributes,
    )

T = TypeVar("T")

CALL = timedelta(seconds=15)
# A restart waits for the process to answer; the control API bounds it.
FAULT_CALL = timedelta(seconds=120)
FAULT_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))
# The check bounds each venue itself (a few times the venue's own timeout_s); this bound only
# catches a worker lost mid-check.
PREFLIGHT_CALL = timedelta(minutes=5)
# Drills recorded before the pre-flight existed replay without it.
VENUES_PREFLIGHT_PATCH = "drill-venues-preflight"


class _Refused(Exception):
    """The drill cannot run as asked; nothing was touched."""


class _PreflightFailed(Exception):
    """A venue failed the pre-flight check: the drill fails with the reason, nothing injected."""


@workflow.defn(name=DRILL_WORKFLOW)
class DrillWorkflow:
    def __init__(self) -> None:
        self._steps = StepLog()
        self._request: DrillRequest | None = None
        self._plan: DrillPlan | None = None
        self._scenario = DrillScenario.PLANNED_SWITCHOVER
        self._outcome = DrOutcome.RUNNING
        self._waiting_for: str | None = None
        self._approval: Approval | None = None
        self._actions: list[RecordedAction] = []
        self._fault: FaultRecord | None = None
        self._promotion: PromotionReport | None = None
        self._failback: FailbackReport | None = None
        self._problems: list[str] = []
        self._paused_monitor = False
        self._venues_check: VenuesCheck | None = None

    @workflow.run
    async def run(self, raw: object = None) -> DrillReport:
        request = parse_input(DrillRequest, raw)
        self._request = request
        if request.scenario is not None:
            self._scenario = request.scenario
        self._set_search_attributes()
        refused: str | None = None
        preflight_failed: str | None = None
        try:
            await self._drill(request)
        except _Refused as exc:
            refused = str(exc)
        except _PreflightFailed as exc:
            preflight_failed = str(exc)
        finally:
            await self._release_monitor()
        measured = measure(self._scenario, self._fault, self._promotion)
        if refused is not None:
            reasons, self._outcome = [f"refused: {refused}"], DrOutcome.REFUSED
        elif preflight_failed is not None:
            # Not a refusal: the system was fit to drill, and its venues were not. That is a
            # finding about DR readiness, so the drill fails.
            reasons, self._outcome = [preflight_failed], DrOutcome.FAILED
        else:
            reasons = self._problems + judge(
                self._scenario,
                request.objectives,
                measured,
                self._promotion,
                self._failback,
                request.failback,
            )
            self._outcome = DrOutcome.FAILED if reasons else DrOutcome.PASSED
        self._set_search_attributes()
        return DrillReport(
            workflow_id=workflow.info().workflow_id,
            system=request.system,
            scenario=self._scenario,
            requested_by=request.requested_by,
            reason=request.reason,
            outcome=self._outcome,
            passed=self._outcome is DrOutcome.PASSED,
            reasons=reasons,
            objectives=request.objectives,
            measured=measured,
            fault=self._fault,
            started_at=workflow.info().start_time,
            finished_at=workflow.now(),
            steps=self._steps.records,
            promotion=self._promotion,
            failback=self._failback,
            actions=self._actions,
            ui_url=self._ui_link(),
            venues_check=self._venues_check,
        )

    async def _drill(self, request: DrillRequest) -> None:
        plan = await self._must(
            "plan",
            lambda: workflow.execute_activity_method(
                DrillActivities.load_drill_plan,
                DrillPlanRequest(system=request.system),
                start_to_close_timeout=CALL,
                retry_policy=SERVICE_RETRY,
            ),
        )
        self._plan = plan
        self._scenario = plan.scenario_for(request)
        self._set_search_attributes()
        if plan.blackout is not None and not request.override_blackout:
            raise _Refused(
                f"now is inside the blackout window {plan.blackout}; drills never run then "
                "(override_blackout: true to run anyway)"
            )
        if self._scenario is DrillScenario.KILL_PRIMARY and not plan.lab_control:
            raise _Refused(
                f"{plan.system} has no lab control API, so no real fault can be injected; "
                "use the planned-switchover scenario"
            )
        if plan.production:
            await self._production_approval(plan, request)
        await self._primary_holds_lease(plan)
        # The first step that talks to the world beyond our own state, after the refusals that
        # touch nothing (a venue logon inside a blackout window would already be touching).
        if workflow.patched(VENUES_PREFLIGHT_PATCH):
            await self._venues_preflight(plan)
        if self._scenario is DrillScenario.KILL_PRIMARY:
            await self._kill_primary(plan, request)
        else:
            await self._planned_switchover(plan, request)
        if request.failback and self._promoted:
            await self._fail_back(plan, request)

    # --- scenarios ------------------------------------------------------------------------

    async def _kill_primary(self, plan: DrillPlan, request: DrillRequest) -> None:
        await self._monitor_armed(plan)
        self._fault = await self._must(
            "inject_fault",
            lambda: self._lab_fault("kill", "primary"),
        )
        try:
            self._promotion = await self._steps.run(
                "await_promotion",
                lambda: workflow.execute_activity_method(
                    RunbookControlActivities.await_promotion,
                    AwaitPromotionRequest(
                        system=plan.system,
                        started_after=self._fault.at if self._fault else workflow.now(),
                        timeout_s=request.promotion_timeout_s,
                    ),
                    start_to_close_timeout=timedelta(seconds=request.promotion_timeout_s + 30),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=3),
                ),
            )
        except ActivityError as err:
            self._problems.append(f"the monitor did not promote DR: {failure_message(err)}")
        # The old primary comes back whatever happened: a drill must leave the lab whole.
        try:
            await self._steps.run("restart_old_primary", lambda: self._lab_fault("heal", "primary"))
        except ActivityError as err:
            self._problems.append(f"could not restart the old primary: {failure_message(err)}")

    async def _planned_switchover(self, plan: DrillPlan, request: DrillRequest) -> None:
        held = await self._must(
            "hold_monitor",
            lambda: monitor_action(plan.system, "pause", self._identity, "drill switchover"),
        )
        self._paused_monitor = held.applied
        try:
            self._promotion = await self._steps.run(
                "promotion",
                lambda: planned_promotion(
                    PromotionRequest(
                        system=plan.system,
                        requested_by=request.requested_by,
                        planned=True,
                        reason=f"drill {workflow.info().workflow_id}",
                        kind=DrKind.DRILL,
                        to_region=plan.dr_region,
                    ),
                    request.approver,
                    plan.approval_timeout_s,
                ),
            )
        except WorkflowAlreadyStartedError:
            raise _Refused(f"a promotion of {plan.system} is already running") from None
        except ChildWorkflowError as err:
            self._problems.append(f"the planned promotion failed: {failure_message(err)}")
            return
        if self._promoted:
            await self._steps.run(
                "retarget_monitor",
                lambda: monitor_action(
                    plan.system, "retarget", self._identity, "drill", region=plan.dr_region
                ),
            )

    async def _fail_back(self, plan: DrillPlan, request: DrillRequest) -> None:
        try:
            self._failback = await self._steps.run(
                "failback",
                lambda: workflow.execute_child_workflow(
                    FAILBACK_WORKFLOW,
                    FailbackRequest(
                        system=plan.system,
                        requested_by=request.requested_by,
                        approver=request.approver,
                        reason=f"drill {workflow.info().workflow_id}",
                        kind=DrKind.DRILL,
                    ),
                    id=failback_workflow_id(plan.system),
                    task_queue=region_task_queue(plan.primary_region),
                    result_type=FailbackReport,
                ),
            )
        except (ChildWorkflowError, WorkflowAlreadyStartedError) as err:
            self._problems.append(f"failback did not run: {failure_message(err)}")

    # --- checks before anything is touched ------------------------------------------------

    async def _production_approval(self, plan: DrillPlan, request: DrillRequest) -> None:
        if not request.allow_production:
            raise _Refused(
                f"{plan.system} is marked production; a drill there needs allow_production: "
                "true and a second operator's approval"
            )
        record = self._steps.begin("production_approval")
        self._waiting_for = "approval by a second operator (production system)"
        try:
            await workflow.wait_condition(
                lambda: self._approval is not None,
                timeout=timedelta(seconds=plan.approval_timeout_s),
            )
        except TimeoutError:
            self._steps.fail(record, "no approval in time")
            raise _Refused(
                f"no second operator approved within {plan.approval_timeout_s:g} s"
            ) from None
        finally:
            self._waiting_for = None
        assert self._approval is not None
        self._steps.end(record, 1, f"approved by {self._approval.approver}")

    async def _primary_holds_lease(self, plan: DrillPlan) -> None:
        lease, holder = await self._must("check_lease", lambda: lease_holder(plan.system))
        if lease is None or lease.region != plan.primary_region:
            raise _Refused(
                f"the lease of {plan.system} is held by {holder}, not {plan.primary_region}: "
                "fail back before drilling again"
            )

    async def _venues_preflight(self, plan: DrillPlan) -> None:
        """Every venue must answer through its adapter before anything is broken on purpose: a
        fault injected into a system whose venues already fail proves nothing about the
        runbooks and leaves a real mess behind."""
        record = self._steps.begin("venues_check")
        try:
            check = await workflow.execute_activity_method(
                DrillActivities.check_venues,
                VenuesCheckRequest(system=plan.system),
                start_to_close_timeout=PREFLIGHT_CALL,
                retry_policy=SERVICE_RETRY,
            )
        except ActivityError as err:
            self._steps.fail(record, failure_message(err))
            raise _Refused(f"venues_check failed: {failure_message(err)}") from None
        self._venues_check = check
        if not check.ok:
            self._steps.fail(record, check.failure_summary())
            raise _PreflightFailed(
                f"pre-flight venues check failed, so no fault was injected: "
                f"{check.failure_summary()}"
            )
        self._steps.end(record, 1, f"{len(check.venues)} venues answered through their adapters")

    async def _monitor_armed(self, plan: DrillPlan) -> None:
        """kill-primary measures the monitor: it must be running and free to act now."""
        result = await self._must(
            "check_monitor", lambda: monitor_action(plan.system, "status", self._identity)
        )
        status = result.status
        if status is None:
            raise _Refused(
                f"no health monitor is running for {plan.system}; start it "
                f"(`drctl monitor start --system {plan.system}`) or use planned-switchover"
            )
        blocked = []
        if status.phase is not MonitorPhase.NOMINAL:
            blocked.append(f"its phase is {status.phase.value}")
        if status.paused:
            blocked.append("it is paused")
        if status.needs_ack:
            blocked.append("it waits for an ack of its last failover")
        if status.last_action_at is not None and status.cooldown_s is not None:
            ready_at = status.last_action_at + timedelta(seconds=status.cooldown_s)
            if ready_at > workflow.now():
                left = (ready_at - workflow.now()).total_seconds()
                blocked.append(f"its cooldown has {left:.0f} s left")
        if blocked:
            raise _Refused(
                f"the monitor of {plan.system} could not fail over now: {'; '.join(blocked)}"
            )

    # --- operator actions -----------------------------------------------------------------

    @workflow.update(name="approve")
    async def approve(self, approval: Approval) -> str:
        self._approval = approval
        self._actions.append(
            RecordedAction(
                kind="approval",
                by=approval.approver,
                action="approve",
                comment=approval.comment,
                at=workflow.now(),
            )
        )
        return f"approved by {approval.approver}"

    @approve.validator
    def _validate_approve(self, approval: Approval) -> None:
        request = self._request
        if self._waiting_for is None or request is None:
            raise ValueError("this drill is not waiting for an approval")
        if approval.approver.casefold() == request.requested_by.casefold():
            raise ValueError(
                f"{approval.approver} requested this drill; the approval must come from a "
                "second operator"
            )

    @workflow.query(name="progress")
    def progress(self) -> RunProgress:
        current = self._steps.current
        return RunProgress(
            workflow_id=workflow.info().workflow_id,
            system=self._request.system if self._request else "",
            outcome=self._outcome,
            current_step=current.name if current else None,
            waiting_for=self._waiting_for,
            steps=self._steps.records,
        )

    # --- helpers --------------------------------------------------------------------------

    @property
    def _identity(self) -> str:
        return f"drill:{workflow.info().workflow_id}"

    @property
    def _promoted(self) -> bool:
        return self._promotion is not None and self._promotion.outcome is DrOutcome.PROMOTED

    async def _lab_fault(
        self, action: Literal["kill", "heal"], target: Literal["primary", "dr"]
    ) -> FaultRecord:
        return await workflow.execute_activity_method(
            DrillActivities.lab_fault,
            LabFaultRequest(action=action, target=target),
            start_to_close_timeout=FAULT_CALL,
            retry_policy=FAULT_RETRY,
        )

    async def _must(self, name: str, action: Callable[[], Awaitable[T]]) -> T:
        """A step the drill cannot go on without; before the fault, failing it refuses."""
        try:
            return await self._steps.run(name, action)
        except ActivityError as err:
            raise _Refused(f"{name} failed: {failure_message(err)}") from None

    async def _release_monitor(self) -> None:
        if not self._paused_monitor or self._plan is None:
            return
        system = self._plan.system
        try:
            await self._steps.run(
                "release_monitor",
                lambda: monitor_action(system, "resume", self._identity, "drill ended"),
            )
        except ActivityError as err:
            self._problems.append(f"could not resume the monitor: {failure_message(err)}")

    def _ui_link(self) -> str:
        info = workflow.info()
        base = self._plan.ui_url.rstrip("/") if self._plan else ""
        return f"{base}/namespaces/{info.namespace}/workflows/{info.workflow_id}/{info.run_id}"

    def _set_search_attributes(self) -> None:
        if self._request is None:
            return
        upsert_dr_attributes(self._request.system, DrKind.DRILL, self._outcome)
