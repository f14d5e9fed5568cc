"""The trading book: orders, fills, positions, and the replicated events that build it.

The primary OMS publishes every change as a ``BookEvent`` on the replication stream; the DR OMS
applies the same events with the same pure function, so both sides hold the same book once DR
has applied the stream up to the primary's last sequence.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Quantity = Annotated[int, Field(gt=0)]
Price = Annotated[Decimal, Field(gt=0)]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderStatus(StrEnum):
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not OrderStatus.OPEN


def client_order_id_prefix(epoch: int) -> str:
    """Every order carries its epoch twice: as a field and as this client-order-id prefix.

    The prefix survives systems that keep only the client order id (drop copies, venue reports).
    """
    return f"E{epoch}-"


def epoch_of_client_order_id(client_order_id: str) -> int | None:
    """The epoch an ``E<epoch>-`` prefix names; None without one. Epochs start at 1, so
    ``E0-`` is no epoch of ours either."""
    head, sep, _ = client_order_id.partition("-")
    if not sep or not head.startswith("E") or not head[1:].isdigit():
        return None
    return int(head[1:]) or None


class Order(BaseModel):
    model_config = ConfigDict(frozen=True)

    client_order_id: str
    venue: str
    venue_order_id: str | None = None
    epoch: Annotated[int, Field(ge=1)]
    symbol: str
    side: Side
    qty: Quantity
    price: Price
    filled_qty: Annotated[int, Field(ge=0)] = 0
    status: OrderStatus = OrderStatus.OPEN
    created_at: datetime | None = None
    # Not every venue reports when an order last changed (the DR book always knows).
    updated_at: datetime | None = None

    @property
    def remaining_qty(self) -> int:
        return max(self.qty - self.filled_qty, 0)


class Fill(BaseModel):
    model_config = ConfigDict(frozen=True)

    trade_id: str
    venue: str
    venue_seq: Annotated[int, Field(ge=1)]
    client_order_id: str
    venue_order_id: str | None = None
    epoch: Annotated[int, Field(ge=1)]
    symbol: str
    side: Side
    qty: Quantity
    price: Price
    ts: datetime

    @property
    def signed_qty(self) -> int:
        return self.side.sign * self.qty

    @property
    def trade_key(self) -> tuple[str, str]:
        """A trade's identity: trade ids are unique only within their venue."""
        return (self.venue, self.trade_id)


class OrderEvent(BaseModel):
    """The full current state of one order (an upsert): new, acknowledged, cancelled."""

    kind: Literal["order"] = "order"
    order: Order


class FillEvent(BaseModel):
    kind: Literal["fill"] = "fill"
    fill: Fill


class PositionEvent(BaseModel):
    """The primary's own net position after a fill; DR checks it against its computed one."""

    kind: Literal["position"] = "position"
    symbol: str
    qty: int


BookEvent = Annotated[OrderEvent | FillEvent | PositionEvent, Field(discriminator="kind")]


class BookEnvelope(BaseModel):
    """One event as published on the stream. ``seq`` is the stream sequence once stored."""

    system: str
    epoch: int
    published_at: datetime
    event: BookEvent


class Watermark(BaseModel):
    """How far a book has applied the replication stream."""

    seq: Annotated[int, Field(ge=0)] = 0
    published_at: datetime | None = None


