"""The position stream on NATS JetStream: publishing the book and mirroring it.

The active OMS publishes every book event in order; a standby OMS applies them in stream order
with the same pure ``Book.apply`` so both books agree once the standby has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig

from domain.book import Book, BookEnvelope, FillEvent, OrderEvent, PositionEvent
from domain.topology import ReplicationConfig

log = logging.getLogger(__name__)

EVENT_KINDS = ("order", "fill", "position")
MSG_ID = "Nats-Msg-Id"
NO_RESPONDERS = "503"
# Publishes in flight at once: also what a failed connection may have to send again.
PIPELINE_WINDOW = 1000
ACK_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
RECONNECT_PAUSE_S = 0.2


def system_subject(config: ReplicationConfig, system: str, kind: str = ">") -> str:
    return f"{config.subject_prefix}.{system}.{kind}"


async def connect(config: ReplicationConfig, timeout_s: float = 2.0) -> Client:
    return await nats.connect(
        config.nats_url,
        connect_timeout=timeout_s,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        allow_reconnect=True,
    )


async def ensure_stream(js: JetStreamContext, config: ReplicationConfig) -> None:
    """Create the stream if absent. Idempotent; an existing stream is left as it is."""
    try:
        await js.stream_info(config.stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=config.stream,
                subjects=[f"{config.subject_prefix}.>"],
                duplicate_window=120.0,
            )
        )


async def last_sequence(js: JetStreamContext, config: ReplicationConfig, system: str) -> int:
    """The stream sequence of the system's newest event (0 when it has none)."""
    last = 0
    for kind in EVENT_KINDS:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            msg = await js.get_last_msg(config.stream, system_subject(config, system, kind))
            last = max(last, msg.seq or 0)
    return last


class _Outgoing(NamedTuple):
    subject: str
    msg_id: str
    payload: bytes
    event_at: datetime


class _ConnectionLost(Exception):
    """The publisher's connection closed, or an ack did not come in time: start a new one."""


