"""Resolving the topology for one runbook run, and checks that read several systems at once.

The plan is an activity result, so the exact configuration a promotion used is in its history.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.oms import BookRequest, OmsActivities
from activities.venue_client import VenueClient, VenueError
from domain.book import BookSnapshot, Fill, Side
from domain.monitoring import FeedPlan, MonitorPlan, SourcePlan, VantagePlan
from domain.promotion import PositionCheck, PromotionPlan
from domain.reconciliation import (
    check_fills,
    compare_positions,
    last_prices,
    parse_venue_fills,
    recompute_positions,
)
from domain.topology import Topology

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


class PlanActivities:
    def __init__(self, topology: Topology, oms: OmsActivities) -> None:
        self._topology = topology
        self._oms = oms

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
            member=system.name,
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
        )

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
        """
        system = self._topology.system(request.system)
        venues = self._topology.venues_of(system)
        result = PositionCheck(discrepancies=[], positions={}, rounds=0)
        for round_ in range(1, POSITION_ROUNDS + 1):
            activity.heartbeat(round_)
            book = await self._fetch_book(request)
            venue_fills = await asyncio.gather(
                *(self._fills(v.name, system.name, request.fills_since) for v in venues)
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
            booked = {f.trade_id for f in book.fills}
            unique, _ = check_fills("*", due, booked)
            base = recompute_positions(book.positions, (_opposite(f) for f in book.fills))
            recomputed = recompute_positions(base, unique)
            prices = last_prices([*unique, *book.fills])
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
        return await self._oms.fetch_dr_book(
            BookRequest(oms_url=request.oms_url, fills_since=request.fills_since)
        )

    async def _fills(self, venue: str, member: str, since: datetime) -> list[Fill]:
        try:
            client = VenueClient(self._topology.venue(venue), member=member)
        except VenueError as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None
        try:
            raw = await client.fills_raw(since_time=since)
        except VenueError as exc:
            raise ApplicationError(str(exc)) from None
        finally:
            await client.close()
        fills, _ = parse_venue_fills(venue, raw)
        return fills


def _opposite(fill: Fill) -> Fill:
    """The same fill with the other side: subtracting a booked fill from a position."""
    return fill.model_copy(update={"side": Side.SELL if fill.side is Side.BUY else Side.BUY})