class Book(BaseModel):
    """Open orders by client order id, net positions by symbol, and the trade ids seen.

    Mutated only through ``apply``; ``snapshot`` gives the comparable view.
    """

    orders: dict[str, Order] = Field(default_factory=dict)
    positions: dict[str, int] = Field(default_factory=dict)
    # (venue, trade id): a venue numbers only its own trades, so two venues' ids can collide.
    trade_ids: set[tuple[str, str]] = Field(default_factory=set)
    # Highest fill sequence seen per venue: where fill polling and reconciliation resume.
    venue_fill_seq: dict[str, int] = Field(default_factory=dict)
    fills: list[Fill] = Field(default_factory=list)
    watermark: Watermark = Field(default_factory=Watermark)
    position_mismatches: int = 0

    def apply(self, event: OrderEvent | FillEvent | PositionEvent) -> None:
        match event:
            case OrderEvent(order=order):
                self._apply_order(order)
            case FillEvent(fill=fill):
                self._apply_fill(fill)
            case PositionEvent(symbol=symbol, qty=qty):
                if self.positions.get(symbol, 0) != qty:
                    self.position_mismatches += 1

    def apply_envelope(self, seq: int, envelope: BookEnvelope) -> bool:
        """Apply a stream message exactly once; a redelivered or older sequence is skipped."""
        if seq <= self.watermark.seq:
            return False
        self.apply(envelope.event)
        self.watermark = Watermark(seq=seq, published_at=envelope.published_at)
        return True

    def _apply_order(self, order: Order) -> None:
        known = self.orders.get(order.client_order_id)
        # A late, older report of an order must not undo fills already applied to it.
        if known is not None and known.filled_qty > order.filled_qty:
            order = order.model_copy(update={"filled_qty": known.filled_qty})
        if order.status.is_terminal or order.remaining_qty == 0:
            self.orders.pop(order.client_order_id, None)
        else:
            self.orders[order.client_order_id] = order

    def _apply_fill(self, fill: Fill) -> None:
        if fill.trade_key in self.trade_ids:
            return  # venues re-send fills; a trade counts once
        self.trade_ids.add(fill.trade_key)
        self.fills.append(fill)
        self.venue_fill_seq[fill.venue] = max(
            self.venue_fill_seq.get(fill.venue, 0), fill.venue_seq
        )
        self.positions[fill.symbol] = self.positions.get(fill.symbol, 0) + fill.signed_qty
        order = self.orders.get(fill.client_order_id)
        if order is None:
            return
        filled = min(order.filled_qty + fill.qty, order.qty)
        status = OrderStatus.FILLED if filled >= order.qty else order.status
        self._apply_order(
            order.model_copy(update={"filled_qty": filled, "status": status, "updated_at": fill.ts})
        )

    def snapshot(self, fills_since: datetime | None = None) -> BookSnapshot:
        """The comparable view; with ``fills_since``, also the fills booked at or after it."""
        return BookSnapshot(
            open_orders=sorted(self.orders.values(), key=lambda o: o.client_order_id),
            positions={s: q for s, q in sorted(self.positions.items()) if q != 0},
            watermark=self.watermark,
            venue_fill_seq=dict(self.venue_fill_seq),
            fills=[f for f in self.fills if f.ts >= fills_since] if fills_since else [],
        )


class BookSnapshot(BaseModel):
    """What `GET /book` returns: comparable between primary and DR.

    For the active side the watermark is the last *published* event, and ``unpublished_events``
    counts events already in its book but not yet on the stream.
    """

    open_orders: list[Order]
    positions: dict[str, int]
    watermark: Watermark
    unpublished_events: int = 0
    venue_fill_seq: dict[str, int] = Field(default_factory=dict)
    fills: list[Fill] = Field(default_factory=list)

    def open_orders_at(self, venue: str) -> list[Order]:
        return [o for o in self.open_orders if o.venue == venue]

    def same_book_as(self, other: BookSnapshot) -> bool:
        return self.open_orders == other.open_orders and self.positions == other.positions


def orders_after_fills(orders: list[Order], fills: list[Fill]) -> list[Order]:
    """``orders`` as they stand once ``fills`` are applied: the open ones, sorted by id.

    Reconciliation compares a DR book that may not have booked the venue's latest fills yet;
    applying those fills first leaves only real differences.
    """
    book = Book(orders={o.client_order_id: o for o in orders})
    for fill in fills:
        book.apply(FillEvent(fill=fill))
    return sorted(book.orders.values(), key=lambda o: o.client_order_id)
