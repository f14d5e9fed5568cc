"""A small FIX 4.4 session on asyncio, with ``simplefix`` as the codec.

Runbook sessions are short: log on with ResetSeqNumFlag(141)=Y so both sides start at 1, do one
step, log out. So this session never resends: an inbound sequence gap logs out and drops the
session (``VenueUnavailable``); the activity's retry opens a fresh one, which costs nothing
because a clean Logout leaves no reconnect cooldown behind.

The framing and message helpers here are also what the lab's FIX acceptor speaks, so both ends
agree on one reading of the wire: BodyLength(9) frames a message, CheckSum(10) is verified.
``simplefix`` is untyped; ``FixMessage`` is the typed boundary around it.

Every FIX socket sets TCP_NODELAY: without it a request/response round trip costs ~40 ms of
Nagle + delayed ACK instead of under a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import simplefix  # type: ignore[import-untyped]

from domain.venues import AuthRejected, ReconnectCooldown, VenueUnavailable

BEGIN_STRING: Final = "FIX.4.4"
SOH: Final = b"\x01"
# A FIX frame can never sensibly be longer than this; a larger BodyLength is a corrupt stream.
MAX_BODY_LENGTH: Final = 1_000_000

# The tags this project reads or writes, with their FIX names for error messages.
TAG_NAMES: Final[dict[int, str]] = {
    1: "Account",
    6: "AvgPx",
    8: "BeginString",
    9: "BodyLength",
    10: "CheckSum",
    11: "ClOrdID",
    14: "CumQty",
    17: "ExecID",
    31: "LastPx",
    32: "LastQty",
    34: "MsgSeqNum",
    35: "MsgType",
    37: "OrderID",
    38: "OrderQty",
    39: "OrdStatus",
    40: "OrdType",
    41: "OrigClOrdID",
    43: "PossDupFlag",
    44: "Price",
    45: "RefSeqNum",
    49: "SenderCompID",
    50: "SenderSubID",
    52: "SendingTime",
    54: "Side",
    55: "Symbol",
    56: "TargetCompID",
    58: "Text",
    60: "TransactTime",
    75: "TradeDate",
    98: "EncryptMethod",
    102: "CxlRejReason",
    103: "OrdRejReason",
    108: "HeartBtInt",
    112: "TestReqID",
    141: "ResetSeqNumFlag",
    150: "ExecType",
    151: "LeavesQty",
    434: "CxlRejResponseTo",
    530: "MassCancelRequestType",
    531: "MassCancelResponse",
    533: "TotalAffectedOrders",
    552: "NoSides",
    553: "Username",
    554: "Password",
    568: "TradeRequestID",
    569: "TradeRequestType",
    571: "TradeReportID",
    580: "NoDates",
    584: "MassStatusReqID",
    585: "MassStatusReqType",
    748: "TotNumTradeReports",
    749: "TradeRequestResult",
    750: "TradeRequestStatus",
    911: "TotNumReports",
    912: "LastRptRequested",
}


class MsgType:
    HEARTBEAT: Final = "0"
    TEST_REQUEST: Final = "1"
    REJECT: Final = "3"
    LOGOUT: Final = "5"
    EXECUTION_REPORT: Final = "8"
    ORDER_CANCEL_REJECT: Final = "9"
    LOGON: Final = "A"
    NEW_ORDER_SINGLE: Final = "D"
    ORDER_CANCEL_REQUEST: Final = "F"
    TRADE_CAPTURE_REPORT_REQUEST: Final = "AD"
    TRADE_CAPTURE_REPORT: Final = "AE"
    TRADE_CAPTURE_REPORT_REQUEST_ACK: Final = "AQ"
    ORDER_MASS_STATUS_REQUEST: Final = "AF"
    BUSINESS_MESSAGE_REJECT: Final = "j"
    ORDER_MASS_CANCEL_REQUEST: Final = "q"
    ORDER_MASS_CANCEL_REPORT: Final = "r"


ADMIN_TYPES: Final = frozenset(
    {MsgType.HEARTBEAT, MsgType.TEST_REQUEST, MsgType.LOGOUT, MsgType.LOGON}
)


def tag_label(tag: int) -> str:
    name = TAG_NAMES.get(tag)
    return f"tag {tag} ({name})" if name else f"tag {tag}"


class FixFramingError(ValueError):
    """The byte stream is not FIX: the session cannot continue on it."""


class MissingTag(ValueError):
    def __init__(self, tag: int) -> None:
        super().__init__(f"{tag_label(tag)} missing")
        self.tag = tag


@dataclass(frozen=True)
class FixMessage:
    """One decoded message: its type and its fields in wire order (header and trailer included)."""

    msg_type: str
    fields: tuple[tuple[int, str], ...]

    def get(self, tag: int) -> str | None:
        for t, v in self.fields:
            if t == tag:
                return v
        return None

    def require(self, tag: int) -> str:
        value = self.get(tag)
        if value is None or value == "":
            raise MissingTag(tag)
        return value

    @property
    def seq_num(self) -> int:
        return int(self.require(34))

    def describe(self) -> str:
        """The message in the FIX log notation (``|`` for SOH), the Password never shown."""
        return "|".join(f"{t}={'***' if t == 554 else v}" for t, v in self.fields)


def utc_timestamp(moment: datetime | None = None) -> str:
    """A FIX UTCTimestamp with microseconds (as most venues send today)."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y%m%d-%H:%M:%S.%f")


