"""The position stream on NATS JetStream: publishing the book and mirroring it.

The active OMS publishes every book event in order; a standby OMS applies them in stream order
with the same pure ``Book.apply`` so both books agree once the standby has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from datetime import UTC, datetime

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


class BookPublisher:
    """Applies events to the active book and publishes them, in order, exactly once.

    Events go to an outbox first, so a NATS outage delays replication instead of losing events;
    each carries a message id so a publish retried after a lost ack is stored once.
    """

    def __init__(self, js: JetStreamContext, config: ReplicationConfig, system: str) -> None:
        self._js = js
        self._config = config
        self._system = system
        self._outbox: deque[tuple[str, str, bytes, datetime]] = deque()
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._local_seq = 0
        self.last_published_seq = 0
        self.last_published_event_at: datetime | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="book-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def backlog(self) -> int:
        return len(self._outbox)

    def record(self, book: Book, epoch: int, event: OrderEvent | FillEvent | PositionEvent) -> None:
        book.apply(event)
        self._local_seq += 1
        envelope = BookEnvelope(
            system=self._system, epoch=epoch, published_at=datetime.now(UTC), event=event
        )
        msg_id = (
            f"{self._system}-e{epoch}-{envelope.published_at.timestamp():.6f}-{self._local_seq}"
        )
        subject = system_subject(self._config, self._system, event.kind)
        payload = envelope.model_dump_json().encode()
        self._outbox.append((subject, msg_id, payload, envelope.published_at))
        self._drained.clear()
        self._wakeup.set()

    async def flush(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _drain(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._outbox:
                subject, msg_id, payload, event_at = self._outbox[0]
                try:
                    ack = await self._js.publish(
                        subject, payload, timeout=2.0, headers={"Nats-Msg-Id": msg_id}
                    )
                except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                    log.warning("publish failed, retrying: %s", type(exc).__name__)
                    await asyncio.sleep(0.2)
                    continue
                self._outbox.popleft()
                self.last_published_seq = ack.seq
                self.last_published_event_at = event_at
            self._drained.set()


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
