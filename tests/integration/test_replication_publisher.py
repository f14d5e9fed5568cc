"""The pipelined position-stream publisher against a real NATS JetStream that fails under it.

Each scenario records a run of numbered events while the server dies or hangs with publishes in
flight, and then reads the whole stream back: every event is there once, in the order the book
recorded it, with nothing missing.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.api import DeliverPolicy

from activities.replication import BookPublisher, connect, ensure_stream, system_subject
from domain.book import Book, PositionEvent
from domain.topology import ReplicationConfig
from lab import processes
from tests.conftest import NatsServer

SYSTEM = "orders"
EVENTS = 20_000
# Generous liveness bounds for a loaded machine; no test asserts a speed.
DEADLINE_S = 90.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A NATS of this test's own: the scenarios kill it."""
    nats = NatsServer(tmp_path)
    nats.start()
    try:
        config = ReplicationConfig(nats_url=nats.url)
        nc = await connect(config)
        try:
            await ensure_stream(nc.jetstream(), config)
        finally:
            await nc.close()
        yield nats
    finally:
        nats.stop()


def record_numbered(publisher: BookPublisher, book: Book, first: int, count: int) -> None:
    for number in range(first, first + count):
        publisher.record(book, 1, PositionEvent(symbol="ESM5", qty=number))


async def wait_for(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.01)  # poll


async def stored_numbers(config: ReplicationConfig) -> list[int]:
    """Every event of the system in stream order, read back through an ordered consumer."""
    nc = await connect(config)
    try:
        js = nc.jetstream()
        total = (await js.stream_info(config.stream)).state.messages
        sub = await js.subscribe(
            system_subject(config, SYSTEM),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        numbers = []
        for _ in range(total):
            msg = await sub.next_msg(timeout=DEADLINE_S)
            numbers.append(json.loads(msg.data)["event"]["qty"])
        await sub.unsubscribe()
        return numbers
    finally:
        await nc.close()


async def test_a_server_killed_with_publishes_in_flight_loses_reorders_and_repeats_nothing(
    server: NatsServer,
) -> None:
    config = ReplicationConfig(nats_url=server.url)
    publisher = BookPublisher(config, SYSTEM)
    book = Book()
    publisher.start()
    try:
        record_numbered(publisher, book, 0, EVENTS)
        await wait_for(lambda: publisher.last_published_seq >= 2_000, "the first acks")
        processes.signal_group(server.pid, signal.SIGKILL)
        assert processes.wait_until(lambda: not processes.alive(server.pid), 10)
        # Killed mid-run: events were still on their way or waiting when the server died.
        assert publisher.backlog > 0
        # And the book keeps recording while the stream is gone.
        record_numbered(publisher, book, EVENTS, 1_000)
        server.start()
        assert await publisher.flush(DEADLINE_S), f"{publisher.backlog} events never stored"
    finally:
        await publisher.stop()

    assert publisher.connections >= 2 and publisher.resent_events > 0
    assert publisher.order_breaks == 0
    assert await stored_numbers(config) == list(range(EVENTS + 1_000))


async def test_a_server_that_hangs_past_the_ack_timeout_still_gets_every_event_once_in_order(
    server: NatsServer,
) -> None:
    # The publisher gives up on the hung connection and sends again on a new one; when the
    # server resumes it reads both, and must store each event once, in order.
    config = ReplicationConfig(nats_url=server.url)
    publisher = BookPublisher(config, SYSTEM)
    book = Book()
    publisher.start()
    try:
        record_numbered(publisher, book, 0, EVENTS)
        await wait_for(lambda: publisher.last_published_seq >= 2_000, "the first acks")
        processes.signal_group(server.pid, signal.SIGSTOP)
        try:
            await wait_for(
                lambda: publisher.connections >= 2 or publisher.resent_events > 0,
                "the publisher to give up on the hung connection",
            )
        finally:
            processes.signal_group(server.pid, signal.SIGCONT)
        assert await publisher.flush(DEADLINE_S), f"{publisher.backlog} events never stored"
    finally:
        await publisher.stop()

    assert publisher.resent_events > 0 and publisher.order_breaks == 0
    assert await stored_numbers(config) == list(range(EVENTS))