def parse_utc_timestamp(value: str) -> datetime:
    for fmt in ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S"):
        with contextlib.suppress(ValueError):
            return datetime.strptime(value, fmt).replace(tzinfo=UTC)
    raise ValueError(f"{value!r} is not a FIX UTCTimestamp (YYYYMMDD-HH:MM:SS[.ffffff])")


def encode(
    msg_type: str,
    sender: str,
    target: str,
    seq: int,
    body: Iterable[tuple[int, object]],
    header: Iterable[tuple[int, object]] = (),
) -> bytes:
    """One message on the wire; BodyLength and CheckSum are computed by simplefix. A field whose
    value is None is left out."""
    message: Any = simplefix.FixMessage()
    message.append_pair(8, BEGIN_STRING, header=True)
    message.append_pair(35, msg_type, header=True)
    message.append_pair(49, sender, header=True)
    message.append_pair(56, target, header=True)
    message.append_pair(34, seq, header=True)
    for tag, value in header:
        message.append_pair(tag, value, header=True)
    message.append_pair(52, utc_timestamp(), header=True)
    for tag, value in body:
        if value is not None:
            message.append_pair(tag, value)
    wire: bytes = message.encode()
    return wire


async def read_message(reader: asyncio.StreamReader) -> FixMessage:
    """The next whole message. Raises ``asyncio.IncompleteReadError`` at end of stream and
    ``FixFramingError`` on bytes that are not FIX (a wrong BeginString, length or checksum)."""
    begin = await reader.readuntil(SOH)
    if begin != f"8={BEGIN_STRING}".encode() + SOH:
        raise FixFramingError(f"expected 8={BEGIN_STRING} first, got {begin[:20]!r}")
    length_field = await reader.readuntil(SOH)
    if not length_field.startswith(b"9=") or not length_field[2:-1].isdigit():
        raise FixFramingError(f"expected BodyLength(9) second, got {length_field[:20]!r}")
    body_length = int(length_field[2:-1])
    if body_length > MAX_BODY_LENGTH:
        raise FixFramingError(f"BodyLength {body_length} exceeds {MAX_BODY_LENGTH}")
    rest = await reader.readexactly(body_length + 7)  # the body, then "10=NNN<SOH>"
    frame = begin + length_field + rest
    trailer = rest[-7:]
    if not (trailer.startswith(b"10=") and trailer.endswith(SOH) and trailer[3:6].isdigit()):
        raise FixFramingError(f"expected CheckSum(10) after {body_length} body bytes")
    if sum(frame[:-7]) % 256 != int(trailer[3:6]):
        raise FixFramingError("CheckSum(10) does not match the message")
    return _decode(frame)


