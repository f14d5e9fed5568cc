"""The promotion without Temporal: the same activities, called in order in one plain process.

What the seeds' failover scripts do, and what the durability overhead is measured against: the
PromotionWorkflow's steps (workflows/promotion.py, per-venue release) with the same requests and
the same concurrency (OMS fence beside the database steps; venues side by side, each released
as soon as it is reconciled), but no history, no retries, no task queues, no durable timers. A
step that fails raises; nothing survives a crash of this process. It runs only in a lab whose
primary was just killed, as the benchmark uses it, and like the monitor's promotion it takes the
primary as confirmed down (no probes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio.testing import ActivityEnvironment

from activities.alerts import Alert, AlertActivities
from activities.database import DatabaseActivities, DbEpochRequest, DbStepRequest
from activities.dns import DnsActivities, DnsUpdateRequest
from activities.lease_activities import AcquireLeaseRequest, LeaseActivities
from activities.oms import (
    ActivateRequest,
    BookRequest,
    FenceRequest,
    OmsActivities,
    ReleaseRequest,
    SyncRequest,
)
from activities.plan import PlanActivities, PlanRequest, PositionsRequest
from activities.reconcile import ReconcileActivities, ReconcileRequest, StillOpenRequest
from activities.venues import CancelRequest, LogoutRequest, SessionRequest, VenueActivities
from adapters.stores import open_lease_store
from domain.promotion import LeaseGrant, PromotionPlan
from domain.topology import load_topology
from lab.stack import LabPaths, read_secrets

T = TypeVar("T")
CONFIRM_ROUNDS = 3


class PlainPromotion:
    """One promotion, step by step, timed."""

    def __init__(self, root: Path, system: str = "lab") -> None:
        # The worker's environment: the credentials the activities resolve by variable name.
        os.environ.update(read_secrets(LabPaths(root)))
        self.topology = load_topology(LabPaths(root).topology)
        self.system = system
        self.oms = OmsActivities()
        self.plans = PlanActivities(self.topology, self.oms)
        self.venues = VenueActivities(self.topology)
        self.reconcile = ReconcileActivities(self.topology, self.oms)
        self.database = DatabaseActivities(self.topology)
        self.dns = DnsActivities(self.topology)
        self.alerts = AlertActivities(self.topology)
        self.started = 0.0
        # Each step's start and end, in seconds from the start of the promotion.
        self.began: dict[str, float] = {}
        self.times: dict[str, float] = {}

    async def step(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        async def in_context() -> T:
            return await call()

        self.began[name] = time.perf_counter() - self.started
        # The activities read their context (heartbeats, attempt): give them a test one.
        result = await ActivityEnvironment().run(in_context)
        self.times[name] = time.perf_counter() - self.started
        return result

    async def run(self) -> dict[str, float]:
        self.started = time.perf_counter()
        plan = await self.step(
            "plan", lambda: self.plans.load_promotion_plan(PlanRequest(system=self.system))
        )
        started_notice = asyncio.ensure_future(self._notify(plan, "promotion_started"))
        store = await open_lease_store(self.topology.lease)
        # What the workflow passes as the takeover time: when it began to take the lease.
        takeover_at = datetime.now(UTC)
        try:
            lease = LeaseActivities(store)
            grant = await self.step(
                "acquire_lease",
                lambda: lease.acquire_lease(
                    AcquireLeaseRequest(system=plan.system, region=plan.to_region, holder="plain")
                ),
            )
        finally:
            await store.close()
        await asyncio.gather(self._fence(plan, grant), self._database(plan, grant))
        await self.step(
            "sync_dr_state",
            lambda: self.oms.sync_dr_state(
                SyncRequest(oms_url=plan.to_oms_url, timeout_s=plan.sync_timeout_s)
            ),
        )
        book = await self.step(
            "snapshot_dr_book",
            lambda: self.oms.fetch_dr_book(
                BookRequest(oms_url=plan.to_oms_url, include_orders=False)
            ),
        )
        fills_since = (book.watermark.published_at or datetime.now(UTC)) - timedelta(
            seconds=plan.fill_lookback_margin_s
        )
        await self.step(
            "activate_dr",
            lambda: self.oms.activate_dr(
                ActivateRequest(oms_url=plan.to_oms_url, epoch=grant.epoch, mode="reduce_only")
            ),
        )
        await asyncio.gather(
            *(self._venue(plan, grant, fills_since, takeover_at, v) for v in plan.venues)
        )
        released = max(self.times[f"release_trading/{v}"] for v in plan.venues)
        await self.step(
            "update_dns",
            lambda: self.dns.update_dns(
                DnsUpdateRequest(system=plan.system, active=plan.dns_active)
            ),
        )
        dns = self.times["update_dns"]
        await started_notice
        await self._notify(plan, "promotion_completed")
        return {
            "start_to_released_s": released,
            "first_venue_released_s": min(self.times[f"release_trading/{v}"] for v in plan.venues),
            "lease_to_dns_s": dns - self.began["acquire_lease"],
            "start_to_dns_s": dns,
        }

    async def _fence(self, plan: PromotionPlan, grant: LeaseGrant) -> None:
        fence = await self.step(
            "fence_primary",
            lambda: self.oms.fence_primary(
                FenceRequest(oms_url=plan.from_oms_url, epoch=grant.epoch, best_effort=True)
            ),
        )
        expires = grant.previous_expires_at
        now = datetime.now(UTC)
        if not fence.confirmed and expires is not None and expires > now:
            await asyncio.sleep((expires - now).total_seconds())

    async def _database(self, plan: PromotionPlan, grant: LeaseGrant) -> None:
        if not plan.has_database:
            return
        step = DbStepRequest(system=plan.system, direction=plan.direction)
        at_epoch = DbEpochRequest(system=plan.system, direction=plan.direction, epoch=grant.epoch)
        await self.step("check_db_replica", lambda: self.database.check_db_replica(step))
        await self.step("fence_db_primary", lambda: self.database.fence_db_primary(at_epoch))
        await self.step("promote_db_replica", lambda: self.database.promote_db_replica(at_epoch))

    async def _venue(
        self,
        plan: PromotionPlan,
        grant: LeaseGrant,
        fills_since: datetime,
        takeover_at: datetime,
        venue: str,
    ) -> None:
        account = plan.account_at(venue)
        session = asyncio.ensure_future(
            self.step(
                f"connect_session/{venue}",
                lambda: self.venues.connect_session(SessionRequest(venue=venue, account=account)),
            )
        )
        if venue in plan.session_bound_reads:
            await session
        diff = await self.step(
            f"reconcile_venue/{venue}",
            lambda: self.reconcile.reconcile_venue(
                ReconcileRequest(
                    venue=venue, account=account, dr_oms_url=plan.to_oms_url,
                    fills_since=fills_since, new_epoch=grant.epoch, takeover_at=takeover_at,
                    system=plan.system,
                )
            ),
        )  # fmt: skip
        grant_ = await session
        logout = self.step(
            f"logout_session/{venue}",
            lambda: self.venues.logout_session(
                LogoutRequest(venue=venue, account=account, session_id=grant_.session_id)
            ),
        )
        still_open = diff.to_cancel_or_confirm_dead
        if not still_open:
            await logout
        else:
            logged_out: asyncio.Future[Any] | None = None
            for _ in range(CONFIRM_ROUNDS):
                ids = still_open
                await self.step(
                    f"cancel_orders/{venue}",
                    lambda ids=ids: self.venues.cancel_orders(  # type: ignore[misc]
                        CancelRequest(venue=venue, account=account, client_order_ids=ids)
                    ),
                )
                logged_out = logged_out or asyncio.ensure_future(logout)
                confirmed = await self.step(
                    f"confirm_cancelled/{venue}",
                    lambda ids=ids: self.reconcile.still_open(  # type: ignore[misc]
                        StillOpenRequest(venue=venue, account=account, client_order_ids=ids)
                    ),
                )
                still_open = confirmed.client_order_ids
                if not still_open:
                    break
            if logged_out is not None:
                await logged_out
        await self.step(
            f"verify_positions/{venue}",
            lambda: self.plans.verify_positions(
                PositionsRequest(
                    system=plan.system, oms_url=plan.to_oms_url, fills_since=fills_since,
                    venue=venue,
                )
            ),
        )  # fmt: skip
        await self.step(
            f"release_trading/{venue}",
            lambda: self.oms.release_trading(
                ReleaseRequest(oms_url=plan.to_oms_url, epoch=grant.epoch, venues=[venue])
            ),
        )

    async def _notify(self, plan: PromotionPlan, kind: str) -> None:
        alert = Alert(
            system=plan.system, kind=kind, severity="info", summary=f"plain {kind}",
            details={}, idempotency_key=f"plain/{kind}/{time.time_ns()}",
            workflow_id="plain", ui_url="",
        )  # fmt: skip
        await self.step(f"notify/{kind}", lambda: self.alerts.notify(alert))
