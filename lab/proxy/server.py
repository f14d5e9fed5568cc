"""The vantage proxy: forwards a vantage point's HTTP requests to loopback services, or drops them.

Each lab vantage point reaches the probed services only through its own proxy, so partitioning a
vantage point (`drctl lab chaos partition vantage NAME`) breaks a real network path instead of
flipping a flag in probe code. While partitioned, the proxy accepts a forwarded request and never
answers it, which is what a client sees when packets are silently dropped on the way.

The proxy speaks one request per connection and says ``Connection: close`` on both sides: a probe
opening a fresh connection per request is cheap on loopback, and it means no request can ever be
answered on a connection that was set up before a partition.

Control endpoints are requests to the proxy itself (origin-form, not through it) and keep working
while partitioned, so ``heal`` can always reach it:

- ``GET /__proxy/health`` → 200 ``{"name", "partitioned", "forwarded", "dropped"}``
- ``POST /__proxy/partition`` with ``{"partitioned": true|false}`` → 200, the same body as health
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

log = logging.getLogger(__name__)

HEALTH_PATH = "/__proxy/health"
PARTITION_PATH = "/__proxy/partition"

# Bounds connecting to a target and every read or write while forwarding, on either side, so a
# stuck peer frees its task. Dropped requests are the one deliberate exception: they wait for the
# client to give up, however long that takes.
IO_TIMEOUT_S = 10.0
# A request or response head (and a chunk-size line) larger than this is refused, not buffered.
MAX_HEAD_BYTES = 64 * 1024
COPY_CHUNK_BYTES = 64 * 1024

# Meaningful only between two adjacent hops; the proxy sets its own Connection header instead.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "upgrade",
    }
)
# Bodies are relayed verbatim, so the headers that frame them must travel with them whatever a
# Connection header claims.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})

Headers = list[tuple[str, str]]
# How a message body ends: after N bytes, after the last chunk, or when the sender closes.
BodyFraming = int | Literal["chunked", "until-close"]

_T = TypeVar("_T")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ProxyHealth(BaseModel):
    name: str
    partitioned: bool
    forwarded: int
    dropped: int


class PartitionSetting(BaseModel):
    # Strict, and no other keys: "partitioned": "false" must not quietly partition a vantage point.
    model_config = ConfigDict(extra="forbid")

    partitioned: StrictBool


class MalformedMessage(ValueError):
    """A request or response that does not follow HTTP/1.1 framing."""


class ProxyRefusal(Exception):
    """The proxy answers this request itself, with ``status`` and a JSON error."""

    def __init__(self, status: HTTPStatus, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    headers: Headers


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: str
    headers: Headers


@dataclass(frozen=True)
class ForwardTarget:
    """Where an absolute-form request goes, already checked to stay on this machine."""

    connect_host: str
    port: int
    authority: str
    origin_form: str


class VantageProxy:
    """One vantage point's path to the services it probes, and the switch that breaks it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.partitioned = False
        self.forwarded = 0
        self.dropped = 0

    def health(self) -> ProxyHealth:
        return ProxyHealth(
            name=self.name,
            partitioned=self.partitioned,
            forwarded=self.forwarded,
            dropped=self.dropped,
        )

    def set_partitioned(self, partitioned: bool) -> None:
        if partitioned == self.partitioned:
            return  # a repeated partition or heal is not a state change: no log line
        self.partitioned = partitioned
        if partitioned:
            log.info("vantage %s partitioned: forwarded requests are now dropped", self.name)
        else:
            log.info("vantage %s healed: forwarding again", self.name)

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await self._serve_one(reader, writer)
        except ProxyRefusal as refusal:
            with contextlib.suppress(ConnectionError, TimeoutError):
                await send_json(writer, refusal.status, {"error": refusal.message}, refusal.headers)
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            MalformedMessage,
        ):
            pass  # a peer left or broke framing after the answer began: closing is all that is left
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_request_head(reader)
        except asyncio.IncompleteReadError:
            return  # connected and left without a request, e.g. a port probe
        if head.method == "CONNECT":
            raise ProxyRefusal(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "CONNECT is not supported: the lab proxy forwards plain http:// requests only",
            )
        if head.target.startswith("/"):
            await self._answer_control(head, reader, writer)
            return
        target = forward_target(head.target)
        try:
            request_framing = body_framing(head.headers, is_request=True)
        except MalformedMessage as exc:
            raise ProxyRefusal(HTTPStatus.BAD_REQUEST, str(exc)) from None
        if self.partitioned:
            self.dropped += 1
            await hold_until_client_leaves(reader)
            return
        await self._forward(head, target, request_framing, reader, writer)

    async def _answer_control(
        self, head: RequestHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = urlsplit(head.target).path
        if path == HEALTH_PATH:
            if head.method != "GET":
                raise ProxyRefusal(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"{path} answers GET", [("Allow", "GET")]
                )
        elif path == PARTITION_PATH:
            if head.method != "POST":
                raise ProxyRefusal(
                    HTTPStatus.METHOD_NOT_ALLOWED, f"{path} answers POST", [("Allow", "POST")]
                )
            body = await read_small_body(reader, head.headers)
            try:
                setting = PartitionSetting.model_validate_json(body)
            except ValidationError:
                raise ProxyRefusal(
                    HTTPStatus.BAD_REQUEST, 'send a JSON body {"partitioned": true|false}'
                ) from None
            self.set_partitioned(setting.partitioned)
        else:
            raise ProxyRefusal(
                HTTPStatus.NOT_FOUND,
                f"the proxy itself answers only {HEALTH_PATH} and {PARTITION_PATH}; to reach a "
                "service, use this address as an HTTP proxy (absolute-form requests)",
            )
        await send_json(writer, HTTPStatus.OK, self.health().model_dump())

    async def _forward(
        self,
        head: RequestHead,
        target: ForwardTarget,
        request_framing: BodyFraming,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
    ) -> None:
        try:
            target_reader, target_writer = await within_timeout(
                asyncio.open_connection(target.connect_host, target.port, limit=MAX_HEAD_BYTES)
            )
        except TimeoutError:
            raise ProxyRefusal(
                HTTPStatus.GATEWAY_TIMEOUT,
                f"no connection to {target.authority} within {IO_TIMEOUT_S:g} s",
            ) from None
        except OSError as exc:
            raise ProxyRefusal(
                HTTPStatus.BAD_GATEWAY,
                f"cannot connect to {target.authority}: {exc.strerror or exc}",
            ) from None
        self.forwarded += 1
        answered = False
        try:
            await write_all(target_writer, upstream_request_head(head, target))
            try:
                await relay_body(client_reader, target_writer, request_framing)
            except MalformedMessage as exc:
                raise ProxyRefusal(HTTPStatus.BAD_REQUEST, str(exc)) from None
            response = await read_final_response_head(target_reader, client_writer)
            await write_all(client_writer, downstream_response_head(response))
            answered = True
            await relay_body(target_reader, client_writer, response_framing(head, response))
        except TimeoutError:
            if answered:
                raise
            raise ProxyRefusal(
                HTTPStatus.GATEWAY_TIMEOUT,
                f"{target.authority} did not answer within {IO_TIMEOUT_S:g} s",
            ) from None
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            MalformedMessage,
        ) as exc:
            if answered:
                raise
            raise ProxyRefusal(
                HTTPStatus.BAD_GATEWAY,
                f"{target.authority} broke off the exchange: {type(exc).__name__}",
            ) from None
        finally:
            target_writer.close()


