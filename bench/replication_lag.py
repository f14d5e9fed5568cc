"""Replication lag at a steady 5,000 events/s: a real JetStream, the real publisher and mirror.

A nats-server with JetStream runs as the lab runs it, on a free port in a temporary directory.
The primary's `BookPublisher` and the DR's `BookMirror` run in separate processes, as the two
OMSes do. The publisher records book events at a paced rate for a few seconds; the mirror keeps
the lag it computes for every event it applies: from `record` (the event's published_at) to the
event being in the DR book, the figure the DR OMS reports as its lag on /health.
Target (issue 14): p99 <= 10 ms at 5,000 events/s. Then the publisher's throughput: 100,000
events recorded flat out, until the stream has stored them all. Target: >= 20,000 events/s.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from activities.replication import (
    BookMirror,
    BookPublisher,
    connect,
    ensure_stream,
)
from bench.book_apply import make_events
from domain.book import Book
from domain.topology import ReplicationConfig
from lab import processes, stack
from lab.stack import LabPaths

RATE = 5_000
DURATION_S = 5.0
SYSTEM = "bench"
# Generous: a publisher that cannot keep up still gets to finish, so its lag is measured.
DRAIN_TIMEOUT_S = 120.0
START_TIMEOUT_S = 30.0
THROUGHPUT_EVENTS = 100_000
THROUGHPUT_SLICE = 500
THROUGHPUT_SYSTEM = "bench-throughput"


class LagRecordingMirror(BookMirror):
    """The mirror as the DR runs it, keeping its lag figure for every event, not just the last."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lags_s: list[float] = []
        self.applied_at: list[float] = []

    async def _on_message(self, msg: Msg) -> None:
        before = self.last_applied_at
        await super()._on_message(msg)
        # A redelivered or malformed message moves nothing: it has no lag of its own.
        if self.last_applied_at is not before:
            self.lags_s.append(self.last_lag_s)
            self.applied_at.append(time.perf_counter())


def _mirror_process(nats_url: str, conn: Connection) -> None:
    conn.send(asyncio.run(_mirror(nats_url, conn)))


async def _mirror(nats_url: str, conn: Connection) -> dict[str, Any]:
    config = ReplicationConfig(nats_url=nats_url)
    nc = await connect(config)
    mirror = LagRecordingMirror(nc.jetstream(), config, SYSTEM, Book())
    try:
        await mirror.start()
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # the publisher has flushed everything
        applied, last = await mirror.catch_up(DRAIN_TIMEOUT_S)
    finally:
        await mirror.stop()
        await nc.close()
    span = mirror.applied_at[-1] - mirror.applied_at[0] if len(mirror.applied_at) > 1 else 0.0
    return {
        "applied_seq": applied,
        "stream_seq": last,
        "lags_s": mirror.lags_s,
        "apply_span_s": span,
        "malformed": mirror.malformed_events,
    }


async def _create_stream(config: ReplicationConfig) -> None:
    nc = await connect(config)
    try:
        await ensure_stream(nc.jetstream(), config)
    finally:
        await nc.close()


async def _publish(config: ReplicationConfig, rate: int, duration_s: float) -> dict[str, Any]:
    events = make_events(int(rate * duration_s))
    nc = await connect(config)
    publisher = BookPublisher(config, SYSTEM)
    publisher.start()
    book = Book()
    max_backlog = 0
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while sent < len(events):
            # Catch up with the schedule rather than sleep per event: a sleep is ~1 ms at best,
            # so events go out in small bursts that average to the rate.
            due = min(int((loop.time() - started) * rate) + 1, len(events))
            for event in events[sent:due]:
                publisher.record(book, 1, event)
            sent = due
            max_backlog = max(max_backlog, publisher.backlog)
            await asyncio.sleep(0.001)
        offered_s = loop.time() - started
        if not await publisher.flush(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"{publisher.backlog} events still unpublished after flushing")
        stored_s = loop.time() - started
    finally:
        await publisher.stop()
        await nc.close()
    return {
        "events": len(events),
        "offered_events_per_s": len(events) / offered_s,
        "stored_events_per_s": len(events) / stored_s,
        "max_outbox_backlog": max_backlog,
    }


