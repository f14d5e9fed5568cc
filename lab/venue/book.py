"""The venue's orders and fills, and the rules for resting, filling and cancelling them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from domain.book import epoch_of_client_order_id
from lab.venue.models import (
    CancelAudit,
    CancelCount,
    CancelResult,
    Counters,
    ErrorBody,
    Fill,
    FillsPage,
    FillTooLarge,
    Order,
    OrderTicket,
    OrderTicketWithoutEpoch,
    StaleEpochError,
)
from lab.venue.rejections import VenueRejection


def utc_now() -> datetime:
    return datetime.now(UTC)


class OrderBook:
    def __init__(self, venue_name: str, counters: Counters) -> None:
        self._venue = venue_name
        self._counters = counters
        self._orders: dict[str, Order] = {}
        self._by_client_id: dict[str, Order] = {}
        # Fill seq n sits at index n - 1, which makes paging by seq a slice.
        self._fills: list[Fill] = []
        self._not_auto_filled: set[str] = set()
        # Per order (by venue order id): cancels asked for and cancels that changed its state.
        self._cancel_counts: dict[str, CancelCount] = {}

    def enter(self, ticket: OrderTicket) -> Order:
        """Accept an order a member sent on its session, unless its epoch is stale.

        The epoch check is the venue-side fence of a failover: once the new primary has sent
        an order under epoch N, nothing from an older epoch gets in again.
        """
        prefix = f"E{ticket.epoch}-"
        if not ticket.client_order_id.startswith(prefix):
            raise VenueRejection(
                400,
                ErrorBody(
                    error=f"client_order_id {ticket.client_order_id!r} must start with "
                    f"{prefix!r} for epoch {ticket.epoch}"
                ),
            )
        highest = self._counters.highest_epoch
        if ticket.epoch < highest:
            self._counters.stale_epoch_rejections += 1
            raise VenueRejection(
                409, StaleEpochError(error="stale epoch", epoch=ticket.epoch, highest_epoch=highest)
            )
        order = self.rest(ticket)
        self._counters.highest_epoch = max(highest, ticket.epoch)
        self._counters.orders_accepted += 1
        return order

    def rest(self, ticket: OrderTicket) -> Order:
        """Put an order on the book with no session or epoch check (admin injection uses this
        alone: it models an order the old primary got in just before it died)."""
        return self._rest(ticket, ticket.epoch)

    def enter_without_epoch(self, ticket: OrderTicketWithoutEpoch) -> Order:
        """Accept an order from a dialect that knows no epochs (the Binance face, FIX), as a
        public venue does: no epoch check, so no venue-side fence. The order's epoch is read
        from its client order id's ``E<n>-`` prefix when it has one, else left unknown."""
        order = self._rest(ticket, epoch_of_client_order_id(ticket.client_order_id))
        self._counters.orders_accepted += 1
        return order

    def _rest(self, ticket: OrderTicketWithoutEpoch, epoch: int | None) -> Order:
        if ticket.client_order_id in self._by_client_id:
            raise VenueRejection(409, ErrorBody(error="duplicate client_order_id"))
        now = utc_now()
        order = Order(
            venue_order_id=f"{self._venue}-O{len(self._orders) + 1:08d}",
            client_order_id=ticket.client_order_id,
            epoch=epoch,
            symbol=ticket.symbol,
            side=ticket.side,
            qty=ticket.qty,
            price=ticket.price,
            created_at=now,
            updated_at=now,
        )
        self._orders[order.venue_order_id] = order
        self._by_client_id[order.client_order_id] = order
        return order

    def order(self, venue_order_id: str | None = None, client_order_id: str | None = None) -> Order:
        if venue_order_id is not None:
            order = self._orders.get(venue_order_id)
        else:
            order = self._by_client_id.get(client_order_id or "")
        if order is None:
            wanted = venue_order_id or client_order_id
            raise VenueRejection(404, ErrorBody(error=f"no order {wanted!r} at {self._venue}"))
        return order

    def hold_from_matching(self, order: Order) -> None:
        self._not_auto_filled.add(order.venue_order_id)

    def all_orders(self, symbol: str | None = None) -> list[Order]:
        """Every order ever accepted, oldest first, whatever became of it."""
        return [o for o in self._orders.values() if symbol is None or o.symbol == symbol]

    def orders_of_epoch(self, epoch: int) -> list[Order]:
        """Every order ever accepted with this epoch, whatever became of it."""
        return [o for o in self._orders.values() if o.epoch == epoch]

    def matchable_orders(self) -> list[Order]:
        return [o for o in self.open_orders() if o.venue_order_id not in self._not_auto_filled]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [
            order
            for order in self._orders.values()
            if order.status == "open" and (symbol is None or order.symbol == symbol)
        ]

    def fill(self, order: Order, qty: int, price: Decimal | None = None) -> Fill:
        if order.status != "open":
            raise VenueRejection(
                409,
                ErrorBody(error=f"order {order.venue_order_id} is {order.status}; not fillable"),
            )
        if qty > order.remaining_qty:
            raise VenueRejection(
                409,
                FillTooLarge(
                    error=f"fill of {qty} exceeds the {order.remaining_qty} left on "
                    f"{order.venue_order_id}",
                    remaining_qty=order.remaining_qty,
                ),
            )
        now = utc_now()
        seq = len(self._fills) + 1
        fill = Fill(
            # Numeric, as real venues number their trades: the Binance face pages by it
            # (fromId), and every face reports the same id for the same trade.
            trade_id=str(seq),
            seq=seq,
            venue_order_id=order.venue_order_id,
            client_order_id=order.client_order_id,
            epoch=order.epoch,
            symbol=order.symbol,
            side=order.side,
            qty=qty,
            price=order.price if price is None else price,
            ts=now,
        )
        self._fills.append(fill)
        order.filled_qty += qty
        order.updated_at = now
        if order.remaining_qty == 0:
            order.status = "filled"
        self._counters.fills += 1
        return fill

    def cancel(
        self, ids: Iterable[str], by: Literal["venue_order_id", "client_order_id"]
    ) -> list[CancelResult]:
        """Cancel each order named; cancelling one that is already done is an answer, not an
        error, so a cancel-all can be retried blindly after a timeout."""
        index = self._orders if by == "venue_order_id" else self._by_client_id
        results = []
        for order_id in ids:
            order = index.get(order_id)
            count = (
                self._cancel_counts.setdefault(order.venue_order_id, CancelCount())
                if order is not None
                else CancelCount()
            )
            count.requests += 1
            if order is None:
                results.append(CancelResult(id=order_id, outcome="unknown"))
            elif order.status == "filled":
                results.append(CancelResult(id=order_id, outcome="already_filled"))
            elif order.status == "cancelled":
                results.append(CancelResult(id=order_id, outcome="already_cancelled"))
            else:
                order.status = "cancelled"
                order.updated_at = utc_now()
                self._counters.state_changing_cancels += 1
                count.state_changing += 1
                results.append(CancelResult(id=order_id, outcome="cancelled"))
        return results

    def cancel_audit(self, client_order_ids: Iterable[str]) -> CancelAudit:
        counts = {}
        for client_order_id in client_order_ids:
            order = self._by_client_id.get(client_order_id)
            count = self._cancel_counts.get(order.venue_order_id) if order else None
            counts[client_order_id] = count.model_copy() if count else CancelCount()
        return CancelAudit(orders=counts)

    def fills_page(self, after_seq: int, since_time: datetime | None, limit: int) -> FillsPage:
        """Up to ``limit`` fills with seq > ``after_seq`` and ts >= ``since_time``, by seq.

        The cursor is the last seq returned. Fills only ever append with higher seqs, so
        resuming after it yields each matching fill exactly once, even while fills arrive.
        """
        page: list[Fill] = []
        more = False
        for fill in self._fills[after_seq:]:
            if since_time is not None and fill.ts < since_time:
                continue
            if len(page) == limit:
                more = True
                break
            page.append(fill)
        return FillsPage(fills=page, next_cursor=str(page[-1].seq) if more else None)
