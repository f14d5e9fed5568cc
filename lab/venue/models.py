"""The venue's wire vocabulary: every request and response body, errors included.

Prices are Decimal and travel as JSON strings, so no price is ever rounded through a float.
Quantities are positive ints. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

Side = Literal["buy", "sell"]
OrderStatus = Literal["open", "filled", "cancelled"]
CancelOutcome = Literal["cancelled", "already_cancelled", "already_filled", "unknown"]
Price = Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
Qty = Annotated[int, Field(gt=0)]
Seq = Annotated[int, Field(ge=1)]
Epoch = Annotated[int, Field(ge=1)]
Text = Annotated[str, Field(min_length=1, max_length=200)]
MAX_IDS_PER_CANCEL = 5000


class Request(BaseModel):
    # A misspelt field is refused rather than ignored: ignoring "client_order_id" typed as
    # "client_orderid" would send an order the client believes carries another id.
    model_config = ConfigDict(extra="forbid")


class Health(BaseModel):
    venue: str
    status: Literal["ok"] = "ok"
    time: AwareDatetime


class ConnectRequest(Request):
    member: Text


class SessionOpened(BaseModel):
    session_id: str
    member: str
    next_seq: int


class SessionRef(Request):
    session_id: Text


class LoggedOut(BaseModel):
    session_id: str
    status: Literal["logged_out"] = "logged_out"


class Heartbeat(BaseModel):
    session_id: str
    next_seq: int


class OrderTicketWithoutEpoch(Request):
    """An order from a dialect that knows no epochs (the Binance face, FIX)."""

    client_order_id: Text
    symbol: Text
    side: Side
    qty: Qty
    price: Price


class OrderTicket(OrderTicketWithoutEpoch):
    """An order as the venue is asked to rest it; what admin injection takes directly."""

    epoch: Epoch


class InjectedOrder(OrderTicket):
    """An order put straight on the book by the lab (a ghost, a drop-copy gap...)."""

    # False keeps the random matcher off it, so a scenario's ghost is still open when checked.
    auto_fill: bool = True


class OrderRequest(OrderTicket):
    """An order sent by a member on its session, under the session's next sequence number."""

    session_id: Text
    seq: Seq


class Order(BaseModel):
    venue_order_id: str
    client_order_id: str
    # None: an order entered through a dialect without epochs whose client order id carries
    # no ``E<n>-`` prefix (the venue cannot know which epoch sent it).
    epoch: int | None
    symbol: str
    side: Side
    qty: int
    price: Decimal
    filled_qty: int = 0
    status: OrderStatus = "open"
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @property
    def remaining_qty(self) -> int:
        return self.qty - self.filled_qty


class Fill(BaseModel):
    trade_id: str
    # Venue-wide and strictly increasing from 1: the resume point for anyone reading fills.
    seq: int
    venue_order_id: str
    client_order_id: str
    epoch: int | None  # the order's epoch, as on Order
    symbol: str
    side: Side
    qty: int
    price: Decimal
    ts: AwareDatetime


class OpenOrders(BaseModel):
    orders: list[Order]


class FillsPage(BaseModel):
    fills: list[Fill]
    # None when nothing more matched at the time of the query; poll again with since_seq.
    next_cursor: str | None


OrderIds = Annotated[list[Text], Field(min_length=1, max_length=MAX_IDS_PER_CANCEL)]


class CancelRequest(Request):
    venue_order_ids: OrderIds | None = None
    client_order_ids: OrderIds | None = None

    @model_validator(mode="after")
    def _exactly_one_id_kind(self) -> Self:
        if (self.venue_order_ids is None) == (self.client_order_ids is None):
            raise ValueError("send exactly one of venue_order_ids or client_order_ids")
        return self


class CancelResult(BaseModel):
    id: str
    outcome: CancelOutcome


class CancelReply(BaseModel):
    results: list[CancelResult]


class CancelCount(BaseModel):
    # Requests that named the order, and the ones that changed its state (at most one).
    requests: int = 0
    state_changing: int = 0


class CancelAudit(BaseModel):
    """Per client order id: how often it was asked to be cancelled, and actually cancelled."""

    orders: dict[str, CancelCount]


class AdminFillRequest(Request):
    client_order_id: Text | None = None
    venue_order_id: Text | None = None
    qty: Qty
    # Defaults to the order's limit price, as an automatic fill would be.
    price: Price | None = None

    @model_validator(mode="after")
    def _exactly_one_id(self) -> Self:
        if (self.venue_order_id is None) == (self.client_order_id is None):
            raise ValueError("send exactly one of venue_order_id or client_order_id")
        return self


class Counters(BaseModel):
    """What the venue saw; drills assert on these (e.g. no stale-epoch order got through)."""

    connect_attempts: int = 0
    connects_refused_cooldown: int = 0
    orders_accepted: int = 0
    stale_epoch_rejections: int = 0
    state_changing_cancels: int = 0
    cancel_requests: int = 0
    fills: int = 0
    highest_epoch: int = 0


class ErrorBody(BaseModel):
    """Every error: one line a person can act on, plus the facts needed to act on it."""

    error: str


class CooldownError(ErrorBody):
    retry_after_s: float


class SequenceError(ErrorBody):
    expected_seq: int


class StaleEpochError(ErrorBody):
    epoch: int
    highest_epoch: int


class FillTooLarge(ErrorBody):
    remaining_qty: int


class ValidationFailed(ErrorBody):
    # FastAPI's own error list, kept as is: it names each offending field.
    detail: list[dict[str, object]]