async def within_timeout(awaitable: Awaitable[_T]) -> _T:
    async with asyncio.timeout(IO_TIMEOUT_S):
        return await awaitable


async def write_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    # A reader that stops reading must not pin this task forever through back-pressure.
    await within_timeout(writer.drain())


async def hold_until_client_leaves(reader: asyncio.StreamReader) -> None:
    """Never answer; read and discard what the client sends so that its leaving is noticed."""
    while await reader.read(COPY_CHUNK_BYTES):
        pass


async def read_head(reader: asyncio.StreamReader) -> tuple[str, Headers]:
    raw = await within_timeout(reader.readuntil(b"\r\n\r\n"))
    start_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    headers: Headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        # Folded lines and whitespace before the colon are how requests get smuggled past proxies.
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise MalformedMessage(f"malformed header line {line!r}")
        headers.append((name, value.strip(" \t")))
    return start_line, headers


async def read_request_head(reader: asyncio.StreamReader) -> RequestHead:
    try:
        start_line, headers = await read_head(reader)
    except asyncio.LimitOverrunError:
        raise ProxyRefusal(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
            f"request head larger than {MAX_HEAD_BYTES} bytes",
        ) from None
    except MalformedMessage as exc:
        raise ProxyRefusal(HTTPStatus.BAD_REQUEST, str(exc)) from None
    parts = start_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProxyRefusal(HTTPStatus.BAD_REQUEST, f"malformed request line {start_line!r}")
    method, target, _version = parts
    return RequestHead(method=method, target=target, headers=headers)


