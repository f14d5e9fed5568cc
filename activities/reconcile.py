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
from temporalio.exceptions import ApplicationError

from activities.oms import BookRequest, OmsActivities
from activities.venue_client import VenueClient, VenueError
from activities.venues import venue_failure
from domain.book import orders_after_fills
from domain.reconciliation import (
    DiscrepancyKind,
    FillFinding,
    OrderFinding,
    check_fills,
    classify_orders,
    outside_universe,
    parse_venue_fills,
    parse_venue_orders,
)
from domain.topology import Topology

# A venue that keeps filling while we look can make one round disagree with itself; a few
# rounds tell a race from a real difference.
SETTLE_ROUNDS = 3
UNSETTLED = (DiscrepancyKind.DRIFT, DiscrepancyKind.MISSING_AT_VENUE)


class ReconcileRequest(BaseModel):
    venue: str
    member: str
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
        kinds = (DiscrepancyKind.GHOST, DiscrepancyKind.OLD_EPOCH)
        return sorted(f.client_order_id for f in self.findings if f.kind in kinds)


class StillOpenRequest(BaseModel):
    venue: str
    member: str
    client_order_ids: list[str]


class StillOpen(BaseModel):
    venue: str
    client_order_ids: list[str]
    attempt: int = 1


class ReconcileActivities:
    def __init__(self, topology: Topology, oms: OmsActivities) -> None:
        self._topology = topology
        self._oms = oms

    def _client(self, venue: str, member: str) -> VenueClient:
        try:
            return VenueClient(self._topology.venue(venue), member=member)
        except (KeyError, VenueError) as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None

    @activity.defn(name="reconcile_venue")
    async def reconcile_venue(self, request: ReconcileRequest) -> VenueDiff:
        """Classify every open order at the venue and in the DR book, and check the fills."""
        client = self._client(request.venue, request.member)
        try:
            for round_ in range(1, SETTLE_ROUNDS + 1):
                activity.heartbeat(round_)
                diff = await self._one_round(client, request, round_)
                if not any(f.kind in UNSETTLED for f in diff.findings):
                    break
            return diff
        except VenueError as exc:
            raise venue_failure(exc) from None
        finally:
            await client.close()

    async def _one_round(
        self, client: VenueClient, request: ReconcileRequest, round_: int
    ) -> VenueDiff:
        # DR first, the venue after: whatever the venue did in between shows up in its fills,
        # which are applied to DR's view before comparing.
        book = await self._oms.fetch_dr_book(
            BookRequest(
                oms_url=request.dr_oms_url, fills_since=request.fills_since, venue=request.venue
            )
        )
        raw_orders, raw_fills = await asyncio.gather(
            client.open_orders_raw(), client.fills_raw(since_time=request.fills_since)
        )
        orders, malformed_orders = parse_venue_orders(request.venue, raw_orders)
        fills, malformed_fills = parse_venue_fills(request.venue, raw_fills)
        fills, unknown_symbols = outside_universe(request.venue, fills, self._symbols(request))
        booked = {f.trade_id for f in book.fills}
        unique, fill_findings = check_fills(request.venue, fills, booked)
        unbooked = [f for f in unique if f.trade_id not in booked]
        dr_view = orders_after_fills(book.open_orders_at(request.venue), unbooked)
        findings = [
            *classify_orders(
                request.venue, orders, dr_view, request.new_epoch, request.takeover_at
            ),
            *malformed_orders,
        ]
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
        client = self._client(request.venue, request.member)
        try:
            raw = await client.open_orders_raw()
        except VenueError as exc:
            raise venue_failure(exc) from None
        finally:
            await client.close()
        wanted = set(request.client_order_ids)
        open_ids = {str(o.get("client_order_id")) for o in raw} & wanted
        return StillOpen(
            venue=request.venue,
            client_order_ids=sorted(open_ids),
            attempt=activity.info().attempt,
        )
