"""The venue port: what the runbooks need from any venue, in the domain's vocabulary only.

Every venue dialect (the lab's REST API, a Binance-compatible REST API through ccxt, FIX 4.4)
is one adapter implementing ``VenueAdapter``. The runbooks never see a wire format: adapters turn
what a venue sends into typed reports and what it refuses into typed errors, and the activities
map those errors to Temporal's retry decisions.

Read the protocol like Patroni's ``AbstractDCS``, by what each call must guarantee:

Session (fresh per runbook step; runbook sessions are short):
    ``connect``  a fresh session for the account. A venue still cooling down after an unclean
                 disconnect raises ``ReconnectCooldown`` with the delay it asked for.
    ``close``    log out cleanly if a session is open, then release sockets. Always called, so
                 the next session (the DR OMS's) logs on without a cooldown. Best effort.
Idempotent reads (safe to repeat; an adapter that needs a session opens one itself):
    ``open_orders``   every open order of the account, all pages.
    ``fills_since``   every fill at or after the watermark, all pages.
Idempotent writes:
    ``cancel``   cancel by client order id; an id already closed or unknown is an outcome,
                 never an error, so a retried batch converges.
Capabilities an adapter may declare (``capabilities``): see ``VenueCapability``.

Reports that do not validate are returned as ``MalformedReport`` beside the good ones: a bad
report from a system we do not control is a finding for a person, never a crash and never a
silent drop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal, NewType, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.book import OrderStatus, Side, epoch_of_client_order_id

ClientOrderId = NewType("ClientOrderId", str)
UNKNOWN_REFERENCE = "<unknown>"
VenueOrderId = NewType("VenueOrderId", str)


class VenueCapability(StrEnum):
    # The venue refuses orders whose epoch is older than one it has seen (a desk-owned order
    # gateway): fencing layer 3 holds at the venue itself. Public venues do not know epochs.
    EPOCH_REFUSAL = "epoch_refusal"
    # One request reports every open order (FIX OrderMassStatusRequest).
    MASS_STATUS = "mass_status"
    # One request cancels every open order of the account (FIX OrderMassCancelRequest).
    MASS_CANCEL = "mass_cancel"
    # The venue cancels a session's orders when it disconnects (a kill switch).
    CANCEL_ON_DISCONNECT = "cancel_on_disconnect"


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True)


class OrderReport(_Report):
    """An order as the venue reports it. ``epoch`` is the venue's own epoch field when it has
    one (a desk-owned gateway); public venues leave it None and the epoch is read from the
    client-order-id prefix (``epoch_from_prefix``)."""

    venue: str
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId | None = None
    symbol: str
    side: Side
    qty: Annotated[int, Field(gt=0)]
    price: Annotated[Decimal, Field(gt=0)]
    filled_qty: Annotated[int, Field(ge=0)] = 0
    status: OrderStatus = OrderStatus.OPEN
    epoch: Annotated[int, Field(ge=1)] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def epoch_from_prefix(self) -> int | None:
        return epoch_of_client_order_id(self.client_order_id)


class FillReport(_Report):
    """A fill (trade) as the venue reports it, mapped to our client order id by the adapter
    (venues such as Binance report trades by venue order id only)."""

    venue: str
    trade_id: str
    # The venue's own ordering of fills where it has one; adapters that have none number the
    # fills they return in the venue's time order, starting at 1.
    venue_seq: Annotated[int, Field(ge=1)]
    client_order_id: ClientOrderId
    venue_order_id: VenueOrderId | None = None
    symbol: str
    side: Side
    qty: Annotated[int, Field(gt=0)]
    price: Annotated[Decimal, Field(gt=0)]
    ts: datetime
    epoch: Annotated[int, Field(ge=1)] | None = None

    @property
    def epoch_from_prefix(self) -> int | None:
        return epoch_of_client_order_id(self.client_order_id)


class MalformedReport(_Report):
    """A report that did not validate. ``reference`` is the client order id (orders) or trade
    id (fills) when the report carried a readable one, else ``<unknown>``; ``detail`` names
    the field and what is wrong with it."""

    venue: str
    kind: Literal["order", "fill"]
    reference: str = UNKNOWN_REFERENCE
    symbol: str = UNKNOWN_REFERENCE
    detail: str

    @classmethod
    def from_error(
        cls, venue: str, kind: Literal["order", "fill"], raw: object, error: ValidationError
    ) -> MalformedReport:
        """The report ``raw`` (as the adapter decoded it) that failed validation with ``error``:
        every problem as ``field: message``, and whatever id and symbol it did carry."""
        reference_field = "client_order_id" if kind == "order" else "trade_id"
        return cls(
            venue=venue,
            kind=kind,
            reference=_reported_text(raw, reference_field),
            symbol=_reported_text(raw, "symbol"),
            detail=describe_validation_error(error),
        )


def describe_validation_error(error: ValidationError) -> str:
    """Each problem as ``field: message``, so a finding names what the venue got wrong."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'report'}: {problem['msg']}"
        for problem in error.errors()
    )


