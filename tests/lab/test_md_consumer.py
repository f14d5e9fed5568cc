"""The lab market-data consumer, run as a real process against a real NATS and two real sources.

The health monitor is played by the test: it writes ``md/lab-md/active`` itself, as the monitor
would, and watches the consumer's ``/health`` for what a user of the feed would see.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from lab.processes import ProcessSpec, free_port, http_ok, start, stop, wait_ready, wait_until
from tests.conftest import NatsServer

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run from a checkout, not an install: the child process finds `lab` through the repo root.
CHILD_PYTHONPATH = os.pathsep.join(filter(None, [str(REPO_ROOT), os.getenv("PYTHONPATH")]))
FEED = "lab-md"
KEY = f"md/{FEED}/active"
BUCKET = "dr-leases"
POLL_MS = 50
SWITCH_DEADLINE_S = 2.0
DEADLINE_S = 10.0

Json = dict[str, Any]
StartConsumer = Callable[..., "Consumer"]


@dataclass(frozen=True)
class Source:
    name: str
    url: str


@dataclass(frozen=True)
class Consumer:
    url: str
    log_path: Path

    def health(self) -> Json:
        response = httpx.get(f"{self.url}/health", timeout=2.0)
        response.raise_for_status()
        body: Json = response.json()
        return body

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def start_process(name: str, args: list[str], port: int, log_dir: Path) -> tuple[ProcessSpec, int]:
    spec = ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", *args],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"PYTHONPATH": CHILD_PYTHONPATH},
        log_path=log_dir / f"{name}.log",
    )
    return spec, start(spec)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Source]]:
    """md-a and md-b, ticking fast so that every poll sees a tick."""
    log_dir = tmp_path_factory.mktemp("md-sources")
    started: list[int] = []
    found: dict[str, Source] = {}
    try:
        for name in ("md-a", "md-b"):
            port = free_port()
            args = ["lab.marketdata", "--name", name, "--port", str(port)]
            spec, pid = start_process(name, [*args, "--tick-interval-ms", "20"], port, log_dir)
            started.append(pid)
            wait_ready(spec, pid, timeout_s=20)
            found[name] = Source(name, f"http://127.0.0.1:{port}")
        yield found
    finally:
        for pid in started:
            stop(pid)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS of this test's own, so each scenario starts with the key unset."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def start_consumer(tmp_path: Path, sources: dict[str, Source]) -> Iterator[StartConsumer]:
    """Starts the consumer, defaulting to md-a; stops it at teardown."""
    started: list[int] = []

    def _start(nats_url: str, wait: bool = True) -> Consumer:
        port = free_port()
        args = [
            "lab.md_consumer",
            *("--feed", FEED, "--nats", nats_url, "--bucket", BUCKET, "--port", str(port)),
            *("--default-source", "md-a", "--default-url", sources["md-a"].url),
            *("--poll-ms", str(POLL_MS)),
        ]
        spec, pid = start_process("md-consumer", args, port, tmp_path)
        started.append(pid)
        if wait:
            wait_ready(spec, pid, timeout_s=20)
        return Consumer(f"http://127.0.0.1:{port}", spec.log_path)

    try:
        yield _start
    finally:
        for pid in started:
            stop(pid)


def active_record(source: Source, reason: str) -> bytes:
    record = {
        "feed": FEED,
        "source": source.name,
        "url": source.url,
        "switched_at": datetime.now(UTC).isoformat(),
        "reason": reason,
    }
    return json.dumps(record).encode()


def write_active(nats_url: str, value: bytes) -> int:
    """Write the key as the health monitor does; returns the new revision."""

    async def put() -> int:
        nc = await nats.connect(nats_url)
        try:
            kv = await nc.jetstream().create_key_value(bucket=BUCKET, history=16)
            return await kv.put(KEY, value)
        finally:
            await nc.close()

    return asyncio.run(put())


def health_status(consumer: Consumer) -> int | None:
    try:
        return httpx.get(f"{consumer.url}/health", timeout=2.0).status_code
    except httpx.HTTPError:
        return None  # not listening yet


def wait_for_health(consumer: Consumer, accept: Callable[[Json], bool], what: str) -> Json:
    seen: list[Json] = []

    def accepted() -> bool:
        seen.append(consumer.health())
        return accept(seen[-1])

    if not wait_until(accepted, DEADLINE_S):
        raise AssertionError(f"{what} within {DEADLINE_S:g} s; last health: {seen[-1]!r}")
    return seen[-1]


def test_follows_the_default_source_while_no_source_is_active(
    nats_server: NatsServer, start_consumer: StartConsumer
) -> None:
    consumer = start_consumer(nats_server.url)

    health = wait_for_health(
        consumer, lambda h: h["ticks_received"] > 0, "ticks from the default source"
    )

    assert health["feed"] == FEED
    assert health["following"] == "md-a"
    assert health["last_tick_source"] == "md-a"
    assert health["last_tick"]["source"] == "md-a"
    assert health["switched_at"] is None
    assert health["switches"] == 0
    assert health["malformed_updates"] == 0
    assert "following md-a (default; md/lab-md/active not set)" in consumer.log()


def test_starts_on_the_source_already_active(
    nats_server: NatsServer,
    start_consumer: StartConsumer,
    sources: dict[str, Source],
) -> None:
    write_active(nats_server.url, active_record(sources["md-b"], "md-a down before start"))

    consumer = start_consumer(nats_server.url)

    health = wait_for_health(consumer, lambda h: h["ticks_received"] > 0, "ticks after start")
    assert health["following"] == "md-b"
    assert health["url"] == sources["md-b"].url
    assert health["switched_at"] is not None
    assert health["last_tick_source"] == "md-b"
    assert "following md-b (md-a down before start)" in consumer.log()


def test_switches_to_the_source_the_monitor_makes_active_within_two_seconds(
    nats_server: NatsServer,
    start_consumer: StartConsumer,
    sources: dict[str, Source],
) -> None:
    consumer = start_consumer(nats_server.url)
    wait_for_health(consumer, lambda h: h["last_tick_source"] == "md-a", "ticks from md-a")

    write_active(nats_server.url, active_record(sources["md-b"], "a majority sees md-a down"))

    switched = wait_until(
        lambda: consumer.health()["following"] == "md-b", SWITCH_DEADLINE_S, poll_s=0.02
    )
    assert switched, f"still not following md-b: {consumer.health()!r}"
    # A tick already in flight from md-a when the switch came is dropped, so every tick
    # recorded from here on is md-b's.
    health = wait_for_health(
        consumer, lambda h: h["last_tick_source"] == "md-b", "ticks from md-b after the switch"
    )
    assert health["last_tick"]["source"] == "md-b"
    assert health["switches"] == 1
    assert health["url"] == sources["md-b"].url
    assert "following md-b (a majority sees md-a down)" in consumer.log()


def test_malformed_updates_are_counted_and_the_source_is_kept(
    nats_server: NatsServer,
    start_consumer: StartConsumer,
    sources: dict[str, Source],
) -> None:
    consumer = start_consumer(nats_server.url)
    wait_for_health(consumer, lambda h: h["ticks_received"] > 0, "ticks from md-a")
    valid_but_foreign = {**json.loads(active_record(sources["md-b"], "x")), "feed": "other-md"}
    malformed = [
        b"not json at all",
        b"[]",
        b'{"feed": "lab-md", "source": "md-b"}',  # no url, switched_at, reason
        json.dumps(valid_but_foreign).encode(),  # a record for another feed under our key
    ]

    for count, value in enumerate(malformed, start=1):
        write_active(nats_server.url, value)
        health = wait_for_health(
            consumer, lambda h, n=count: h["malformed_updates"] == n, f"{value!r} counted"
        )
        assert health["following"] == "md-a"

    ticks_then = health["ticks_received"]
    later = wait_for_health(
        consumer, lambda h: h["ticks_received"] > ticks_then, "ticks still arriving"
    )
    assert later["last_tick_source"] == "md-a"
    assert later["switches"] == 0
    assert later["malformed_updates"] == len(malformed)
    assert consumer.log().count("ignoring malformed md/lab-md/active") == len(malformed)


def test_comes_up_once_nats_is_reachable(tmp_path: Path, start_consumer: StartConsumer) -> None:
    nats_server = NatsServer(tmp_path / "late-nats")  # port chosen, not started yet
    consumer = start_consumer(nats_server.url, wait=False)
    try:
        retrying = wait_until(lambda: "unreachable" in consumer.log(), DEADLINE_S, poll_s=0.1)
        assert retrying, f"no retry logged:\n{consumer.log()}"
        # Up but not ready: it does not know which source is active, so it claims none.
        answering = wait_until(lambda: health_status(consumer) == 503, DEADLINE_S, poll_s=0.1)
        assert answering, f"no 503 while NATS is away:\n{consumer.log()}"
        waiting = httpx.get(f"{consumer.url}/health", timeout=2.0).json()
        assert "unreachable" in waiting["detail"]

        nats_server.start()

        assert wait_until(lambda: http_ok(f"{consumer.url}/health"), DEADLINE_S, poll_s=0.1)
        health = wait_for_health(consumer, lambda h: h["ticks_received"] > 0, "ticks after NATS")
        assert health["following"] == "md-a"
    finally:
        # Only if started: with pid 0, stop() would signal this test's own process group.
        if nats_server.pid:
            nats_server.stop()