def _decode(frame: bytes) -> FixMessage:
    parser: Any = simplefix.FixParser()
    parser.append_buffer(frame)
    try:
        message: Any = parser.get_message()
    except Exception as exc:  # simplefix raises its own untyped errors
        raise FixFramingError(f"undecodable message: {exc}") from exc
    if message is None:
        raise FixFramingError("incomplete message")
    fields = tuple((int(tag), bytes(value).decode("latin-1")) for tag, value in message.pairs)
    msg_type = next((v for t, v in fields if t == 35), None)
    if msg_type is None:
        raise FixFramingError("MsgType(35) missing")
    return FixMessage(msg_type, fields)


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


RETRY_AFTER = re.compile(r"retry after ([0-9]+(?:\.[0-9]+)?) s")
_AUTH_WORDS = re.compile(r"password|not authori[sz]ed|unknown (?:sender|target)compid", re.I)


class FixSession:
    """One initiator session: logon, ordered application messages in, clean logout.

    Not shared between tasks. A background reader answers TestRequests, checks every inbound
    MsgSeqNum and queues application messages for ``receive``; a heartbeat task keeps the
    session alive while the step is busy elsewhere.
    """

    def __init__(
        self,
        *,
        venue: str,
        host: str,
        port: int,
        sender_comp_id: str,
        target_comp_id: str,
        password: str | None,
        heartbeat_s: int,
        timeout_s: float,
        sender_sub_id: str,
    ) -> None:
        self._venue = venue
        self._host = host
        self._port = port
        self._sender = sender_comp_id
        self._target = target_comp_id
        self._password = password
        self._heartbeat_s = heartbeat_s
        self._timeout_s = timeout_s
        # How the runbooks name themselves on the session (SenderSubID, 50): a venue's logs and
        # the lab's fault plans tell them apart by it, as the REST faces do by User-Agent.
        self._sub_id = sender_sub_id
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._out_seq = 1
        self._in_seq = 1
        self._inbox: asyncio.Queue[FixMessage | VenueUnavailable] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: VenueUnavailable | None = None
        self._logout_ack = asyncio.Event()
        self.logged_on = False

    # --- lifecycle -------------------------------------------------------------------------

    async def logon(self) -> None:
        """Connect and log on. Raises ``ReconnectCooldown`` when the venue answers the Logon
        with a Logout naming a retry delay, ``AuthRejected`` when it refuses the credentials,
        ``VenueUnavailable`` when it cannot be reached or does not answer in time."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port), self._timeout_s
            )
        except (OSError, TimeoutError) as exc:
            where = f"{self._host}:{self._port}"
            raise self._unavailable(f"cannot connect to {where}: {exc!r}") from None
        set_nodelay(writer)
        self._reader, self._writer = reader, writer
        self._send(
            MsgType.LOGON,
            [(98, 0), (108, self._heartbeat_s), (141, "Y"), (553, self._sender)]
            + ([(554, self._password)] if self._password is not None else []),
        )
        try:
            answer = await asyncio.wait_for(self._read_checked(), self._timeout_s)
        except TimeoutError:
            await self._drop()
            raise self._unavailable(f"no Logon answer within {self._timeout_s:g} s") from None
        except VenueUnavailable:
            await self._drop()
            raise
        if answer.msg_type == MsgType.LOGOUT:
            await self._drop()
            raise self._refusal(answer.get(58) or "")
        if answer.msg_type != MsgType.LOGON:
            await self._drop()
            raise self._unavailable(f"expected a Logon answer, got MsgType {answer.msg_type}")
        self.logged_on = True
        self._tasks = [
            asyncio.create_task(self._read_forever()),
            asyncio.create_task(self._heartbeat_forever()),
        ]

    async def logout(self) -> None:
        """Log out cleanly (so the next session logs on without a cooldown) and disconnect.
        Best effort and idempotent."""
        if self.logged_on and self._failure is None and self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._send(MsgType.LOGOUT, [])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._logout_ack.wait(), self._timeout_s)
        self.logged_on = False
        await self._drop()

    # --- application messages --------------------------------------------------------------

    def send(self, msg_type: str, body: Sequence[tuple[int, object]]) -> None:
        if self._failure is not None:
            raise self._failure
        if not self.logged_on:
            raise self._unavailable("not logged on")
        try:
            self._send(msg_type, body)
        except (OSError, RuntimeError) as exc:
            raise self._fail(f"connection lost while sending: {exc!r}") from None

    async def receive(self) -> FixMessage:
        """The next application message, or ``VenueUnavailable`` when the session broke or the
        venue stayed silent for ``timeout_s``."""
        if self._failure is not None and self._inbox.empty():
            raise self._failure
        try:
            item = await asyncio.wait_for(self._inbox.get(), self._timeout_s)
        except TimeoutError:
            raise self._unavailable(
                f"no answer within {self._timeout_s:g} s on the FIX session"
            ) from None
        if isinstance(item, VenueUnavailable):
            raise item
        return item

    # --- internals ---------------------------------------------------------------------------

    def _send(self, msg_type: str, body: Iterable[tuple[int, object]]) -> None:
        assert self._writer is not None
        wire = encode(
            msg_type, self._sender, self._target, self._out_seq, body, [(50, self._sub_id)]
        )
        self._out_seq += 1
        self._writer.write(wire)

    async def _read_checked(self) -> FixMessage:
        """The next message with its MsgSeqNum checked. A gap is never filled by a resend here:
        we log out and the step reconnects."""
        assert self._reader is not None
        try:
            message = await read_message(self._reader)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise self._unavailable(f"connection closed by the venue ({exc!r})") from None
        except FixFramingError as exc:
            raise self._unavailable(f"unreadable FIX from the venue: {exc}") from None
        try:
            seq = message.seq_num
        except (MissingTag, ValueError):
            raise self._unavailable("message without a valid MsgSeqNum(34)") from None
        if seq != self._in_seq and message.get(43) != "Y":
            direction = "too high" if seq > self._in_seq else "too low"
            text = f"MsgSeqNum {direction}, expected {self._in_seq} received {seq}"
            with contextlib.suppress(OSError, RuntimeError):
                self._send(MsgType.LOGOUT, [(58, text)])
            raise self._unavailable(
                f"sequence gap ({text}); logged out, a fresh session starts again at 1"
            )
        self._in_seq = seq + 1
        return message

    async def _read_forever(self) -> None:
        try:
            while True:
                message = await self._read_checked()
                if message.msg_type == MsgType.TEST_REQUEST:
                    self._send(MsgType.HEARTBEAT, [(112, message.get(112))])
                elif message.msg_type == MsgType.HEARTBEAT:
                    continue
                elif message.msg_type == MsgType.LOGOUT:
                    if self.logged_on and not self._logout_ack.is_set():
                        self._logout_ack.set()
                    text = message.get(58) or "no reason given"
                    self._fail(f"the venue logged out: {text}")
                    return
                else:
                    self._inbox.put_nowait(message)
        except VenueUnavailable as exc:
            self._fail_with(exc)
        except (OSError, RuntimeError) as exc:
            self._fail(f"connection lost: {exc!r}")

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                self._send(MsgType.HEARTBEAT, [])
            except (OSError, RuntimeError):
                return

    def _fail(self, message: str) -> VenueUnavailable:
        return self._fail_with(self._unavailable(message))

    def _fail_with(self, exc: VenueUnavailable) -> VenueUnavailable:
        if self._failure is None:
            self._failure = exc
            self._inbox.put_nowait(exc)
        return self._failure

    async def _drop(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, RuntimeError):
                await self._writer.wait_closed()
            self._writer = None

    def _refusal(self, text: str) -> VenueUnavailable | ReconnectCooldown | AuthRejected:
        if match := RETRY_AFTER.search(text):
            return ReconnectCooldown(self._venue, float(match.group(1)))
        if _AUTH_WORDS.search(text):
            return AuthRejected(self._venue, f"FIX Logon refused: {text}")
        return self._unavailable(f"FIX Logon refused: {text or 'no reason given'}")

    def _unavailable(self, message: str) -> VenueUnavailable:
        return VenueUnavailable(self._venue, message)
