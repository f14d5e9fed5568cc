"""Reconciling one venue against the promoted DR book, next to the data.

The diff itself is the pure procedure in domain/reconciliation.py. It runs here rather than in the
workflow so that a venue's thousands of open orders never pass through the workflow history
(Temporal caps one payload at 2 MB): the history keeps every finding that is not a match, and
the number of matches.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel
from temporalio import activity

from activities.collector import collector_paused
from activities.oms import BookRequest, OmsActivities
from activities.venues import Account, venue_adapter
from domain.book import orders_after_fills
from domain.reconciliation import (
    DiscrepancyKind,
    FillFinding,
    OrderFinding,
    check_fills,
    classify_orders,
    fills_from_reports,
    orders_to_cancel,
    outside_universe,
)
from domain.topology import Topology
from domain.venues import VenueAdapter

# A venue that keeps filling while we look can make one round disagree with itself; a few
# rounds tell a race from a real difference.
SETTLE_ROUNDS = 3
UNSETTLED = (DiscrepancyKind.DRIFT, DiscrepancyKind.MISSING_AT_VENUE)


class ReconcileRequest(BaseModel):
    venue: str
    account: Account
    dr_oms_url: str
    fills_since: datetime
    new_epoch: int
    takeover_at: datetime
    # Whose symbol universe applies; absent in runs recorded before it existed.
    system: str | None = None


class VenueDiff(BaseModel):
    venue: str
    matched: int
    findings: list[OrderFinding]
    fill_findings: list[FillFinding]
    rounds: int
    attempt: int = 1

    @property
    def to_cancel(self) -> list[str]:
        return orders_to_cancel(self.findings)

    @property
    def to_cancel_or_confirm_dead(self) -> list[str]:
        """``to_cancel`` and the DR book's orders the venue does not list."""
        return orders_to_cancel(self.findings, confirm_missing_at_venue=True)


class StillOpenRequest(BaseModel):
    venue: str
    account: Account
    client_order_ids: list[str]


class StillOpen(BaseModel):
    venue: str
    client_order_ids: list[str]
    attempt: int = 1


class ReconcileActivities:
    def __init__(self, topology: Topology, oms: OmsActivities) -> None:
        self._topology = topology
        self._oms = oms

    @activity.defn(name="reconcile_venue")
    async def reconcile_venue(self, request: ReconcileRequest) -> VenueDiff:
        """Classify every open order at the venue and in the DR book, and check the fills."""
        async with venue_adapter(self._topology, request.venue, request.account) as venue:
            for round_ in range(1, SETTLE_ROUNDS + 1):
                activity.heartbeat(round_)
                with collector_paused():
                    diff = await self._one_round(venue, request, round_)
                if not any(f.kind in UNSETTLED for f in diff.findings):
                    break
        return diff

    async def _one_round(
        self, venue: VenueAdapter, request: ReconcileRequest, round_: int
    ) -> VenueDiff:
        # DR first, the venue after: whatever the venue did in between shows up in its fills,
        # which are applied to DR's view before comparing.
        book = await self._oms.fetch_dr_book(
            BookRequest(
                oms_url=request.dr_oms_url, fills_since=request.fills_since, venue=request.venue
            )
        )
        reported_orders, reported_fills = await asyncio.gather(
            venue.open_orders(), venue.fills_since(request.fills_since)
        )
        fills, malformed_fills = fills_from_reports(request.venue, reported_fills)
        fills, unknown_symbols = outside_universe(request.venue, fills, self._symbols(request))
        booked = {f.trade_id for f in book.fills}
        unique, fill_findings = check_fills(request.venue, fills, booked)
        unbooked = [f for f in unique if f.trade_id not in booked]
        dr_view = orders_after_fills(book.open_orders_at(request.venue), unbooked)
        findings = classify_orders(
            request.venue, reported_orders, dr_view, request.new_epoch, request.takeover_at
        )
        matched = [f for f in findings if f.kind is DiscrepancyKind.MATCHED]
        return VenueDiff(
            venue=request.venue,
            matched=len(matched),
            findings=[f for f in findings if f.kind is not DiscrepancyKind.MATCHED],
            fill_findings=[*malformed_fills, *unknown_symbols, *fill_findings],
            rounds=round_,
            attempt=activity.info().attempt,
        )

    def _symbols(self, request: ReconcileRequest) -> set[str]:
        if request.system is None:
            return set()
        return set(self._topology.system(request.system).symbols)

    @activity.defn(name="still_open")
    async def still_open(self, request: StillOpenRequest) -> StillOpen:
        """Which of these orders the venue still has open (the confirming re-query)."""
        async with venue_adapter(self._topology, request.venue, request.account) as venue:
            reported = await venue.open_orders()
        # A malformed report that names one of these ids still says the order is there.
        seen = [o.client_order_id for o in reported.orders] + [
            m.reference for m in reported.malformed
        ]
        open_ids = set(seen) & set(request.client_order_ids)
        return StillOpen(
            venue=request.venue,
            client_order_ids=sorted(open_ids),
            attempt=activity.info().attempt,
        )