class BookPublisher:
    """Applies events to the active book and publishes them, pipelined, in order, exactly once.

    Events go to an outbox first, so a NATS outage delays replication instead of losing events.
    Up to ``PIPELINE_WINDOW`` publishes are in flight at once and their acks are collected as
    they come, in order; ``last_published_seq`` moves only over a run of acknowledged events.

    Why the stream's order cannot break:
    - One connection delivers in order, and the publisher's own connection never reconnects
      (``allow_reconnect=False``): a client that reconnects replays what it buffered while
      disconnected, which would store events sent after the lost ones ahead of them. When the
      connection fails, it is dropped with everything it held.
    - A new connection resends from the first unacknowledged event. Events the old connection
      did store are not stored twice: each carries a ``Nats-Msg-Id``, and JetStream drops a
      repeat of an id it stored within the stream's duplicate window (120 s). Whatever the old
      connection still delivers late is a repeat of the same ordered run, so it is dropped too.
    - The first event on a new connection is published alone and awaited: a server that has
      just restarted may accept connections before its stream is loaded, and would refuse one
      event while storing the next. Only once one event is stored is the pipeline opened.

    Not prevented: a stream that refuses one event in the middle of an open pipeline on a live
    connection and then stores the next ones (a server refusing a write it cannot make at that
    moment). It is counted in ``order_breaks`` and logged as an error, and the events are
    resent.
    """

    def __init__(self, config: ReplicationConfig, system: str) -> None:
        self._config = config
        self._system = system
        # Recorded, not yet sent on the current connection; then sent, not yet acknowledged.
        self._outbox: deque[_Outgoing] = deque()
        # (event, the number its ack comes back under, when it was sent on the loop's clock)
        self._in_flight: deque[tuple[_Outgoing, int, float]] = deque()
        # Answers by number, until the head of the pipeline reaches them: a stream sequence, or
        # why the stream refused the event.
        self._answers: dict[int, int | str] = {}
        self._published = 0
        self._progress = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._local_seq = 0
        self.last_published_seq = 0
        self.last_published_event_at: datetime | None = None
        self.connections = 0
        self.resent_events = 0
        self.order_breaks = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever(), name="book-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def backlog(self) -> int:
        """Events recorded and not yet acknowledged by the stream."""
        return len(self._outbox) + len(self._in_flight)

    def record(self, book: Book, epoch: int, event: OrderEvent | FillEvent | PositionEvent) -> None:
        book.apply(event)
        self._local_seq += 1
        envelope = BookEnvelope(
            system=self._system, epoch=epoch, published_at=datetime.now(UTC), event=event
        )
        msg_id = (
            f"{self._system}-e{epoch}-{envelope.published_at.timestamp():.6f}-{self._local_seq}"
        )
        self._outbox.append(
            _Outgoing(
                system_subject(self._config, self._system, event.kind),
                msg_id,
                envelope.model_dump_json().encode(),
                envelope.published_at,
            )
        )
        self._drained.clear()
        self._progress.set()

    async def flush(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _publish_forever(self) -> None:
        unreachable = False
        while True:
            lost = asyncio.Event()

            def on_lost(lost: asyncio.Event = lost) -> None:
                lost.set()
                self._progress.set()

            try:
                nc = await _connect_once(self._config, on_lost)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                # Said once per outage; the retries every RECONNECT_PAUSE_S go to debug.
                (log.debug if unreachable else log.warning)(
                    "replication stream unreachable, retrying: %s", type(exc).__name__
                )
                unreachable = True
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            if unreachable:
                log.warning("replication stream reachable again; %d event(s) to send", self.backlog)
            unreachable = False
            self.connections += 1
            try:
                await self._publish_on(nc, lost)
            except (_ConnectionLost, nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                log.warning(
                    "publishing interrupted (%s); resending from the first unacknowledged event",
                    str(exc) or type(exc).__name__,
                )
            except Exception:
                # Whatever else went wrong, replication must not stop for good: start over.
                log.exception("publishing failed; resending from the first unacknowledged event")
            finally:
                self._requeue_unacknowledged()
                # A hung server must not hold the publisher: the events are queued again already.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT_S)
            await asyncio.sleep(RECONNECT_PAUSE_S)

    async def _publish_on(self, nc: Client, lost: asyncio.Event) -> None:
        """Publish from the first unacknowledged event until this connection fails.

        Each publish names its own reply subject, ``<inbox>.<n>``, and one subscription takes
        every ack: a JetStream publish is a plain NATS publish whose reply is the ack, so the
        pipeline needs no future, lock or id generator per event (nats-py's ``publish_async``
        spends more on those than on the publish)."""
        if self._outbox:
            # Alone, and awaited: see the class docstring.
            first = self._outbox[0]
            ack = await nc.jetstream().publish(
                first.subject, first.payload, timeout=ACK_TIMEOUT_S, headers={MSG_ID: first.msg_id}
            )
            self._outbox.popleft()
            self._acknowledged(first, ack.seq)
            self._collect_acks()
        inbox = nc.new_inbox()
        self._answers = {}
        sub = await nc.subscribe(f"{inbox}.*", cb=self._on_answer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Cleared before looking, so an event recorded or acknowledged meanwhile wakes us.
                self._progress.clear()
                if lost.is_set():
                    raise _ConnectionLost("the connection to NATS closed")
                if (refused := self._refused_head()) is not None:
                    raise _ConnectionLost(f"the stream refused an event: {refused}")
                while self._outbox and len(self._in_flight) < PIPELINE_WINDOW:
                    entry = self._outbox[0]
                    # Numbers are never reused, so a late answer on a connection given up
                    # cannot be taken for one on this connection.
                    self._published += 1
                    number = self._published
                    await nc.publish(
                        entry.subject,
                        entry.payload,
                        reply=f"{inbox}.{number}",
                        headers={MSG_ID: entry.msg_id},
                    )
                    # Popped only once it is on its way: a publish that raised leaves it first.
                    self._outbox.popleft()
                    self._in_flight.append((entry, number, loop.time()))
                if not self._in_flight:
                    await self._progress.wait()
                    continue
                waited = loop.time() - self._in_flight[0][2]
                if waited >= ACK_TIMEOUT_S:
                    raise _ConnectionLost(f"no ack within {ACK_TIMEOUT_S:g} s")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ACK_TIMEOUT_S - waited):
                        await self._progress.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_answer(self, msg: Msg) -> None:
        """One JetStream ack (or refusal), matched to its publish by the reply subject."""
        number = int(msg.subject.rpartition(".")[2])
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            self._answers[number] = "no stream answered (no responders)"
        else:
            try:
                answer = json.loads(msg.data)
                seq = answer["seq"] if "error" not in answer else None
            except (ValueError, KeyError, TypeError):
                answer, seq = {"error": {"description": "unreadable ack"}}, None
            self._answers[number] = (
                seq if isinstance(seq, int) else str(answer.get("error", "refused"))
            )
        self._collect_acks()

    def _collect_acks(self) -> None:
        """Move past every acknowledged event at the head of the pipeline, in order."""
        while self._in_flight:
            entry, number, _ = self._in_flight[0]
            answer = self._answers.get(number)
            if not isinstance(answer, int):
                break  # not answered yet, or refused: the publishing loop sees a refusal
            del self._answers[number]
            self._in_flight.popleft()
            self._acknowledged(entry, answer)
        if not self._outbox and not self._in_flight:
            self._drained.set()
        self._progress.set()

    def _acknowledged(self, entry: _Outgoing, seq: int) -> None:
        # A repeat of a stored event is acknowledged with its first sequence, so the published
        # watermark never moves backwards.
        self.last_published_seq = max(self.last_published_seq, seq)
        self.last_published_event_at = entry.event_at

    def _refused_head(self) -> str | None:
        if not self._in_flight:
            return None
        answer = self._answers.get(self._in_flight[0][1])
        return answer if isinstance(answer, str) else None

    def _requeue_unacknowledged(self) -> None:
        """Put every unacknowledged event back at the front of the outbox, in order."""
        unacknowledged, self._in_flight = list(self._in_flight), deque()
        answers, self._answers = self._answers, {}
        if not unacknowledged:
            return
        refused = isinstance(answers.get(unacknowledged[0][1]), str)
        stored_after = [
            entry.msg_id
            for entry, number, _ in unacknowledged[1:]
            if isinstance(answers.get(number), int)
        ]
        if refused and stored_after:
            self.order_breaks += 1
            log.error(
                "the stream refused %s and stored %d later event(s) before it (first %s): "
                "their stream order differs from the book's",
                unacknowledged[0][0].msg_id,
                len(stored_after),
                stored_after[0],
            )
        self.resent_events += len(unacknowledged)
        self._outbox.extendleft(entry for entry, _, _ in reversed(unacknowledged))


async def _connect_once(config: ReplicationConfig, on_lost: Callable[[], None]) -> Client:
    """A connection that never reconnects (see BookPublisher); ``on_lost`` when it ends."""

    async def ended() -> None:
        on_lost()

    async def quiet(error: Exception) -> None:
        log.debug("replication connection: %s", error)

    return await nats.connect(
        config.nats_url,
        connect_timeout=CONNECT_TIMEOUT_S,
        allow_reconnect=False,
        disconnected_cb=ended,
        closed_cb=ended,
        error_cb=quiet,
    )


class BookMirror:
    """Follows the stream from the book's watermark and applies every event once, in order."""

    def __init__(
        self, js: JetStreamContext, config: ReplicationConfig, system: str, book: Book
    ) -> None:
        self._js = js
        self._config = config
        self._system = system
        self.book = book
        self._sub: JetStreamContext.PushSubscription | None = None
        self.last_applied_at: datetime | None = None
        self.last_lag_s: float = 0.0
        self.malformed_events = 0
        self._progress = asyncio.Condition()

    async def start(self) -> None:
        start_seq = self.book.watermark.seq + 1
        self._sub = await self._js.subscribe(
            system_subject(self._config, self._system),
            stream=self._config.stream,
            ordered_consumer=True,
            cb=self._on_message,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
            ),
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            envelope = BookEnvelope.model_validate_json(msg.data)
        except ValueError:
            # Never silently dropped: counted, reported on /health, and the watermark still
            # moves so one bad message cannot stall the mirror forever.
            self.malformed_events += 1
            log.error("malformed event at stream seq %s skipped", seq)
            self.book.watermark = self.book.watermark.model_copy(update={"seq": seq})
        else:
            if self.book.apply_envelope(seq, envelope):
                now = datetime.now(UTC)
                self.last_applied_at = now
                self.last_lag_s = max((now - envelope.published_at).total_seconds(), 0.0)
        async with self._progress:
            self._progress.notify_all()

    async def catch_up(self, timeout_s: float) -> tuple[int, int]:
        """Wait until the book has applied the stream's last event; returns (applied, last)."""
        target = await last_sequence(self._js, self._config, self._system)
        with contextlib.suppress(TimeoutError):
            async with self._progress:
                await asyncio.wait_for(
                    self._progress.wait_for(lambda: self.book.watermark.seq >= target), timeout_s
                )
        return self.book.watermark.seq, target