def _reported_text(raw: object, key: str) -> str:
    value = raw.get(key) if isinstance(raw, Mapping) else None
    if isinstance(value, str | int) and str(value):
        return str(value)
    return UNKNOWN_REFERENCE


class OrderReports(_Report):
    orders: list[OrderReport]
    malformed: list[MalformedReport] = Field(default_factory=list)


class FillReports(_Report):
    fills: list[FillReport]
    malformed: list[MalformedReport] = Field(default_factory=list)


CancelResult = Literal["cancelled", "already_filled", "already_cancelled", "unknown"]


class SessionInfo(_Report):
    venue: str
    session_id: str


# --- errors the activities map to retry decisions ----------------------------------------------


class VenueError(RuntimeError):
    """Base of every venue failure; ``str()`` names the venue and says what happened."""

    def __init__(self, venue: str, message: str) -> None:
        super().__init__(f"venue {venue}: {message}")
        self.venue = venue


class VenueUnavailable(VenueError):
    """The venue did not answer, answered 5xx, or dropped the connection: retry with backoff."""


class RateLimited(VenueError):
    """The venue asked us to wait (HTTP 429 / 418 with Retry-After, or its FIX equivalent):
    ask again after exactly ``retry_after_s``, not sooner."""

    def __init__(self, venue: str, message: str, retry_after_s: float) -> None:
        super().__init__(venue, message)
        self.retry_after_s = max(retry_after_s, 0.0)


class ReconnectCooldown(RateLimited):
    """The venue refuses a new session until its reconnect cooldown has passed."""

    def __init__(self, venue: str, retry_after_s: float) -> None:
        super().__init__(
            venue, f"reconnect cooldown, retry after {retry_after_s:.2f} s", retry_after_s
        )


class AuthRejected(VenueError):
    """The venue refused our credentials. Retrying cannot fix it: a person must."""


class VenueConfigError(VenueError):
    """The venue's configuration on this worker is unusable (a credential variable unset, an
    unknown exchange id). Retrying cannot fix it."""


class StaleEpoch(VenueError):
    """The venue has seen a newer epoch: this sender is fenced (venues with EPOCH_REFUSAL)."""

    def __init__(self, venue: str, epoch: int, highest: int) -> None:
        super().__init__(venue, f"order epoch {epoch} is stale (venue has seen {highest})")
        self.epoch = epoch
        self.highest = highest


# --- the port --------------------------------------------------------------------------------


class VenueAdapter(Protocol):
    """One venue, one account, for the length of one runbook step. Not shared between tasks."""

    @property
    def venue(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[VenueCapability]: ...

    async def connect(self) -> SessionInfo: ...

    async def open_orders(self) -> OrderReports: ...

    async def fills_since(self, watermark: datetime) -> FillReports: ...

    async def cancel(
        self, client_order_ids: Sequence[ClientOrderId]
    ) -> dict[ClientOrderId, CancelResult]: ...

    async def close(self) -> None: ...
