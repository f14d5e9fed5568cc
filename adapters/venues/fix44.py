"""The ``fix44`` venue adapter: one FIX 4.4 order-entry session per runbook step.

What it asks of a venue's rules of engagement (docs/ADAPTERS.md says the same for operators):
- Logon with ResetSeqNumFlag(141)=Y (sessions start at 1), Password(554) when the venue wants
  one; during a reconnect cooldown the venue answers Logon with a Logout whose Text says
  ``retry after N s`` (the adapter raises ``ReconnectCooldown(N)``).
- Open orders: OrderMassStatusRequest (AF, MassStatusReqType 585=7 "all orders") answered by
  ExecutionReports with ExecType(150)=I, MassStatusReqID(584), TotNumReports(911) and
  LastRptRequested(912)=Y on the last. With no open orders the venue sends one report with
  TotNumReports(911)=0 and 912=Y (and OrdStatus/Text describing "no orders"); that report
  carries no order.
- Fills since a watermark: TradeCaptureReportRequest (AD, TradeRequestType 569=0 "all trades",
  SubscriptionRequestType 263=0 snapshot, one NoDates(580) entry with TransactTime(60) = the
  watermark). The venue acknowledges with TradeCaptureReportRequestAck (AQ) carrying
  TotNumTradeReports(748), then sends that many TradeCaptureReports (AE), 912=Y on the last.
  This is FIX 4.4's standard trade query; the alternative (mass status CumQty plus an execution
  replay) is not standard, and short sessions receive no replay of earlier ExecType=F reports.
- Cancels: OrderCancelRequest (F) per order. ExecutionReport ExecType(150)=4 is "cancelled";
  OrderCancelReject (9) with CxlRejReason(102)=1 is "unknown", 102=0 "too late" is
  "already_cancelled" when its OrdStatus(39) is 4 and "already_filled" otherwise.
- Mass cancel (when declared): OrderMassCancelRequest (q, 530=7) -> OrderMassCancelReport (r)
  with TotalAffectedOrders(533).

A report missing a required tag, or with a value that does not parse, becomes a
``MalformedReport`` naming the tag, beside the good reports.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar, cast

from pydantic import ValidationError

from adapters.venues import DEFAULT_USER_AGENT
from adapters.venues.fix_session import (
    RETRY_AFTER,
    FixMessage,
    FixSession,
    MissingTag,
    MsgType,
    parse_utc_timestamp,
    tag_label,
    utc_timestamp,
)
from domain.book import OrderStatus, Side
from domain.topology import Fix44VenueConfig
from domain.venues import (
    CancelResult,
    ClientOrderId,
    FillReport,
    FillReports,
    MalformedReport,
    OrderReport,
    OrderReports,
    RateLimited,
    SessionInfo,
    VenueCapability,
    VenueConfigError,
    VenueOrderId,
    VenueUnavailable,
)

_SIDES: Final = {"1": Side.BUY, "2": Side.SELL}
# OrdStatus(39) -> our status. 0 New, 1 Partially filled, 2 Filled, 4 Canceled, 8 Rejected,
# C Expired; a partly filled order is still open.
_ORD_STATUS: Final = {
    "0": OrderStatus.OPEN,
    "1": OrderStatus.OPEN,
    "2": OrderStatus.FILLED,
    "4": OrderStatus.CANCELLED,
    "8": OrderStatus.CANCELLED,
    "C": OrderStatus.CANCELLED,
}
_CXL_TOO_LATE: Final = "0"
_CXL_UNKNOWN_ORDER: Final = "1"


_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _one_exchange_at_a_time(method: _Method) -> _Method:
    @functools.wraps(method)
    async def queued(self: Fix44Adapter, *args: Any, **kwargs: Any) -> Any:
        async with self._exchange:
            return await method(self, *args, **kwargs)

    return cast(_Method, queued)


class Fix44Adapter:
    """One venue and account over FIX 4.4 for one runbook step. Logs on lazily; ``close``
    always logs out cleanly."""

    def __init__(self, config: Fix44VenueConfig, *, user_agent: str = DEFAULT_USER_AGENT) -> None:
        self._config = config
        self._user_agent = user_agent
        self._password: str | None = None
        if config.password_env is not None:
            password = os.environ.get(config.password_env)
            if not password:
                raise VenueConfigError(
                    config.name,
                    f"environment variable {config.password_env} (the FIX Password) is unset "
                    "or empty on this worker",
                )
            self._password = password
        self._capabilities = self.declared_capabilities(config)
        self._session: FixSession | None = None
        self._session_id = ""
        # One exchange at a time on the one session: answers are read off a single inbound
        # stream, and a second lazy logon would replace the first (the venue allows one
        # session per CompID), so callers that gather reads are queued here instead.
        self._exchange = asyncio.Lock()

    @staticmethod
    def declared_capabilities(config: Fix44VenueConfig) -> frozenset[VenueCapability]:
        """What the venue's rules of engagement offer, as its config says (read without
        connecting: the promotion plan records it)."""
        caps = set()
        if config.mass_status:
            caps.add(VenueCapability.MASS_STATUS)
        if config.mass_cancel:
            caps.add(VenueCapability.MASS_CANCEL)
        return frozenset(caps)

    @property
    def venue(self) -> str:
        return self._config.name

    @property
    def capabilities(self) -> frozenset[VenueCapability]:
        return self._capabilities

    # --- session ---------------------------------------------------------------------------

    @_one_exchange_at_a_time
    async def connect(self) -> SessionInfo:
        session = await self._logged_on()
        del session
        return SessionInfo(venue=self.venue, session_id=self._session_id)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.logout()

    async def _logged_on(self) -> FixSession:
        if self._session is not None:
            return self._session
        cfg = self._config
        session = FixSession(
            venue=cfg.name,
            host=cfg.host,
            port=cfg.port,
            sender_comp_id=cfg.sender_comp_id,
            target_comp_id=cfg.target_comp_id,
            password=self._password,
            heartbeat_s=cfg.heartbeat_s,
            timeout_s=cfg.timeout_s,
            sender_sub_id=self._user_agent,
        )
        await session.logon()
        self._session = session
        # FIX has no session id; this names the session in reports and logs.
        self._session_id = f"{cfg.sender_comp_id}->{cfg.target_comp_id}/{uuid.uuid4().hex[:12]}"
        return session

    async def _broken(self) -> None:
        """Forget a session that failed mid-step (a gap, a drop): the retry opens a fresh one."""
        session, self._session = self._session, None
        if session is not None:
            await session.logout()

    # --- reads -----------------------------------------------------------------------------

    @_one_exchange_at_a_time
    async def open_orders(self) -> OrderReports:
        if not self._config.mass_status:
            raise VenueConfigError(
                self.venue,
                "open orders need OrderMassStatusRequest (AF), and this venue is configured "
                "with mass_status = false; FIX offers no other way to list unknown orders",
            )
        reports = await self._mass_status()
        orders: list[OrderReport] = []
        malformed: list[MalformedReport] = []
        for report in reports:
            parsed = self._order_report(report)
            if isinstance(parsed, MalformedReport):
                malformed.append(parsed)
            elif parsed.status is OrderStatus.OPEN:
                orders.append(parsed)
        return OrderReports(orders=orders, malformed=malformed)

    @_one_exchange_at_a_time
    async def fills_since(self, watermark: datetime) -> FillReports:
        session = await self._logged_on()
        request_id = uuid.uuid4().hex
        session.send(
            MsgType.TRADE_CAPTURE_REPORT_REQUEST,
            [
                (568, request_id),
                (569, 0),  # all trades
                (263, 0),  # snapshot
                (580, 1),
                (60, utc_timestamp(watermark)),
            ],
        )
        try:
            ack = await self._next_for(session, 568, request_id)
            if ack.msg_type != MsgType.TRADE_CAPTURE_REPORT_REQUEST_ACK:
                raise VenueUnavailable(
                    self.venue, f"expected a TradeCaptureReportRequestAck, got {ack.msg_type}"
                )
            if ack.get(749) not in (None, "0"):
                raise VenueUnavailable(
                    self.venue,
                    f"trade capture request refused (TradeRequestResult {ack.get(749)}): "
                    f"{ack.get(58) or 'no reason given'}",
                )
            total = _count(ack, 748, self.venue)
            trades: list[FixMessage] = []
            while len(trades) < total:
                message = await self._next_for(session, 568, request_id)
                if message.msg_type == MsgType.TRADE_CAPTURE_REPORT:
                    trades.append(message)
        except VenueUnavailable:
            await self._broken()
            raise
        fills: list[FillReport] = []
        malformed: list[MalformedReport] = []
        for trade in trades:
            parsed = self._fill_report(trade, venue_seq=len(fills) + 1)
            if isinstance(parsed, MalformedReport):
                malformed.append(parsed)
            else:
                fills.append(parsed)
        return FillReports(fills=fills, malformed=malformed)

    # --- writes ------------------------------------------------------------------------------

    @_one_exchange_at_a_time
    async def cancel(
        self, client_order_ids: Sequence[ClientOrderId]
    ) -> dict[ClientOrderId, CancelResult]:
        """OrderCancelRequest (F) per id, all sent before any answer is read. FIX 4.4 wants
        Symbol and Side on F: they come from a mass status taken first when the venue offers
        one (ids not open there are sent without them; the venue answers those with a reject)."""
        wanted = list(dict.fromkeys(client_order_ids))
        if not wanted:
            return {}
        known: dict[str, tuple[str, str]] = {}
        if self._config.mass_status:
            for report in await self._mass_status():
                clordid, symbol, side = report.get(11), report.get(55), report.get(54)
                if clordid and symbol and side:
                    known[clordid] = (symbol, side)
        session = await self._logged_on()
        pending: dict[str, ClientOrderId] = {}
        try:
            for client_order_id in wanted:
                request_id = f"X{uuid.uuid4().hex}"
                symbol, side = known.get(client_order_id, (None, None))
                session.send(
                    MsgType.ORDER_CANCEL_REQUEST,
                    [
                        (11, request_id),
                        (41, client_order_id),
                        (55, symbol),
                        (54, side),
                        (60, utc_timestamp()),
                    ],
                )
                pending[request_id] = client_order_id
            results: dict[ClientOrderId, CancelResult] = {}
            while pending:
                message = await session.receive()
                if message.msg_type in (MsgType.REJECT, MsgType.BUSINESS_MESSAGE_REJECT):
                    raise self._rejection(message)
                request_id = message.get(11) or ""
                if request_id not in pending:
                    continue  # an unsolicited report (a fill on another order): not ours
                results[pending.pop(request_id)] = self._cancel_outcome(message)
        except VenueUnavailable:
            await self._broken()
            raise
        return {cid: results[cid] for cid in wanted}

    @_one_exchange_at_a_time
    async def mass_cancel(self) -> int:
        """Cancel every open order of the account in one OrderMassCancelRequest (q); returns
        TotalAffectedOrders. Only for venues that declare mass cancel."""
        if not self._config.mass_cancel:
            raise VenueConfigError(self.venue, "mass cancel is not declared for this venue")
        session = await self._logged_on()
        request_id = f"M{uuid.uuid4().hex}"
        session.send(
            MsgType.ORDER_MASS_CANCEL_REQUEST,
            [(11, request_id), (530, 7), (60, utc_timestamp())],
        )
        try:
            report = await self._next_for(session, 11, request_id)
            if report.msg_type != MsgType.ORDER_MASS_CANCEL_REPORT:
                raise VenueUnavailable(
                    self.venue, f"expected an OrderMassCancelReport, got {report.msg_type}"
                )
            if report.get(531) == "0":
                raise VenueUnavailable(
                    self.venue, f"mass cancel rejected: {report.get(58) or 'no reason given'}"
                )
            return _count(report, 533, self.venue)
        except VenueUnavailable:
            await self._broken()
            raise

    # --- internals ---------------------------------------------------------------------------

    async def _mass_status(self) -> list[FixMessage]:
        """Every ExecutionReport answering one OrderMassStatusRequest (all orders). The reports
        are complete only when the last says 912=Y and their number matches 911; a connection
        dropped before that is ``VenueUnavailable`` (the step retries on a fresh session)."""
        session = await self._logged_on()
        request_id = uuid.uuid4().hex
        session.send(MsgType.ORDER_MASS_STATUS_REQUEST, [(584, request_id), (585, 7)])
        reports: list[FixMessage] = []
        try:
            while True:
                message = await self._next_for(session, 584, request_id)
                total = _count(message, 911, self.venue)
                if total == 0:
                    return []  # the one "no orders" report carries no order
                reports.append(message)
                if message.get(912) == "Y":
                    break
            if len(reports) != total:
                raise VenueUnavailable(
                    self.venue,
                    f"mass status ended after {len(reports)} of {total} reports "
                    "(TotNumReports(911)); ask again",
                )
        except VenueUnavailable:
            await self._broken()
            raise
        return reports

    async def _next_for(self, session: FixSession, tag: int, request_id: str) -> FixMessage:
        """The next message answering ``request_id`` (in ``tag``); session-level rejects of our
        request are failures, other traffic is skipped."""
        while True:
            message = await session.receive()
            if message.get(tag) == request_id:
                return message
            if message.msg_type in (MsgType.REJECT, MsgType.BUSINESS_MESSAGE_REJECT):
                raise self._rejection(message)

    def _rejection(self, message: FixMessage) -> RateLimited | VenueUnavailable:
        """A Reject (3) or BusinessMessageReject (j) of our request. FIX 4.4 has no standard
        throttle message; venues say it in Text, and a ``retry after N s`` there is honoured
        exactly, as HTTP's Retry-After is."""
        text = message.get(58) or "no reason given"
        if match := RETRY_AFTER.search(text):
            return RateLimited(self.venue, f"throttled: {text}", float(match.group(1)))
        return VenueUnavailable(
            self.venue, f"the venue rejected our request (MsgType {message.msg_type}): {text}"
        )

    def _order_report(self, message: FixMessage) -> OrderReport | MalformedReport:
        reference = message.get(11) or "<unknown>"
        symbol = message.get(55) or "<unknown>"
        try:
            status_code = message.require(39)
            if status_code not in _ORD_STATUS:
                raise _BadValue(39, status_code, "not an OrdStatus this adapter knows")
            return OrderReport(
                venue=self.venue,
                client_order_id=ClientOrderId(message.require(11)),
                venue_order_id=_opt_id(message.get(37)),
                symbol=message.require(55),
                side=_side(message),
                qty=_int(message, 38),
                price=_decimal(message, 44),
                filled_qty=_int(message, 14),
                status=_ORD_STATUS[status_code],
                updated_at=_time(message, 60) if message.get(60) else None,
            )
        except (MissingTag, _BadValue) as exc:
            detail = str(exc)
        except ValidationError as exc:
            detail = _validation_detail(exc, _ORDER_TAGS)
        return MalformedReport(
            venue=self.venue, kind="order", reference=reference, symbol=symbol, detail=detail
        )

    def _fill_report(self, message: FixMessage, venue_seq: int) -> FillReport | MalformedReport:
        reference = message.get(571) or message.get(17) or "<unknown>"
        symbol = message.get(55) or "<unknown>"
        try:
            trade_id = message.get(17) or message.require(571)
            return FillReport(
                venue=self.venue,
                trade_id=trade_id,
                # A numeric trade id is the venue's own trade sequence: the same number its
                # other faces report, so a fill is placed the same whichever face read it.
                venue_seq=int(trade_id) if trade_id.isdigit() and int(trade_id) > 0 else venue_seq,
                client_order_id=ClientOrderId(message.require(11)),
                venue_order_id=_opt_id(message.get(37)),
                symbol=message.require(55),
                side=_side(message),
                qty=_int(message, 32),
                price=_decimal(message, 31),
                ts=_time(message, 60),
            )
        except (MissingTag, _BadValue) as exc:
            detail = str(exc)
        except ValidationError as exc:
            detail = _validation_detail(exc, _FILL_TAGS)
        return MalformedReport(
            venue=self.venue, kind="fill", reference=reference, symbol=symbol, detail=detail
        )

    def _cancel_outcome(self, message: FixMessage) -> CancelResult:
        if message.msg_type == MsgType.EXECUTION_REPORT and message.get(150) == "4":
            return "cancelled"
        if message.msg_type == MsgType.ORDER_CANCEL_REJECT:
            reason = message.get(102)
            if reason == _CXL_UNKNOWN_ORDER:
                return "unknown"
            if reason == _CXL_TOO_LATE:
                return "already_cancelled" if message.get(39) == "4" else "already_filled"
        raise VenueUnavailable(
            self.venue,
            f"unexpected answer to a cancel (MsgType {message.msg_type}, ExecType "
            f"{message.get(150)}, CxlRejReason {message.get(102)}): "
            f"{message.get(58) or 'no text'}",
        )


