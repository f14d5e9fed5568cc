"""Promotion: fail a trading system over to its DR region, exactly once, with an audit trail.

Incident (unplanned): confirm the primary is down from the DR side -> take the lease (new epoch)
-> fence the primary (best effort; the lease already fences) -> wait out the old lease if the
primary could not confirm -> sync DR with the stream -> activate DR reduce-only -> VenueRecovery
per venue, in parallel -> positions from fills vs the book -> discrepancy gate -> release trading
-> DNS to DR -> notify.

Planned: a second operator approves first, and the primary is deactivated gracefully (its venue
sessions logged out) before the lease moves.

Once the lease has moved the system is never silently left half-way: a step that fails for good
pages, records the failure, and waits for an operator to retry it or abort (staying fenced).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.alerts import Alert
    from activities.dns import DnsChangeResult, DnsUpdateRequest
    from activities.lease_activities import AcquireLeaseRequest
    from activities.oms import (
        ActivateRequest,
        BookRequest,
        FenceRequest,
        ProbeRequest,
        ReleaseRequest,
        SyncRequest,
    )
    from activities.plan import PlanRequest, PositionsRequest
    from domain.book import BookSnapshot
    from domain.lease import LeaseRecord
    from domain.promotion import (
        PROMOTION_WORKFLOW,
        VENUE_RECOVERY_WORKFLOW,
        Approval,
        ControlOutcome,
        Decision,
        DrKind,
        DrOutcome,
        FenceOutcome,
        LeaseGrant,
        PositionCheck,
        PrimaryConfirmation,
        PromotionPlan,
        PromotionProgress,
        PromotionReport,
        PromotionRequest,
        RecordedAction,
        ReplicationGap,
        Resolution,
        VenueRecoveryReport,
        VenueRecoveryRequest,
    )
    from workflows.steps import (
        SERVICE_RETRY,
        WORKER_LOST,
        RunbookStop,
        StepLog,
        failure_message,
        parse_input,
        upsert_dr_attributes,
    )

T = TypeVar("T")

CONTROL_CALL = timedelta(seconds=15)
CONTROL_RETRY = SERVICE_RETRY
# Without the lease there is no promotion: while the store is unreachable, keep trying (the
# operator sees the attempts in the UI) rather than give up or go on without it.
LEASE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=0,
    non_retryable_error_types=[],
)
FENCE_RETRY = RetryPolicy(maximum_attempts=2, initial_interval=timedelta(milliseconds=200))
NOTIFY_RETRY = RetryPolicy(maximum_attempts=5, initial_interval=timedelta(milliseconds=500))


@workflow.defn(name=PROMOTION_WORKFLOW)
class PromotionWorkflow:
    def __init__(self) -> None:
        self._steps = StepLog()
        self._request: PromotionRequest | None = None
        self._plan: PromotionPlan | None = None
        self._outcome = DrOutcome.RUNNING
        self._outcome_detail = "in progress"
        self._waiting_for: str | None = None
        self._fenced = False
        self._grant: LeaseGrant | None = None
        self._previous_epoch: int | None = None
        self._confirmation: PrimaryConfirmation | None = None
        self._fence: FenceOutcome | None = None
        self._gap: ReplicationGap | None = None
        self._venues: list[VenueRecoveryReport] = []
        self._positions: PositionCheck | None = None
        self._dns: DnsChangeResult | None = None
        self._actions: list[RecordedAction] = []
        self._approval: Approval | None = None
        self._decision: Decision | None = None
        self._resolution: Resolution | None = None
        self._alert_failures: list[str] = []

    # --- the runbook ----------------------------------------------------------------------

    @workflow.run
    async def run(self, raw: object = None) -> PromotionReport:
        # Decoded here, not by the SDK: input typed into the UI that does not fit would
        # otherwise fail every workflow task forever instead of failing the run once, clearly.
        request = parse_input(PromotionRequest, raw)
        self._request = request
        self._set_search_attributes()
        try:
            await self._promote(request)
        except RunbookStop as stop:
            self._outcome, self._outcome_detail = stop.outcome, stop.detail
        self._set_search_attributes()
        report = self._report()
        await self._notify(
            "promotion_completed" if self._outcome is DrOutcome.PROMOTED else "promotion_failed",
            "info" if self._outcome is DrOutcome.PROMOTED else "critical",
            report.summary_lines()[0],
            "final",
            details=report.brief(),
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return report

    async def _promote(self, request: PromotionRequest) -> None:
        plan = await self._before_fencing(
            "plan",
            lambda: workflow.execute_activity(
                "load_promotion_plan",
                PlanRequest(system=request.system, to_region=request.to_region),
                result_type=PromotionPlan,
                start_to_close_timeout=CONTROL_CALL,
                heartbeat_timeout=WORKER_LOST,
                retry_policy=CONTROL_RETRY,
            ),
        )
        self._plan = plan
        if request.planned:
            await self._await_approval(plan)
            await self._deactivate_primary(plan)
        else:
            await self._confirm_primary_down(plan)

        await self._notify(
            "promotion_started",
            "warning",
            f"promoting {plan.system} to {plan.to_region} ({self._kind.value})",
            "started",
        )
        holder = f"promotion:{workflow.info().workflow_id}:{workflow.info().run_id}"
        # A lease step that fails has changed nothing (outages are retried without end).
        grant = await self._before_fencing(
            "acquire_lease",
            lambda: self._call(
                "acquire_lease",
                AcquireLeaseRequest(system=plan.system, region=plan.to_region, holder=holder),
                LeaseGrant,
                retry=LEASE_RETRY,
            ),
        )
        self._grant, self._fenced = grant, True

        if not request.planned:
            self._fence = await self._gated(
                "fence_primary",
                lambda: self._call(
                    "fence_primary",
                    FenceRequest(oms_url=plan.from_oms_url, epoch=grant.epoch, best_effort=True),
                    FenceOutcome,
                    retry=FENCE_RETRY,
                ),
            )
            await self._await_old_lease_expiry(grant, self._fence)

        self._gap = await self._gated(
            "sync_dr_state",
            lambda: self._call(
                "sync_dr_state",
                SyncRequest(oms_url=plan.to_oms_url, timeout_s=plan.sync_timeout_s),
                ReplicationGap,
                timeout=timedelta(seconds=plan.sync_timeout_s + 15),
            ),
        )
        book = await self._gated(
            "snapshot_dr_book",
            lambda: self._call(
                "fetch_dr_book",
                BookRequest(oms_url=plan.to_oms_url, include_orders=False),
                BookSnapshot,
            ),
        )
        fills_since = (book.watermark.published_at or workflow.now()) - timedelta(
            seconds=plan.fill_lookback_margin_s
        )
        await self._gated(
            "activate_dr",
            lambda: self._call(
                "activate_dr",
                ActivateRequest(oms_url=plan.to_oms_url, epoch=grant.epoch, mode="reduce_only"),
                ControlOutcome,
            ),
        )
        self._venues = await self._gated(
            "venue_recovery", lambda: self._recover_venues(plan, grant, fills_since)
        )
        self._positions = await self._gated(
            "verify_positions",
            lambda: self._call(
                "verify_positions",
                PositionsRequest(
                    system=plan.system, oms_url=plan.to_oms_url, fills_since=fills_since
                ),
                PositionCheck,
                timeout=timedelta(seconds=60),
            ),
        )
        released = await self._discrepancy_gate(plan)
        if released:
            await self._gated(
                "release_trading",
                lambda: self._call(
                    "release_trading",
                    ReleaseRequest(oms_url=plan.to_oms_url, epoch=grant.epoch),
                    ControlOutcome,
                ),
            )
        self._dns = await self._gated(
            "update_dns",
            lambda: self._call(
                "update_dns",
                DnsUpdateRequest(system=plan.system, active=plan.dns_active),
                DnsChangeResult,
                timeout=timedelta(seconds=90),
            ),
        )
        if released:
            self._outcome = DrOutcome.PROMOTED
            self._outcome_detail = f"{plan.to_region} trading at epoch {grant.epoch}"

    async def _confirm_primary_down(self, plan: PromotionPlan) -> None:
        probes = plan.confirmation_count
        confirmation = await self._before_fencing(
            "confirm_primary_down",
            lambda: self._call(
                "confirm_primary_down",
                ProbeRequest(
                    oms_url=plan.from_oms_url,
                    probes=probes,
                    interval_s=plan.probe_interval_s,
                    timeout_s=plan.probe_interval_s,
                ),
                PrimaryConfirmation,
                timeout=timedelta(seconds=probes * plan.probe_interval_s * 2 + 10),
            ),
        )
        self._confirmation = confirmation
        if not confirmation.down:
            raise RunbookStop(
                DrOutcome.REFUSED,
                f"the {plan.from_region} OMS is active and answering from {plan.to_region} "
                f"({confirmation.summary}); refusing an unplanned promotion. For a "
                "switchover of a healthy primary use a planned promotion.",
            )

    async def _await_approval(self, plan: PromotionPlan) -> None:
        record = self._steps.begin("approval")
        self._waiting_for = "approval by a second operator"
        await self._notify(
            "approval_needed",
            "warning",
            f"planned promotion of {plan.system} needs a second operator's approval",
            "approval",
        )
        try:
            await workflow.wait_condition(
                lambda: self._approval is not None,
                timeout=timedelta(seconds=plan.approval_timeout_s),
            )
        except TimeoutError:
            self._steps.fail(record, "no approval in time")
            raise RunbookStop(
                DrOutcome.ABORTED,
                f"no second operator approved within {plan.approval_timeout_s:g} s; "
                "nothing changed",
            ) from None
        finally:
            self._waiting_for = None
        assert self._approval is not None
        self._steps.end(record, attempts=1, detail=f"approved by {self._approval.approver}")

    async def _deactivate_primary(self, plan: PromotionPlan) -> None:
        current = await self._before_fencing(
            "read_lease",
            lambda: self._call("read_lease", plan.system, LeaseRecord),
        )
        if current is None or current.region != plan.from_region:
            holder = f"{current.region} at epoch {current.epoch}" if current else "nobody"
            raise RunbookStop(
                DrOutcome.REFUSED,
                f"the lease of {plan.system} is held by {holder}, not {plan.from_region}: "
                "there is no active primary to switch over from",
            )
        await self._before_fencing(
            "deactivate_primary",
            lambda: self._call(
                "fence_primary",
                FenceRequest(oms_url=plan.from_oms_url, epoch=current.epoch, best_effort=False),
                FenceOutcome,
            ),
        )

    async def _await_old_lease_expiry(self, grant: LeaseGrant, fence: FenceOutcome) -> None:
        """An unconfirmed fence means the old primary may still trade until its lease expires."""
        expires = grant.previous_expires_at
        if fence.confirmed or expires is None or expires <= workflow.now():
            self._steps.skip("await_old_lease_expiry", "primary fenced or its lease expired")
            return
        wait = expires - workflow.now()
        record = self._steps.begin("await_old_lease_expiry")
        await workflow.sleep(wait)
        self._steps.end(record, attempts=1, detail=f"waited {wait.total_seconds():.2f} s")

    async def _recover_venues(
        self, plan: PromotionPlan, grant: LeaseGrant, fills_since: datetime
    ) -> list[VenueRecoveryReport]:
        takeover_at = self._steps.get("acquire_lease")
        assert takeover_at is not None and takeover_at.ended_at is not None
        # Counts this attempt too: an operator's retry starts fresh children under new ids.
        attempt = len([r for r in self._steps.records if r.name == "venue_recovery"])
        children = [
            workflow.execute_child_workflow(
                VENUE_RECOVERY_WORKFLOW,
                VenueRecoveryRequest(
                    system=plan.system,
                    venue=venue,
                    member=plan.member,
                    new_epoch=grant.epoch,
                    takeover_at=takeover_at.started_at,
                    fills_since=fills_since,
                    dr_oms_url=plan.to_oms_url,
                ),
                id=f"{workflow.info().workflow_id}/venue/{venue}/epoch-{grant.epoch}/try-{attempt}",
                task_queue=plan.task_queue,
                result_type=VenueRecoveryReport,
            )
            for venue in plan.venues
        ]
        return list(await asyncio.gather(*children))

    async def _discrepancy_gate(self, plan: PromotionPlan) -> bool:
        """Above tolerance, an operator decides; without a decision DR stays reduce-only."""
        notional = self._discrepancy_notional()
        invalid = [f for v in self._venues for f in v.fill_findings if f.kind == "invalid"]
        if notional <= plan.discrepancy_tolerance_notional and not invalid:
            self._steps.skip("discrepancy_gate", f"notional {notional} within tolerance")
            return True
        record = self._steps.begin("discrepancy_gate")
        self._waiting_for = (
            f"operator decision: discrepancies of notional {notional} exceed tolerance "
            f"{plan.discrepancy_tolerance_notional}"
            + (f" and {len(invalid)} invalid fill report(s)" if invalid else "")
        )
        await self._notify("decision_needed", "critical", self._waiting_for, "decision")
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None,
                timeout=timedelta(seconds=plan.decision_timeout_s),
            )
        except TimeoutError:
            self._steps.fail(record, "no decision in time; staying reduce-only")
            self._outcome = DrOutcome.HELD_REDUCE_ONLY
            self._outcome_detail = (
                f"no operator decision within {plan.decision_timeout_s:g} s; DR holds "
                "reduce-only at the new epoch"
            )
            await self._notify("decision_needed", "critical", self._outcome_detail, "no-decision")
            return False
        finally:
            self._waiting_for = None
        assert self._decision is not None
        self._steps.end(record, 1, f"{self._decision.action} by {self._decision.by}")
        if self._decision.action == "accept":
            return True
        self._outcome = DrOutcome.HELD_REDUCE_ONLY
        self._outcome_detail = f"{self._decision.by} chose to hold DR reduce-only"
        return False

    # --- steps and failures ---------------------------------------------------------------

    async def _call(
        self,
        name: str,
        arg: Any,
        result_type: type[T],
        retry: RetryPolicy = CONTROL_RETRY,
        timeout: timedelta = CONTROL_CALL,  # noqa: ASYNC109 - an activity timeout
    ) -> T:
        assert self._plan is not None
        result: T = await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            task_queue=self._plan.task_queue,
            start_to_close_timeout=timeout,
            heartbeat_timeout=WORKER_LOST,
            retry_policy=retry,
        )
        return result

    async def _before_fencing(self, name: str, action: Callable[[], Awaitable[T]]) -> T:
        """Before the lease moves, a failed step ends the promotion: nothing was changed."""
        try:
            return await self._steps.run(name, action)
        except (ActivityError, ChildWorkflowError) as err:
            raise RunbookStop(
                DrOutcome.REFUSED, f"{name} failed before anything changed: {failure_message(err)}"
            ) from None

    async def _gated(self, name: str, action: Callable[[], Awaitable[T]]) -> T:
        """After the lease moved, a failed step pages and waits for retry or abort."""
        while True:
            try:
                return await self._steps.run(name, action)
            except (ActivityError, ChildWorkflowError) as err:
                message = failure_message(err)
            self._waiting_for = f"operator: {name} failed: {message}"
            self._resolution = None
            await self._notify(
                "promotion_failed",
                "critical",
                f"{name} failed: {message}. The system stays fenced. Resolve with "
                f"`drctl resolve {workflow.info().workflow_id} retry|abort --as NAME`.",
                f"failed-{name}-{len(self._steps.records)}",
            )
            await workflow.wait_condition(lambda: self._resolution is not None)
            self._waiting_for = None
            resolution = self._resolution
            assert resolution is not None
            if resolution.action == "abort":
                raise RunbookStop(
                    DrOutcome.ABORTED,
                    f"{name} failed ({message}); aborted by {resolution.by}. The lease stays "
                    f"with {self._grant.region if self._grant else 'its holder'}: the old "
                    "primary remains fenced.",
                )

    async def _notify(
        self,
        kind: str,
        severity: str,
        summary: str,
        key: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Best effort: a broken pager must not stop a failover; failures go in the report."""
        request = self._request
        if request is None or self._plan is None:
            return
        info = workflow.info()
        alert = Alert(
            system=request.system,
            kind=kind,
            severity=severity,
            summary=summary,
            details=details or {},
            idempotency_key=f"{info.workflow_id}/{info.run_id}/{key}",
            workflow_id=info.workflow_id,
            ui_url=self._ui_link(),
        )
        try:
            await self._call("notify", alert, dict, retry=NOTIFY_RETRY)
        except ActivityError as err:
            self._alert_failures.append(f"{kind}: {failure_message(err)}")

    # --- operator actions -----------------------------------------------------------------

    @workflow.update(name="approve")
    async def approve(self, approval: Approval) -> str:
        self._approval = approval
        self._record("approval", approval.approver, "approve", approval.comment)
        return f"approved by {approval.approver}"

    @approve.validator
    def _validate_approve(self, approval: Approval) -> None:
        request = self._request
        if request is None or not request.planned:
            raise ValueError("only a planned promotion takes an approval")
        if self._approval is not None:
            raise ValueError(f"already approved by {self._approval.approver}")
        if approval.approver.casefold() == request.requested_by.casefold():
            raise ValueError(
                f"{approval.approver} requested this promotion; the approval must come from a "
                "second operator"
            )

    @workflow.update(name="decide")
    async def decide(self, decision: Decision) -> str:
        self._decision = decision
        self._record("decision", decision.by, decision.action, decision.comment)
        return f"{decision.action} by {decision.by}"

    @decide.validator
    def _validate_decide(self, decision: Decision) -> None:
        if self._waiting_for is None or not self._waiting_for.startswith("operator decision"):
            raise ValueError(f"this promotion is not waiting for a decision ({self._status()})")

    @workflow.update(name="resolve")
    async def resolve(self, resolution: Resolution) -> str:
        self._resolution = resolution
        self._record("resolution", resolution.by, resolution.action, resolution.comment)
        return f"{resolution.action} by {resolution.by}"

    @resolve.validator
    def _validate_resolve(self, resolution: Resolution) -> None:
        if self._waiting_for is None or not self._waiting_for.startswith("operator:"):
            raise ValueError(f"this promotion has no failed step to resolve ({self._status()})")

    @workflow.query(name="progress")
    def progress(self) -> PromotionProgress:
        request = self._request
        current = self._steps.current
        return PromotionProgress(
            workflow_id=workflow.info().workflow_id,
            system=request.system if request else "",
            kind=self._kind,
            outcome=self._outcome,
            current_step=current.name if current else None,
            waiting_for=self._waiting_for,
            epoch=self._grant.epoch if self._grant else None,
            steps=self._steps.records,
        )

    # --- helpers --------------------------------------------------------------------------

    @property
    def _kind(self) -> DrKind:
        return self._request.dr_kind if self._request else DrKind.INCIDENT

    def _status(self) -> str:
        current = self._steps.current
        return f"now at {current.name}" if current else f"outcome {self._outcome.value}"

    def _record(self, kind: str, by: str, action: str, comment: str) -> None:
        self._actions.append(
            RecordedAction(
                kind=kind,
                by=by,
                action=action,
                comment=comment,
                at=workflow.now(),
            )
        )

    def _set_search_attributes(self) -> None:
        if self._request is None:
            return
        upsert_dr_attributes(self._request.system, self._kind, self._outcome)

    def _ui_link(self) -> str:
        plan = self._plan
        info = workflow.info()
        base = plan.ui_url.rstrip("/") if plan else ""
        return f"{base}/namespaces/{info.namespace}/workflows/{info.workflow_id}/{info.run_id}"

    def _discrepancy_notional(self) -> Decimal:
        total = sum((f.notional for v in self._venues for f in v.unresolved), Decimal(0))
        if self._positions is not None:
            total += sum((p.notional for p in self._positions.discrepancies), Decimal(0))
        return total

    def _report(self) -> PromotionReport:
        request = self._request
        assert request is not None
        plan = self._plan
        info = workflow.info()
        finished = workflow.now()
        started = info.start_time
        released = self._steps.get("release_trading")
        dns = self._steps.get("update_dns")
        lease = self._steps.get("acquire_lease")
        rto_end = released.ended_at if released else None
        origin = request.detected_at or started
        lease_to_dns = (
            (dns.ended_at - lease.started_at).total_seconds()
            if dns and lease and dns.ended_at
            else None
        )
        outcome_detail = self._outcome_detail
        if self._alert_failures:
            outcome_detail += f" (alerts failed: {'; '.join(self._alert_failures)})"
        return PromotionReport(
            workflow_id=info.workflow_id,
            system=request.system,
            kind=self._kind,
            planned=request.planned,
            requested_by=request.requested_by,
            reason=request.reason,
            outcome=self._outcome,
            outcome_detail=outcome_detail,
            from_region=plan.from_region if plan else "",
            to_region=plan.to_region if plan else (request.to_region or ""),
            epoch=self._grant.epoch if self._grant else None,
            previous_epoch=(self._grant.epoch - 1) if self._grant else None,
            started_at=started,
            finished_at=finished,
            detected_at=request.detected_at,
            rto_s=(rto_end - origin).total_seconds() if rto_end else None,
            lease_to_dns_s=round(lease_to_dns, 3) if lease_to_dns is not None else None,
            steps=self._steps.records,
            confirmation=self._confirmation,
            fence=self._fence,
            replication_gap=self._gap,
            venues=self._venues,
            position_discrepancies=self._positions.discrepancies if self._positions else [],
            discrepancy_notional=self._discrepancy_notional(),
            actions=self._actions,
            dns_changed=self._dns.changed if self._dns else None,
            ui_url=self._ui_link(),
        )
