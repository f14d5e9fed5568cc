"""The venue's FIX 4.4 face: an acceptor over the same book, sessions and fault plan as REST.

What it serves (the rules of engagement docs/ADAPTERS.md points venues to):
- Logon (A) must carry ResetSeqNumFlag(141)=Y, HeartBtInt(108), TargetCompID(56) = the venue's
  name and Password(554) = the venue's API key. The member is the SenderCompID(49): the same
  member the REST sessions name (the lab OMS's member, the system's name), under the same
  one-session-per-member rule and reconnect cooldown (``SessionTable``). During a cooldown the
  Logon is answered by a Logout whose Text reads ``reconnect cooldown: retry after 2.35 s``.
- MsgSeqNum(34) is checked on every message; a gap or a repeat is answered by a Logout whose
  Text names the expected and received numbers, then the connection closes. Nothing is resent:
  sessions start at 1 on every Logon.
- Heartbeat (0) / TestRequest (1), Logout (5).
- NewOrderSingle (D) -> ExecutionReport 150=0 (new) or 150=8 (rejected, with Text).
- OrderCancelRequest (F) -> ExecutionReport 150=4, or OrderCancelReject (9) with
  CxlRejReason(102) 1 (unknown order) or 0 (too late: OrdStatus 2 filled / 4 cancelled).
- OrderMassStatusRequest (AF, 585=7) -> one ExecutionReport 150=I per open order with
  MassStatusReqID(584), TotNumReports(911), LastRptRequested(912)=Y on the last. With no open
  order: one report with 911=0, 912=Y, OrderID/ClOrdID "NONE", OrdStatus 8 and Text "no open
  orders" (the usual venue practice; it carries no order).
- OrderMassCancelRequest (q, 530=7) -> OrderMassCancelReport (r) 531=7 with
  TotalAffectedOrders(533).
- TradeCaptureReportRequest (AD, one NoDates entry with TransactTime = from when) -> an AQ ack
  with TotNumTradeReports(748), then that many TradeCaptureReports (AE), 912=Y on the last.

It knows nothing of epochs: a FIX order rests without the desk-gateway epoch check, as on
the Binance face (``OrderBook.enter_without_epoch``).

Faults (``FaultPlan``): ``fix_drops`` cuts the next mass-status answers half way by dropping
the connection; ``fix_seq_gaps`` makes the next application messages skip a MsgSeqNum;
``junk_orders`` / ``junk_fills`` become reports in which every field the junk leaves out is a
missing tag. FIX requests go to the venue's request log as ``fix:<MsgType>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from pydantic import ValidationError

from adapters.venues.fix_session import (
    ADMIN_TYPES,
    FixFramingError,
    FixMessage,
    MissingTag,
    MsgType,
    encode,
    parse_utc_timestamp,
    read_message,
    set_nodelay,
    utc_timestamp,
)
from lab.venue.config import VenueSettings
from lab.venue.exchange import SimulatedVenue
from lab.venue.faults import VenueFaults
from lab.venue.models import Order, OrderTicketWithoutEpoch
from lab.venue.rejections import VenueRejection
from lab.venue.sessions import SessionEnd, VenueSession

log = logging.getLogger("lab.venue.fix")

_SIDE_CODES = {"buy": "1", "sell": "2"}
_SIDES = {"1": "buy", "2": "sell"}
_STATUS_CODES = {"open": "0", "filled": "2", "cancelled": "4"}
_FILLS_PAGE = 1000
# How long the acceptor waits for a Logon after the TCP connect, and for the Logout answer.
_LOGON_WAIT_S = 10.0


class _SessionOver(Exception):
    """This connection is finished; the Logout (if any) has been sent."""


@contextlib.asynccontextmanager
async def serve_fix(
    settings: VenueSettings, venue: SimulatedVenue, faults: Callable[[], VenueFaults]
) -> AsyncIterator[None]:
    """Serve FIX on ``settings.fix_port`` (loopback) for the duration; nothing when unset."""
    if settings.fix_port is None:
        yield
        return
    acceptor = FixAcceptor(settings, venue, faults)
    server = await asyncio.start_server(acceptor.serve_connection, "127.0.0.1", settings.fix_port)
    try:
        yield
    finally:
        server.close()
        await acceptor.close_all()
        await server.wait_closed()


class FixAcceptor:
    def __init__(
        self, settings: VenueSettings, venue: SimulatedVenue, faults: Callable[[], VenueFaults]
    ) -> None:
        self._settings = settings
        self._venue = venue
        self._faults = faults
        self._connections: set[_Connection] = set()

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        set_nodelay(writer)
        connection = _Connection(self._settings, self._venue, self._faults(), reader, writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    async def close_all(self) -> None:
        for connection in list(self._connections):
            await connection.abort()


class _Connection:
    def __init__(
        self,
        settings: VenueSettings,
        venue: SimulatedVenue,
        faults: VenueFaults,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._settings = settings
        self._venue = venue
        self._faults = faults
        self._reader = reader
        self._writer = writer
        self._comp_id = settings.name
        self._member = ""
        self._agent = ""
        self._session: VenueSession | None = None
        self._out_seq = 1
        self._in_seq = 1
        self._heartbeat_s = 30
        self._heartbeats: asyncio.Task[None] | None = None
        # Set by the fault plan: the mass-status answer being served stops half way.
        self._drop_next_answer = False

    # --- the connection's life ---------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._logon()
            while True:
                message = await self._read(timeout_s=2 * self._heartbeat_s + 5)
                await self._dispatch(message)
        except _SessionOver:
            pass
        except (asyncio.IncompleteReadError, ConnectionError, FixFramingError, TimeoutError):
            # The member went away without a Logout: unclean, so its cooldown starts now.
            self._end_session(SessionEnd.DISCONNECTED)
        finally:
            await self.abort()

    async def abort(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
            self._heartbeats = None
        self._writer.close()
        with contextlib.suppress(OSError, RuntimeError):
            await self._writer.wait_closed()

    async def _logon(self) -> None:
        message = await self._read(timeout_s=_LOGON_WAIT_S)
        if message.msg_type != MsgType.LOGON:
            await self._logout_and_close(f"first message must be Logon (A), got {message.msg_type}")
        self._member = message.get(49) or ""
        self._agent = message.get(50) or ""
        if message.get(141) != "Y":
            await self._logout_and_close("Logon needs ResetSeqNumFlag(141)=Y: sessions start at 1")
        if message.get(56) != self._comp_id:
            await self._logout_and_close(
                f"unknown TargetCompID {message.get(56)!r}; this venue is {self._comp_id!r}"
            )
        presented = (message.get(554) or "").encode()
        expected = self._settings.api_key.get_secret_value().encode()
        if not hmac.compare_digest(presented, expected):
            # Never echo what was presented: a near-miss password in a log is a leaked one.
            await self._logout_and_close("logon refused: wrong or missing Password(554)")
        heartbeat = message.get(108) or ""
        if not heartbeat.isdigit() or int(heartbeat) < 1:
            await self._logout_and_close("Logon needs HeartBtInt(108), a whole number of seconds")
        self._heartbeat_s = int(heartbeat)
        if not self._member:
            await self._logout_and_close("Logon needs SenderCompID(49): the member")
        answer = await self._fault_answer("fix:A")
        if answer in ("429", "418"):
            await self._logout_and_close(self._throttled_text())
        if answer.isdigit():
            await self._logout_and_close(f"order entry gateway unavailable (injected {answer})")
        try:
            self._session = self._venue.connect(self._member)
        except VenueRejection as rejection:
            retry_after = float(rejection.body_json().get("retry_after_s", 1.0))
            await self._logout_and_close(f"reconnect cooldown: retry after {retry_after:.2f} s")
        self._send(MsgType.LOGON, [(98, 0), (108, self._heartbeat_s), (141, "Y")], admin=True)
        self._heartbeats = asyncio.create_task(self._heartbeat_forever())

    async def _read(self, timeout_s: float) -> FixMessage:
        message = await asyncio.wait_for(read_message(self._reader), timeout_s)
        try:
            seq = message.seq_num
        except (MissingTag, ValueError):
            await self._logout_and_close("MsgSeqNum(34) missing or not a number")
        if seq != self._in_seq and message.get(43) != "Y":
            direction = "too high" if seq > self._in_seq else "too low"
            # The venue ends the session itself: a clean end, no cooldown for the member.
            self._end_session(SessionEnd.LOGGED_OUT)
            await self._logout_and_close(
                f"MsgSeqNum {direction}, expected {self._in_seq} received {seq}"
            )
        self._in_seq = seq + 1
        if self._session is not None:
            now = time.monotonic()
            if not self._session.active(now):
                await self._logout_and_close(
                    "session ended: replaced by a newer logon of this member, or timed out"
                )
            self._session.touch(now)
        return message

    async def _dispatch(self, message: FixMessage) -> None:
        kind = message.msg_type
        if kind == MsgType.TEST_REQUEST:
            self._send(MsgType.HEARTBEAT, [(112, message.get(112))], admin=True)
        elif kind == MsgType.HEARTBEAT:
            pass
        elif kind == MsgType.LOGOUT:
            self._end_session(SessionEnd.LOGGED_OUT)
            self._send(MsgType.LOGOUT, [], admin=True)
            raise _SessionOver
        elif kind in ADMIN_TYPES:
            await self._logout_and_close(f"unexpected {kind} on a logged-on session")
        elif await self._refused_by_fault_plan(message):
            pass
        elif kind == MsgType.NEW_ORDER_SINGLE:
            self._new_order(message)
        elif kind == MsgType.ORDER_CANCEL_REQUEST:
            self._cancel(message)
        elif kind == MsgType.ORDER_MASS_STATUS_REQUEST:
            await self._mass_status(message)
        elif kind == MsgType.ORDER_MASS_CANCEL_REQUEST:
            self._mass_cancel(message)
        elif kind == MsgType.TRADE_CAPTURE_REPORT_REQUEST:
            self._trade_capture(message)
        else:
            self._business_reject(message, 3, f"unsupported MsgType {kind}")
        await self._writer.drain()

    async def _refused_by_fault_plan(self, message: FixMessage) -> bool:
        """Answer the request as the fault plan says; False when it should be served."""
        answer = await self._fault_answer(f"fix:{message.msg_type}")
        if answer in ("429", "418"):
            self._business_reject(message, 99, self._throttled_text())
        elif answer.isdigit():
            self._business_reject(message, 4, f"application not available (injected {answer})")
        else:
            return False
        return True

    async def _fault_answer(self, path: str) -> str:
        answer = self._faults.next_answer(path, self._agent)
        drop = path == "fix:AF" and answer == "ok"
        if drop and self._faults.take_fix("fix_drops", self._agent):
            answer = "drop"
            self._drop_next_answer = True
        self._faults.record_fix(path, self._agent, answer)
        if answer == "slow":
            # The member has given up by then; the answer still goes out, as a slow venue's does.
            await asyncio.sleep(self._faults.plan.slow_ms / 1000)
        return answer

    def _throttled_text(self) -> str:
        return f"throttle limit exceeded: retry after {self._faults.plan.retry_after_s:.2f} s"

    def _business_reject(self, message: FixMessage, reason: int, text: str) -> None:
        # BusinessRejectRefID(379) carries the request's own id, so the member can match it.
        reference = next(
            (message.get(t) for t in (11, 584, 568) if message.get(t) is not None), None
        )
        self._send(
            MsgType.BUSINESS_MESSAGE_REJECT,
            [
                (45, message.get(34)),
                (372, message.msg_type),
                (379, reference),
                (380, reason),
                (58, text),
            ],
        )

    # --- application messages ----------------------------------------------------------------

    def _new_order(self, message: FixMessage) -> None:
        clordid = message.get(11) or "NONE"
        try:
            ticket = OrderTicketWithoutEpoch.model_validate(
                {
                    "client_order_id": message.require(11),
                    "symbol": message.require(55),
                    "side": _SIDES.get(message.require(54), message.require(54)),
                    "qty": _number(message.require(38)),
                    "price": message.require(44),
                }
            )
            order = self._venue.book.enter_without_epoch(ticket)
        except (MissingTag, ValidationError, VenueRejection, InvalidOperation, ValueError) as exc:
            text = exc.args[0] if isinstance(exc, VenueRejection) else str(exc).splitlines()[0]
            self._send(
                MsgType.EXECUTION_REPORT,
                [
                    (37, "NONE"),
                    (11, clordid),
                    (17, f"{clordid}-rej"),
                    (150, "8"),
                    (39, "8"),
                    (55, message.get(55)),
                    (54, message.get(54)),
                    (14, 0),
                    (151, 0),
                    (6, 0),
                    (103, 6 if isinstance(exc, VenueRejection) else 99),
                    (58, text),
                ],
            )
            return
        self._send(MsgType.EXECUTION_REPORT, _order_fields(order, exec_type="0"))

    def _cancel(self, message: FixMessage) -> None:
        request_id = message.get(11)
        original = message.get(41) or ""
        self._venue.counters.cancel_requests += 1
        [result] = self._venue.book.cancel([original], by="client_order_id")
        if result.outcome == "cancelled":
            order = self._venue.book.order(client_order_id=original)
            fields = _order_fields(order, exec_type="4")
            self._send(
                MsgType.EXECUTION_REPORT, [*_replace(fields, 11, request_id), (41, original)]
            )
            return
        if result.outcome == "unknown":
            order_id, status, reason, text = "NONE", "8", 1, f"unknown order {original!r}"
        else:
            order = self._venue.book.order(client_order_id=original)
            order_id, status = order.venue_order_id, _STATUS_CODES[order.status]
            reason, text = 0, f"too late to cancel: order is {order.status}"
        self._send(
            MsgType.ORDER_CANCEL_REJECT,
            [
                (37, order_id),
                (11, request_id),
                (41, original),
                (39, status),
                (434, 1),
                (102, reason),
                (58, text),
            ],
        )

    async def _mass_status(self, message: FixMessage) -> None:
        request_id = message.get(584)
        drop, self._drop_next_answer = self._drop_next_answer, False
        reports = [_order_fields(order, exec_type="I") for order in self._venue.book.open_orders()]
        if self._faults.targets(self._agent):
            reports += [_junk_order_fields(junk) for junk in self._faults.plan.junk_orders]
        total = len(reports)
        if total == 0:
            self._send(
                MsgType.EXECUTION_REPORT,
                [
                    (37, "NONE"),
                    (11, "NONE"),
                    (17, f"{request_id}-none"),
                    (150, "I"),
                    (39, "8"),
                    (584, request_id),
                    (911, 0),
                    (912, "Y"),
                    (58, "no open orders"),
                ],
            )
            return
        for number, fields in enumerate(reports, start=1):
            if drop and number > max(total // 2, 1):
                # The venue's gateway fails half way through the answer. The venue dropped
                # it, so the member is not put in a cooldown for it.
                self._end_session(SessionEnd.LOGGED_OUT)
                self._writer.transport.abort()
                raise _SessionOver
            self._send(
                MsgType.EXECUTION_REPORT,
                [*fields, (584, request_id), (911, total), (912, "Y" if number == total else "N")],
            )
            if number % 200 == 0:
                await self._writer.drain()

    def _mass_cancel(self, message: FixMessage) -> None:
        request_id = message.get(11)
        if message.get(530) != "7":
            self._send(
                MsgType.ORDER_MASS_CANCEL_REPORT,
                [
                    (11, request_id),
                    (37, f"{request_id}-r"),
                    (530, message.get(530)),
                    (531, 0),
                    (58, "only MassCancelRequestType 7 (all orders) is supported"),
                ],
            )
            return
        self._venue.counters.cancel_requests += 1
        ids = [order.client_order_id for order in self._venue.book.open_orders()]
        results = self._venue.book.cancel(ids, by="client_order_id") if ids else []
        affected = sum(1 for result in results if result.outcome == "cancelled")
        self._send(
            MsgType.ORDER_MASS_CANCEL_REPORT,
            [(11, request_id), (37, f"{request_id}-r"), (530, 7), (531, 7), (533, affected)],
        )

    def _trade_capture(self, message: FixMessage) -> None:
        request_id = message.get(568)
        since: datetime | None = None
        if message.get(60):
            try:
                since = parse_utc_timestamp(message.require(60))
            except ValueError as exc:
                self._send(
                    MsgType.TRADE_CAPTURE_REPORT_REQUEST_ACK,
                    [(568, request_id), (569, 0), (749, 99), (750, 2), (748, 0), (58, str(exc))],
                )
                return
        fills: list[dict[str, Any]] = []
        after, first = 0, True
        while True:
            page = self._venue.book.fills_page(after, since, _FILLS_PAGE).model_dump(mode="json")
            body = self._faults.fills_body(page, first, self._agent)
            fills += body["fills"]
            first = False
            if page["next_cursor"] is None:
                break
            after = int(page["next_cursor"])
        total = len(fills)
        self._send(
            MsgType.TRADE_CAPTURE_REPORT_REQUEST_ACK,
            [(568, request_id), (569, 0), (749, 0), (750, 0), (748, total)],
        )
        for number, fill in enumerate(fills, start=1):
            self._send(
                MsgType.TRADE_CAPTURE_REPORT,
                [
                    *_fill_fields(fill),
                    (568, request_id),
                    (748, total),
                    (912, "Y" if number == total else "N"),
                ],
            )

    # --- plumbing ----------------------------------------------------------------------------

    def _send(self, msg_type: str, body: Iterable[tuple[int, object]], admin: bool = False) -> None:
        if not admin and self._faults.take_fix("fix_seq_gaps", self._agent):
            self._out_seq += 1  # the injected gap: one number never sent
        self._writer.write(encode(msg_type, self._comp_id, self._member, self._out_seq, body))
        self._out_seq += 1

    async def _logout_and_close(self, text: str) -> NoReturn:
        log.info("FIX session of %r ended by the venue: %s", self._member, text)
        with contextlib.suppress(OSError, RuntimeError):
            self._send(MsgType.LOGOUT, [(58, text)], admin=True)
            await self._writer.drain()
        raise _SessionOver

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            with contextlib.suppress(OSError, RuntimeError):
                self._send(MsgType.HEARTBEAT, [], admin=True)

    def _end_session(self, end: SessionEnd) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        now = time.monotonic()
        if end is SessionEnd.LOGGED_OUT:
            with contextlib.suppress(VenueRejection):
                self._venue.logout(session.session_id)
        elif session.active(now):
            session.close(end, now)


def _order_fields(order: Order, exec_type: str) -> list[tuple[int, object]]:
    filled = order.filled_qty
    status = _STATUS_CODES[order.status]
    if order.status == "open" and filled:
        status = "1"  # partially filled, still working
    return [
        (37, order.venue_order_id),
        (11, order.client_order_id),
        (17, f"{order.venue_order_id}-{exec_type}-{order.updated_at.timestamp():.6f}"),
        (150, exec_type),
        (39, status),
        (55, order.symbol),
        (54, _SIDE_CODES[order.side]),
        (38, order.qty),
        (40, 2),  # limit
        (44, order.price),
        (14, filled),
        (151, order.remaining_qty if order.status == "open" else 0),
        (6, order.price if filled else 0),
        (60, utc_timestamp(order.updated_at)),
    ]


def _junk_order_fields(junk: dict[str, Any]) -> list[tuple[int, object]]:
    """A junk order of the fault plan, as a report: each field it leaves out is a missing tag."""
    side = junk.get("side")
    status = junk.get("status", "open")
    return [
        (37, junk.get("venue_order_id")),
        (11, junk.get("client_order_id")),
        (17, f"junk-{id(junk)}"),
        (150, "I"),
        (39, _STATUS_CODES.get(status, status) if status is not None else None),
        (55, junk.get("symbol")),
        (54, _SIDE_CODES.get(side, side) if side is not None else None),
        (38, junk.get("qty")),
        (40, 2),
        (44, junk.get("price")),
        (14, junk.get("filled_qty", 0)),
    ]


def _fill_fields(fill: dict[str, Any]) -> list[tuple[int, object]]:
    """A fill (as the REST face serializes it, junk included) as TradeCaptureReport fields."""
    ts = fill.get("ts")
    side = fill.get("side")
    return [
        (571, fill.get("trade_id")),
        (17, fill.get("trade_id")),
        (150, "F"),
        (55, fill.get("symbol")),
        (32, fill.get("qty")),
        (31, fill.get("price")),
        (75, ts[:10].replace("-", "") if isinstance(ts, str) else None),
        (60, _fix_time(ts)),
        (552, 1),
        (54, _SIDE_CODES.get(side, side) if side is not None else None),
        (37, fill.get("venue_order_id")),
        (11, fill.get("client_order_id")),
    ]


def _replace(
    fields: Sequence[tuple[int, object]], tag: int, value: object
) -> list[tuple[int, object]]:
    return [(t, value if t == tag else v) for t, v in fields]


def _fix_time(ts: object) -> str | None:
    """An ISO timestamp as a FIX UTCTimestamp; junk is passed on as it is, for the member to
    find malformed."""
    if not isinstance(ts, str):
        return None
    try:
        return utc_timestamp(datetime.fromisoformat(ts))
    except ValueError:
        return ts


def _number(value: str) -> int:
    number = Decimal(value)
    if number != number.to_integral_value():
        raise ValueError(f"OrderQty(38) {value!r} is not a whole quantity")
    return int(number)
