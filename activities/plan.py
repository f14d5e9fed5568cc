"""Resolving the topology for one runbook run, and checks that read several systems at once.

The plan is an activity result, so the exact configuration a promotion used is in its history.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.oms import BookRequest, OmsActivities
from activities.venues import venue_adapter
from adapters.venues import declared_capabilities
from domain.book import BookSnapshot, Fill
from domain.monitoring import FeedPlan, MonitorPlan, SourcePlan, VantagePlan
from domain.promotion import PositionCheck, PromotionPlan
from domain.readiness import ReadinessThresholds
from domain.reconciliation import (
    check_fills,
    compare_positions,
    fills_from_reports,
    last_prices,
    positions_before,
    recompute_positions,
)
from domain.topology import Topology
from domain.venues import VenueCapability, VenueError

# A healthy watch reports back once per lifetime: the monitor's whole cost while nothing happens.
WATCH_LIFETIME_S = 600.0
POSITION_ROUNDS = 5
POSITION_ROUND_PAUSE_S = 0.2


class PlanRequest(BaseModel):
    system: str
    to_region: str | None = None
    # Failback: promote the system's primary region, whatever the topology calls it.
    to_primary: bool = False


class MonitorPlanRequest(BaseModel):
    system: str


class FeedPlanRequest(BaseModel):
    feed: str


class PositionsRequest(BaseModel):
    system: str
    oms_url: str
    fills_since: datetime
    # One venue's part of the check (per-venue release); None: every venue at once.
    venue: str | None = None


class PlanActivities:
    def __init__(self, topology: Topology, oms: OmsActivities) -> None:
        self._topology = topology
        self._oms = oms
        # Import every venue's adapter now, at worker start, not in a promotion's first step:
        # asking an adapter class for its capabilities imports its client library, and ccxt
        # alone takes one to three seconds, all of it RTO. A venue this worker cannot serve is
        # reported by the step itself.
        for system in topology.systems:
            with contextlib.suppress(ApplicationError):
                self._venue_capabilities(system.name)

    @activity.defn(name="load_promotion_plan")
    async def load_promotion_plan(self, request: PlanRequest) -> PromotionPlan:
        try:
            system = self._topology.system(request.system)
        except KeyError as exc:
            raise ApplicationError(str(exc.args[0]), non_retryable=True) from None
        default = system.primary_region if request.to_primary else system.dr_region
        to_region = request.to_region or default
        regions = {
            system.primary_region: system.primary_oms_url,
            system.dr_region: system.dr_oms_url,
        }
        if to_region not in regions:
            raise ApplicationError(
                f"system {system.name!r} has regions {sorted(regions)}; cannot promote "
                f"{to_region!r}",
                non_retryable=True,
            )
        from_region = system.primary_region if to_region == system.dr_region else system.dr_region
        topology = self._topology
        return PromotionPlan(
            system=system.name,
            production=system.production,
            from_region=from_region,
            to_region=to_region,
            from_oms_url=str(regions[from_region]),
            to_oms_url=str(regions[to_region]),
            venues=list(system.venues),
            accounts={v.name: v.account_for(system.name) for v in topology.venues_of(system)},
            session_bound_reads=[
                v.name for v in topology.venues_of(system) if v.session_bound_reads
            ],
            venue_capabilities=self._venue_capabilities(system.name),
            discrepancy_tolerance_notional=Decimal(str(system.discrepancy_tolerance_notional)),
            fill_lookback_margin_s=system.fill_lookback_margin_s,
            approval_timeout_s=system.approval_timeout_s,
            decision_timeout_s=system.decision_timeout_s,
            sync_timeout_s=topology.replication.sync_timeout_s,
            confirmation_count=topology.health.confirmation_count,
            probe_interval_s=topology.health.interval_s,
            lease_ttl_s=topology.lease.ttl_s,
            ui_url=str(topology.temporal.ui_url),
            dns_active="dr" if to_region == system.dr_region else "primary",
            has_database=system.database is not None,
            loaded_on=activity.info().task_queue,
        )

    def _venue_capabilities(self, system: str) -> dict[str, list[VenueCapability]]:
        """Each venue's declared capabilities, asked of its adapter class: no connection."""
        try:
            return {
                v.name: sorted(declared_capabilities(v))
                for v in self._topology.venues_of(self._topology.system(system))
            }
        except VenueError as exc:
            raise ApplicationError(
                f"{exc}; fix the topology or install the adapter's client library on this worker",
                non_retryable=True,
            ) from None

    @activity.defn(name="load_monitor_plan")
    async def load_monitor_plan(self, request: MonitorPlanRequest) -> MonitorPlan:
        try:
            system = self._topology.system(request.system)
        except KeyError as exc:
            raise ApplicationError(str(exc.args[0]), non_retryable=True) from None
        vantages = self._vantage_plans()
        health = self._topology.health
        return MonitorPlan(
            system=system.name,
            primary_region=system.primary_region,
            dr_region=system.dr_region,
            oms_urls={
                system.primary_region: str(system.primary_oms_url),
                system.dr_region: str(system.dr_oms_url),
            },
            vantages=vantages,
            interval_s=health.interval_s,
            latency_threshold_ms=health.latency_threshold_ms,
            freshness_threshold_s=health.freshness_threshold_s,
            confirmation_count=health.confirmation_count,
            recovery_count=health.recovery_count,
            cooldown_s=health.cooldown_s,
            watch_lifetime_s=WATCH_LIFETIME_S,
            readiness=ReadinessThresholds(
                max_stream_lag_events=health.dr_ready_max_stream_lag_events,
                max_stream_lag_s=health.dr_ready_max_stream_lag_s,
                intervals=health.dr_ready_intervals,
                db_max_lag_bytes=system.database.max_lag_on_failover_bytes
                if system.database
                else None,
                db_max_lag_s=system.database.max_lag_on_failover_s if system.database else None,
            ),
        )

    @activity.defn(name="load_feed_plan")
    async def load_feed_plan(self, request: FeedPlanRequest) -> FeedPlan:
        feed = next((f for f in self._topology.feeds if f.name == request.feed), None)
        if feed is None:
            known = [f.name for f in self._topology.feeds]
            raise ApplicationError(
                f"no feed named {request.feed!r}; known: {known}", non_retryable=True
            )
        health = self._topology.health
        return FeedPlan(
            feed=feed.name,
            sources=[SourcePlan(name=s.name, url=str(s.url), rank=s.rank) for s in feed.sources],
            vantages=self._vantage_plans(),
            interval_s=health.interval_s,
            latency_threshold_ms=health.latency_threshold_ms,
            freshness_threshold_s=health.freshness_threshold_s,
            confirmation_count=health.confirmation_count,
            recovery_count=health.recovery_count,
            recovery_window_s=feed.recovery_window_s,
            watch_lifetime_s=WATCH_LIFETIME_S,
        )

    def _vantage_plans(self) -> list[VantagePlan]:
        vantages = self._topology.vantage_points
        if not vantages:
            raise ApplicationError(
                "the topology has no [[vantage_points]]: a monitor needs at least one place "
                "to probe from (three give a quorum that survives one bad network)",
                non_retryable=True,
            )
        return [
            VantagePlan(
                name=v.name,
                region=v.region,
                task_queue=v.task_queue,
                http_proxy=str(v.http_proxy) if v.http_proxy else None,
            )
            for v in vantages
        ]

    @activity.defn(name="verify_positions")
    async def verify_positions(self, request: PositionsRequest) -> PositionCheck:
        """Positions recomputed from venue fills vs the promoted book.

        Recomputed = the book's positions without the fills it booked since ``fills_since``,
        plus every (deduplicated) venue fill since then, up to the last fill the book has booked
        from each venue. A difference left after that is real; it gets a few rounds in case a
        fill was booked between the two reads, then it is reported.

        With ``venue``, only that venue's fills are taken out and put back: what is left is
        that venue's own difference, so each venue's check gates only that venue's release
        (the venues' differences add up to the whole book's).
        """
        system = self._topology.system(request.system)
        venues = [
            v
            for v in self._topology.venues_of(system)
            if request.venue is None or v.name == request.venue
        ]
        checked = {v.name for v in venues}
        result = PositionCheck(discrepancies=[], positions={}, rounds=0)
        for round_ in range(1, POSITION_ROUNDS + 1):
            activity.heartbeat(round_)
            book = await self._fetch_book(request)
            venue_fills = await asyncio.gather(
                *(
                    self._fills(v.name, v.account_for(system.name), request.fills_since)
                    for v in venues
                )
            )
            # Compare at the book's own cut: a venue fill newer than the last fill the book
            # has booked from that venue is not yet due (the OMS books it next), while an
            # older one it lacks is a real miss.
            due = [
                f
                for per_venue in venue_fills
                for f in per_venue
                if f.venue_seq <= book.venue_fill_seq.get(f.venue, 0)
            ]
            # Trade ids are unique only within a venue: deduplicate venue by venue.
            unique = [
                fill
                for v in venues
                for fill in check_fills(
                    v.name,
                    [f for f in due if f.venue == v.name],
                    {f.trade_id for f in book.fills if f.venue == v.name},
                )[0]
            ]
            booked = [f for f in book.fills if f.venue in checked]
            base = positions_before(book.positions, booked)
            recomputed = recompute_positions(base, unique)
            prices = last_prices([*unique, *booked])
            discrepancies = compare_positions(book.positions, recomputed, prices)
            result = PositionCheck(
                discrepancies=discrepancies,
                positions=dict(book.positions),
                rounds=round_,
                attempt=activity.info().attempt,
            )
            if not discrepancies:
                break
            await asyncio.sleep(POSITION_ROUND_PAUSE_S)
        return result

    async def _fetch_book(self, request: PositionsRequest) -> BookSnapshot:
        # Positions and fills only: the open orders are the reconciliation's business.
        return await self._oms.fetch_dr_book(
            BookRequest(
                oms_url=request.oms_url,
                fills_since=request.fills_since,
                venue=request.venue,
                include_orders=False,
            )
        )

    async def _fills(self, venue: str, account: str, since: datetime) -> list[Fill]:
        async with venue_adapter(self._topology, venue, account) as adapter:
            reports = await adapter.fills_since(since)
        fills, _ = fills_from_reports(venue, reports)
        return fills