async def _publish_flat_out(config: ReplicationConfig, events: int) -> dict[str, Any]:
    """Throughput: record events as fast as the recording loop goes, until all are stored.

    Recorded in slices with a yield between them, as an OMS records between its own awaits,
    so the publisher runs alongside; the rate counts from the first record to the last ack."""
    batch = make_events(events)
    nc = await connect(config)
    publisher = BookPublisher(config, THROUGHPUT_SYSTEM)
    publisher.start()
    book = Book()
    try:
        started = time.perf_counter()
        for start in range(0, len(batch), THROUGHPUT_SLICE):
            for event in batch[start : start + THROUGHPUT_SLICE]:
                publisher.record(book, 1, event)
            await asyncio.sleep(0)
        recorded_s = time.perf_counter() - started
        if not await publisher.flush(DRAIN_TIMEOUT_S):
            raise RuntimeError(f"{publisher.backlog} events still unpublished after flushing")
        stored_s = time.perf_counter() - started
        # Every event once: the stream holds exactly the events both runs recorded.
        stored = (await nc.jetstream().stream_info(config.stream)).state.messages
    finally:
        await publisher.stop()
        await nc.close()
    return {
        "throughput_events": events,
        "throughput_recorded_events_per_s": events / recorded_s,
        "throughput_stored_events_per_s": events / stored_s,
        "stream_messages": stored,
    }


def run(rate: int = RATE, duration_s: float = DURATION_S) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-replication-") as tmp:
        paths = LabPaths(Path(tmp))
        _, nats = stack.build_specs(paths, stack.choose_ports(auto=True))["nats"]
        pid = processes.start(nats)
        try:
            processes.wait_ready(nats, pid, START_TIMEOUT_S)
            config = ReplicationConfig(nats_url=f"nats://127.0.0.1:{nats.port}")
            asyncio.run(_create_stream(config))
            published, mirrored = _publish_while_mirroring(config, rate, duration_s)
            throughput = asyncio.run(_publish_flat_out(config, THROUGHPUT_EVENTS))
        finally:
            processes.stop(pid)
    if throughput["stream_messages"] != published["events"] + THROUGHPUT_EVENTS:
        raise RuntimeError(f"stream holds {throughput['stream_messages']} events, not one each")
    if mirrored["applied_seq"] < mirrored["stream_seq"] or mirrored["malformed"]:
        raise RuntimeError(f"the mirror did not apply the whole stream: {mirrored}")
    lags_ms = sorted(lag * 1000 for lag in mirrored["lags_s"])
    percentiles = statistics.quantiles(lags_ms, n=100, method="inclusive")
    return {
        "target_events_per_s": rate,
        "duration_s": duration_s,
        **published,
        "applied_events": len(lags_ms),
        "applied_events_per_s": len(lags_ms) / mirrored["apply_span_s"],
        "lag_p50_ms": percentiles[49],
        "lag_p99_ms": percentiles[98],
        "lag_max_ms": lags_ms[-1],
        **throughput,
    }


def _publish_while_mirroring(
    config: ReplicationConfig, rate: int, duration_s: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    # A process of its own, as the DR OMS is: sharing the publisher's event loop would add the
    # publisher's work to every event's lag.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    mirror = context.Process(target=_mirror_process, args=(config.nats_url, theirs), daemon=True)
    mirror.start()
    try:
        if not ours.poll(START_TIMEOUT_S):
            raise RuntimeError("the mirror process did not start")
        ours.recv()
        published = asyncio.run(_publish(config, rate, duration_s))
        ours.send("flushed")
        if not ours.poll(DRAIN_TIMEOUT_S + START_TIMEOUT_S):
            raise RuntimeError("the mirror did not report")
        mirrored: dict[str, Any] = ours.recv()
    finally:
        mirror.join(START_TIMEOUT_S)
        if mirror.is_alive():
            mirror.terminate()
            mirror.join()
    return published, mirrored


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
