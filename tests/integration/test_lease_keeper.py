"""The OMS-side keeper: a primary that cannot keep its lease stops trading by itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from activities.lease_keeper import LeaseKeeper
from adapters.stores import open_lease_store
from domain.topology import NatsLeaseConfig
from tests.conftest import NatsServer

TTL_S = 1.5


async def test_the_primary_keeps_its_lease_while_the_store_is_up(nats_server: NatsServer) -> None:
    store = await open_lease_store(NatsLeaseConfig(url=nats_server.url, ttl_s=TTL_S))
    system = f"sys-{uuid.uuid4().hex[:8]}"
    lease = await store.take_over(system, "primary", "oms-a", expected=None)
    fenced = asyncio.Event()

    async def on_fenced(_: str) -> None:
        fenced.set()

    keeper = LeaseKeeper(store, lease, on_fenced)
    keeper.start()
    try:
        # Two full TTLs without fencing: renewals at TTL/3 keep it alive.
        assert not await _wait(fenced, 2 * TTL_S)
        current = await store.read(system)
        assert current is not None and current.epoch == 1
        assert current.revision > lease.revision
    finally:
        await keeper.stop()
        await store.close()


async def test_losing_the_lease_to_a_promotion_stops_trading_at_once(
    nats_server: NatsServer,
) -> None:
    store = await open_lease_store(NatsLeaseConfig(url=nats_server.url, ttl_s=TTL_S))
    system = f"sys-{uuid.uuid4().hex[:8]}"
    lease = await store.take_over(system, "primary", "oms-a", expected=None)
    reasons: list[str] = []
    fenced = asyncio.Event()

    async def on_fenced(reason: str) -> None:
        reasons.append(reason)
        fenced.set()

    keeper = LeaseKeeper(store, lease, on_fenced)
    keeper.start()
    try:
        await store.take_over(system, "dr", "promotion-1", expected=await store.read(system))
        # One renewal interval (TTL/3) plus slack, well inside the TTL.
        assert await _wait(fenced, TTL_S)
        assert reasons == [
            f"lost the lease for {system!r} (epoch 1): region 'dr' took it at epoch 2"
        ]
    finally:
        await keeper.stop()
        await store.close()


async def test_a_primary_cut_off_from_the_lease_store_stops_within_the_ttl(
    tmp_path: Path,
) -> None:
    with NatsServer(tmp_path) as server:
        store = await open_lease_store(
            NatsLeaseConfig(url=server.url, ttl_s=TTL_S), op_timeout_s=0.3
        )
        lease = await store.take_over("lab", "primary", "oms-a", expected=None)
        fenced_at: list[float] = []
        fenced = asyncio.Event()

        async def on_fenced(reason: str) -> None:
            fenced_at.append(time.monotonic())
            assert "within its TTL" in reason
            fenced.set()

        keeper = LeaseKeeper(store, lease, on_fenced)
        keeper.start()
        try:
            server.stop()
            stopped_at = time.monotonic()
            assert await _wait(fenced, 3 * TTL_S), "the keeper never fenced"
            # Fenced about one TTL after the store went away: never before its last renewal's
            # TTL ran out, and with slack for a loaded machine after it.
            assert fenced_at[0] - stopped_at <= TTL_S + 2.0
        finally:
            await keeper.stop()
            await store.close()


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        return False
    return True
