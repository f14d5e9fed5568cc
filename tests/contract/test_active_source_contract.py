"""The active-source store contract, run against every backend that can run here.

Each backend must honour the guarantees of ``ActiveSourceStore`` (domain/stores.py): what the
feed monitor writes is what consumers read and watch. Adding a backend = one parameter below.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.stores import open_active_source_store
from domain.feeds import ActiveSource
from domain.stores import ActiveSourceState, ActiveSourceStore, StoreUnavailable
from domain.topology import ConsulStoreConfig, NatsStoreConfig
from lab import processes
from tests.conftest import NatsServer

# One line, so the reason reads the same in the source as in pytest's skip summary.
OP_TIMEOUT_S = 0.5
# What "within the op timeout" may add: thread hand-off, connection teardown.
SLACK_S = 2.0
WATCH_DEADLINE_S = 5.0

StoreConfig = NatsStoreConfig | ConsulStoreConfig


@pytest.fixture(params=["nats", "consul"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ActiveSourceStore]:
    config: StoreConfig
    if request.param == "nats":
        # Looked up here, not declared, so the Consul cases do not need a nats-server.
        nats_server: NatsServer = request.getfixturevalue("nats_server")
        config = NatsStoreConfig(url=nats_server.url)
    else:
        config = _consul_config()
    opened = await open_active_source_store(config)
    yield opened
    await opened.close()


def _consul_config() -> ConsulStoreConfig:
    address = os.environ.get("CONSUL_HTTP_ADDR")
    if not address:
        pytest.skip(
            "no Consul server: none can be installed on this machine (not from pip, not from "
            "Debian); set CONSUL_HTTP_ADDR to run the active-source contract against a real Consul"
        )
    return ConsulStoreConfig(
        backend="consul",
        # Consul's own tools accept a bare host:port here.
        address=address if "://" in address else f"http://{address}",
        # Keys are never deleted: keep them out of the prefix a real deployment uses.
        key_prefix="dr-active-source-contract-test",
        token_env="CONSUL_HTTP_TOKEN" if os.environ.get("CONSUL_HTTP_TOKEN") else None,
    )


def new_feed() -> str:
    return f"md-{uuid.uuid4().hex[:8]}"


def active(feed: str, source: str, reason: str = "test") -> ActiveSource:
    return ActiveSource(
        feed=feed,
        source=source,
        url=f"http://{source}.example:8000",
        switched_at=datetime.now(UTC),
        reason=reason,
    )


async def next_state(states: AsyncIterator[ActiveSourceState]) -> ActiveSourceState:
    return await asyncio.wait_for(anext(states), WATCH_DEADLINE_S)


async def test_a_feed_never_switched_has_no_active_source(store: ActiveSourceStore) -> None:
    state = await store.read(new_feed())
    assert state.revision is None and state.active is None and state.unreadable is None


async def test_what_is_written_is_what_is_read(store: ActiveSourceStore) -> None:
    feed = new_feed()
    written = active(feed, "md-b", "md-a down")
    revision = await store.write(written)
    state = await store.read(feed)
    assert state.revision == revision
    assert state.active == written


async def test_writing_the_same_source_again_changes_nothing(store: ActiveSourceStore) -> None:
    feed = new_feed()
    first = active(feed, "md-b", "md-a down")
    revision = await store.write(first)
    again = await store.write(active(feed, "md-b", "retried by the monitor"))
    assert again == revision
    assert (await store.read(feed)).active == first


async def test_a_watch_starts_with_the_current_source_and_sees_a_switch(
    store: ActiveSourceStore,
) -> None:
    feed = new_feed()
    await store.write(active(feed, "md-a"))
    states = store.watch(feed)
    try:
        current = await next_state(states)
        assert current.active is not None and current.active.source == "md-a"

        revision = await store.write(active(feed, "md-b", "a majority sees md-a down"))

        switched = await next_state(states)
        assert switched.revision == revision
        assert switched.active is not None and switched.active.source == "md-b"
        assert switched.active.reason == "a majority sees md-a down"
    finally:
        await states.aclose()  # type: ignore[attr-defined]


async def test_a_watch_of_a_feed_never_switched_says_so_first(store: ActiveSourceStore) -> None:
    feed = new_feed()
    states = store.watch(feed)
    try:
        first = await next_state(states)
        assert first.revision is None and first.active is None
        await store.write(active(feed, "md-a"))
        assert (await next_state(states)).active is not None
    finally:
        await states.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["nats", "consul"])
async def test_a_store_nobody_answers_at_is_unavailable_within_the_op_timeout(
    backend: str,
) -> None:
    # A port nothing listens on: no server needed, so this runs for every backend here.
    port = processes.free_port()
    config: StoreConfig = (
        NatsStoreConfig(url=f"nats://127.0.0.1:{port}")
        if backend == "nats"
        else ConsulStoreConfig(backend="consul", address=f"http://127.0.0.1:{port}")
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        await open_active_source_store(config, OP_TIMEOUT_S)
    assert time.monotonic() - started < OP_TIMEOUT_S + SLACK_S


async def test_a_store_that_goes_away_is_unavailable_within_the_op_timeout(
    tmp_path: Path,
) -> None:
    # NATS only: it is the one backend whose server a test can stop here.
    with NatsServer(tmp_path) as server:
        store = await open_active_source_store(NatsStoreConfig(url=server.url), OP_TIMEOUT_S)
        feed = new_feed()
        await store.write(active(feed, "md-a"))
        server.stop()
        try:
            for attempt in (store.read(feed), store.write(active(feed, "md-b"))):
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await attempt
                assert time.monotonic() - started < OP_TIMEOUT_S + SLACK_S
        finally:
            await store.close()