async def read_final_response_head(
    reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> ResponseHead:
    """The target's final response head; interim (1xx) responses are passed on as they come."""
    while True:
        start_line, headers = await read_head(reader)
        parts = start_line.split(" ", 2)
        if (
            len(parts) < 2
            or not parts[0].startswith("HTTP/1.")
            or not re.fullmatch(r"[1-5][0-9][0-9]", parts[1])
        ):
            raise MalformedMessage(f"malformed status line {start_line!r}")
        response = ResponseHead(
            status=int(parts[1]), reason=parts[2] if len(parts) == 3 else "", headers=headers
        )
        # 101 would switch protocols, which cannot happen: Upgrade is never forwarded.
        if not 100 <= response.status < 200 or response.status == 101:
            return response
        await write_all(client_writer, format_head(f"HTTP/1.1 {parts[1]} {response.reason}", []))


def forward_target(target: str) -> ForwardTarget:
    """Check an absolute-form target and say where to connect; refuse anything off this machine."""
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise ProxyRefusal(
            HTTPStatus.BAD_REQUEST,
            f"{target!r}: send an absolute http:// URL (https would need CONNECT, which the lab "
            "proxy does not tunnel)",
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyRefusal(HTTPStatus.BAD_REQUEST, f"{target!r}: invalid port") from None
    host = parts.hostname
    if host == "localhost":
        # Pinned rather than resolved: whatever a resolver says, the lab never leaves the machine.
        connect_host = "127.0.0.1"
    else:
        try:
            is_loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            raise ProxyRefusal(
                HTTPStatus.FORBIDDEN,
                f"{host}: the lab proxy forwards only to loopback (127.0.0.1, localhost, ::1)",
            )
        connect_host = host
    authority = parts.netloc.rpartition("@")[2]  # credentials in the URL are not forwarded
    origin_form = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ForwardTarget(
        connect_host=connect_host, port=port, authority=authority, origin_form=origin_form
    )


def header_tokens(headers: Headers, name: str) -> list[str]:
    return [
        token.strip().lower()
        for key, value in headers
        if key.lower() == name
        for token in value.split(",")
        if token.strip()
    ]


def end_to_end_headers(headers: Headers, also_drop: frozenset[str] = frozenset()) -> Headers:
    drop = (HOP_BY_HOP_HEADERS | set(header_tokens(headers, "connection")) | also_drop) - (
        FRAMING_HEADERS
    )
    return [(name, value) for name, value in headers if name.lower() not in drop]


def format_head(start_line: str, headers: Headers) -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def upstream_request_head(head: RequestHead, target: ForwardTarget) -> bytes:
    headers = [
        ("Host", target.authority),
        *end_to_end_headers(head.headers, also_drop=frozenset({"host"})),
        ("Connection", "close"),
    ]
    return format_head(f"{head.method} {target.origin_form} HTTP/1.1", headers)


def downstream_response_head(response: ResponseHead) -> bytes:
    headers = [*end_to_end_headers(response.headers), ("Connection", "close")]
    return format_head(f"HTTP/1.1 {response.status} {response.reason}".rstrip(), headers)


def body_framing(headers: Headers, *, is_request: bool) -> BodyFraming:
    codings = header_tokens(headers, "transfer-encoding")
    lengths = {
        value.strip()
        for key, values in headers
        if key.lower() == "content-length"
        for value in values.split(",")
    }
    if codings:
        if is_request and lengths:
            raise MalformedMessage("a request carries both Transfer-Encoding and Content-Length")
        if codings[-1] == "chunked":
            return "chunked"
        if is_request:
            raise MalformedMessage("a request body must be chunked or have a Content-Length")
        return "until-close"
    if lengths:
        length = lengths.pop() if len(lengths) == 1 else ""
        if not (length.isascii() and length.isdigit()):
            raise MalformedMessage(f"invalid Content-Length in {headers!r}")
        return int(length)
    return 0 if is_request else "until-close"


def response_framing(request: RequestHead, response: ResponseHead) -> BodyFraming:
    if request.method == "HEAD" or response.status in (204, 304) or response.status < 200:
        return 0
    return body_framing(response.headers, is_request=False)


async def relay_body(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, framing: BodyFraming
) -> None:
    """Copy one message body verbatim, stopping where its framing says it ends."""
    if framing == "chunked":
        await relay_chunked(source, sink)
    elif framing == "until-close":
        while chunk := await within_timeout(source.read(COPY_CHUNK_BYTES)):
            await write_all(sink, chunk)
    else:
        await relay_exactly(source, sink, framing)


async def relay_exactly(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, length: int
) -> None:
    remaining = length
    while remaining:
        chunk = await within_timeout(source.read(min(remaining, COPY_CHUNK_BYTES)))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", remaining)
        await write_all(sink, chunk)
        remaining -= len(chunk)


async def relay_chunked(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    # Parsed, not just copied, because the proxy must know where the body ends: a keep-alive
    # target may ignore "Connection: close" and never send EOF.
    while True:
        size_line = await within_timeout(source.readuntil(b"\r\n"))
        size_token = size_line[:-2].split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_token):
            raise MalformedMessage(f"malformed chunk size {size_line!r}")
        await write_all(sink, size_line)
        size = int(size_token, 16)
        if size == 0:
            break
        await relay_exactly(source, sink, size + 2)  # the data and its CRLF
    while True:  # trailer fields, up to the empty line that ends the message
        line = await within_timeout(source.readuntil(b"\r\n"))
        await write_all(sink, line)
        if line == b"\r\n":
            return


async def read_small_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
    """A control request's body, which is a few bytes of JSON with a Content-Length."""
    try:
        framing = body_framing(headers, is_request=True)
    except MalformedMessage as exc:
        raise ProxyRefusal(HTTPStatus.BAD_REQUEST, str(exc)) from None
    if not isinstance(framing, int):
        raise ProxyRefusal(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
    if framing > MAX_HEAD_BYTES:
        raise ProxyRefusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "a control body is a few bytes")
    return await within_timeout(reader.readexactly(framing))


async def send_json(
    writer: asyncio.StreamWriter,
    status: HTTPStatus,
    payload: dict[str, object],
    headers: Headers | None = None,
) -> None:
    body = json.dumps(payload).encode()
    head = format_head(
        f"HTTP/1.1 {status.value} {status.phrase}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *(headers or []),
            ("Connection", "close"),
        ],
    )
    await write_all(writer, head + body)


async def run_proxy(proxy: VantageProxy, port: int, host: str = "127.0.0.1") -> None:
    """Serve ``proxy`` until SIGTERM/SIGINT. Loopback by default: the lab is never exposed."""
    connections: set[asyncio.Task[None]] = set()

    def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Kept in a set so that every connection can be cancelled at shutdown.
        task = asyncio.create_task(proxy.handle_connection(reader, writer))
        connections.add(task)
        task.add_done_callback(connections.discard)

    server = await asyncio.start_server(on_connection, host, port, limit=MAX_HEAD_BYTES)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("vantage %s proxy listening on %s:%d", proxy.name, host, port)
    async with server:
        await stopping.wait()
        server.close()
        # Dropped requests never end on their own; without this, closing would wait for their
        # clients to give up.
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
    log.info("vantage %s proxy stopped", proxy.name)