class _BadValue(ValueError):
    def __init__(self, tag: int, value: str, why: str) -> None:
        super().__init__(f"{tag_label(tag)} = {value!r}: {why}")


def _side(message: FixMessage) -> Side:
    code = message.require(54)
    if code not in _SIDES:
        raise _BadValue(54, code, "not buy (1) or sell (2)")
    return _SIDES[code]


def _int(message: FixMessage, tag: int) -> int:
    value = message.require(tag)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _BadValue(tag, value, "not a number") from None
    if number != number.to_integral_value():
        raise _BadValue(tag, value, "not a whole quantity")
    return int(number)


def _decimal(message: FixMessage, tag: int) -> Decimal:
    value = message.require(tag)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise _BadValue(tag, value, "not a number") from None
    if not number.is_finite():
        raise _BadValue(tag, value, "not a finite number")
    return number


def _time(message: FixMessage, tag: int) -> datetime:
    value = message.require(tag)
    try:
        return parse_utc_timestamp(value)
    except ValueError as exc:
        raise _BadValue(tag, value, str(exc)) from None


def _opt_id(value: str | None) -> VenueOrderId | None:
    return VenueOrderId(value) if value and value != "NONE" else None


def _count(message: FixMessage, tag: int, venue: str) -> int:
    value = message.get(tag)
    if value is None or not value.isdigit():
        raise VenueUnavailable(venue, f"{tag_label(tag)} missing or not a count: {value!r}")
    return int(value)


# Which tag each report field came from, so a value the domain refuses is named as on the wire.
_ORDER_TAGS: Final = {"client_order_id": 11, "symbol": 55, "qty": 38, "price": 44, "filled_qty": 14}
_FILL_TAGS: Final = {"client_order_id": 11, "symbol": 55, "qty": 32, "price": 31, "trade_id": 17}


def _validation_detail(exc: ValidationError, tags: dict[str, int]) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "report"
        tag = tags.get(field)
        where = f"{tag_label(tag)} -> {field}" if tag is not None else field
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


__all__ = ["Fix44Adapter"]
