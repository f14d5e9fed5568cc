"""VenueRecovery: bring one venue in line with the promoted DR book.

Runs as a child of Promotion, one per venue, in parallel. Steps: a fresh session (waiting out the
venue's reconnect cooldown), reconciliation of every open order and of the fills since the
replication watermark minus a margin, cancels of ghosts and old-epoch orders (and of orders the
DR book holds open that the venue does not list: the cancel confirms them dead), re-queries until
they are gone, and a clean logout so the DR OMS logs on without a cooldown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.metrics import record_ghosts_cancelled
    from activities.reconcile import (
        ReconcileActivities,
        ReconcileRequest,
        StillOpenRequest,
    )
    from activities.venues import CancelRequest, LogoutRequest, SessionRequest, VenueActivities
    from domain.promotion import (
        VENUE_RECOVERY_WORKFLOW,
        VenueRecoveryReport,
        VenueRecoveryRequest,
        VenueSessionGrant,
    )
    from workflows.steps import SERVICE_RETRY, WORKER_LOST, StepLog, parse_input

A = TypeVar("A")
R = TypeVar("R")

# Runs recorded before it cancelled (to confirm dead) the DR book's orders the venue does not
# list keep replaying: those orders waited for a person.
CONFIRMS_MISSING_AT_VENUE = "venue-recovery-confirms-missing-at-venue-dead"
CONFIRM_ROUNDS = 3
VENUE_CALL = timedelta(seconds=15)
RECONCILE_CALL = timedelta(seconds=60)
VENUE_RETRY = SERVICE_RETRY
# Cooldown refusals carry their own delay (next_retry_delay); allow enough of them to outlast
# any sane cooldown, and bound the whole wait.
SESSION_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=30,
)
SESSION_DEADLINE = timedelta(minutes=5)


@workflow.defn(name=VENUE_RECOVERY_WORKFLOW)
class VenueRecoveryWorkflow:
    def __init__(self) -> None:
        self._steps = StepLog()

    @workflow.run
    async def run(self, raw: object = None) -> VenueRecoveryReport:
        request = parse_input(VenueRecoveryRequest, raw)
        # Where reading the venue needs no session, reconciliation goes on while the logon (and
        # any reconnect cooldown) is under way; nothing is cancelled before the session is ours.
        # Where it does (FIX), a second logon would replace the first: one after the other.
        session = asyncio.ensure_future(self._connect(request))
        if request.session_bound_reads:
            await session
        diff = await self._steps.run(
            "reconcile_venue",
            lambda: self._activity(
                ReconcileActivities.reconcile_venue,
                ReconcileRequest(
                    venue=request.venue,
                    account=request.account,
                    dr_oms_url=request.dr_oms_url,
                    fills_since=request.fills_since,
                    new_epoch=request.new_epoch,
                    takeover_at=request.takeover_at,
                    system=request.system,
                ),
                timeout=RECONCILE_CALL,
            ),
        )
        grant = await session
        to_cancel = diff.to_cancel
        if workflow.patched(CONFIRMS_MISSING_AT_VENUE):
            to_cancel = diff.to_cancel_or_confirm_dead
        still_open = await self._cancel_and_confirm(request, to_cancel, grant)
        # Ghosts and old-epoch orders (the orders DR did not know), confirmed gone.
        gone = set(diff.to_cancel) - set(still_open)
        record_ghosts_cancelled(workflow.metric_meter(), request.venue, len(gone))
        return VenueRecoveryReport(
            venue=request.venue,
            new_epoch=request.new_epoch,
            waited_for_cooldown=grant.waited_for_cooldown,
            matched=diff.matched,
            findings=diff.findings,
            fill_findings=diff.fill_findings,
            cancelled=to_cancel,
            still_open_after_cancel=still_open,
            steps=self._steps.records,
        )

    async def _connect(self, request: VenueRecoveryRequest) -> VenueSessionGrant:
        return await self._steps.run(
            "connect_session",
            lambda: workflow.execute_activity_method(
                VenueActivities.connect_session,
                SessionRequest(venue=request.venue, account=request.account),
                start_to_close_timeout=VENUE_CALL,
                heartbeat_timeout=WORKER_LOST,
                schedule_to_close_timeout=SESSION_DEADLINE,
                retry_policy=SESSION_RETRY,
            ),
        )

    async def _logout(self, request: VenueRecoveryRequest, grant: VenueSessionGrant) -> None:
        await self._steps.run(
            "logout_session",
            lambda: self._activity(
                VenueActivities.logout_session,
                LogoutRequest(
                    venue=request.venue, account=request.account, session_id=grant.session_id
                ),
            ),
        )

    async def _cancel_and_confirm(
        self, request: VenueRecoveryRequest, to_cancel: list[str], grant: VenueSessionGrant
    ) -> list[str]:
        """Cancel, then re-query until none of ``to_cancel`` is open; returns any that stay.

        The session is logged out as soon as the first cancels are in, alongside the
        confirming read: the clean logout is what lets the DR OMS log on without a cooldown.
        A later round re-sends cancels through the venue's mass-cancel API, which needs no
        session.
        """
        if not to_cancel:
            self._steps.skip("cancel_orders", "nothing to cancel")
            await self._logout(request, grant)
            return []
        logout: asyncio.Future[None] | None = None
        still_open = to_cancel
        for round_ in range(1, CONFIRM_ROUNDS + 1):
            ids = still_open
            await self._steps.run(
                f"cancel_orders_{round_}",
                lambda ids=ids: self._activity(  # type: ignore[misc]
                    VenueActivities.cancel_orders,
                    CancelRequest(
                        venue=request.venue, account=request.account, client_order_ids=ids
                    ),
                ),
                detail=f"{len(ids)} order(s)",
            )
            if logout is None:
                logout = asyncio.ensure_future(self._logout(request, grant))
            confirmed = await self._steps.run(
                f"confirm_cancelled_{round_}",
                lambda ids=ids: self._activity(  # type: ignore[misc]
                    ReconcileActivities.still_open,
                    StillOpenRequest(
                        venue=request.venue, account=request.account, client_order_ids=ids
                    ),
                ),
            )
            still_open = confirmed.client_order_ids
            if not still_open:
                break
        if logout is not None:
            await logout
        return still_open

    async def _activity(
        self,
        method: Callable[[Any, A], Awaitable[R]],
        arg: A,
        timeout: timedelta = VENUE_CALL,  # noqa: ASYNC109 - an activity timeout
    ) -> R:
        result: R = await workflow.execute_activity_method(
            method,
            arg,
            start_to_close_timeout=timeout,
            heartbeat_timeout=WORKER_LOST,
            retry_policy=VENUE_RETRY,
        )
        return result
