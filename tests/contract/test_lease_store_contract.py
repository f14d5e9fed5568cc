"""The lease store contract, run against every backend that can run here.

Each backend must honour the same guarantees (see ``LeaseStore`` in domain/stores.py); these
scenarios are the definition of those guarantees. Adding a backend = one parameter below.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from adapters.stores import open_lease_store
from domain.stores import LeaseConflict, LeaseLost, LeaseStore
from domain.topology import ConsulLeaseConfig, NatsLeaseConfig
from tests.conftest import NatsServer

# One line, so the reason reads the same in the source as in pytest's skip summary.


@pytest.fixture(params=["nats", "consul"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LeaseStore]:
    config: NatsLeaseConfig | ConsulLeaseConfig
    if request.param == "nats":
        # Looked up here, not declared, so the Consul cases do not need a nats-server.
        nats_server: NatsServer = request.getfixturevalue("nats_server")
        config: NatsLeaseConfig | ConsulLeaseConfig = NatsLeaseConfig(
            url=nats_server.url, ttl_s=3.0
        )
    else:
        config = _consul_config()
    opened = await open_lease_store(config)
    yield opened
    await opened.close()


def _consul_config() -> ConsulLeaseConfig:
    address = os.environ.get("CONSUL_HTTP_ADDR")
    if not address:
        pytest.skip(
            "no Consul server: none can be installed on this machine (not from pip, not from "
            "Debian); set CONSUL_HTTP_ADDR to run the lease contract against a real Consul"
        )
    return ConsulLeaseConfig(
        backend="consul",
        # Consul's own tools accept a bare host:port here.
        address=address if "://" in address else f"http://{address}",
        # Keys are never deleted: keep them out of the prefix a real deployment uses.
        key_prefix="dr-leases-contract-test",
        ttl_s=3.0,
        token_env="CONSUL_HTTP_TOKEN" if os.environ.get("CONSUL_HTTP_TOKEN") else None,
    )


def new_system() -> str:
    return f"sys-{uuid.uuid4().hex[:8]}"


async def test_a_new_system_has_no_lease(store: LeaseStore) -> None:
    assert await store.read(new_system()) is None


async def test_the_first_takeover_starts_epoch_1(store: LeaseStore) -> None:
    system = new_system()
    lease = await store.take_over(system, "primary", "oms-a", expected=None)
    assert lease.epoch == 1
    assert (await store.read(system)) == lease


async def test_a_takeover_increments_the_epoch_by_exactly_one(store: LeaseStore) -> None:
    system = new_system()
    first = await store.take_over(system, "primary", "oms-a", expected=None)
    second = await store.take_over(system, "dr", "promotion-1", expected=first)
    assert second.epoch == first.epoch + 1
    assert second.region == "dr"


async def test_a_retried_takeover_returns_the_same_epoch(store: LeaseStore) -> None:
    system = new_system()
    first = await store.take_over(system, "primary", "oms-a", expected=None)
    taken = await store.take_over(system, "dr", "promotion-1", expected=first)
    again = await store.take_over(system, "dr", "promotion-1", expected=first)
    assert again.epoch == taken.epoch == 2


async def test_two_concurrent_takeovers_cannot_both_win(store: LeaseStore) -> None:
    system = new_system()
    first = await store.take_over(system, "primary", "oms-a", expected=None)
    results = await asyncio.gather(
        store.take_over(system, "dr", "promotion-1", expected=first),
        store.take_over(system, "dr", "promotion-2", expected=first),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, LeaseConflict)]
    assert len(winners) == 1 and len(losers) == 1
    assert (await store.read(system)) == winners[0]


async def test_a_stale_takeover_is_refused(store: LeaseStore) -> None:
    system = new_system()
    first = await store.take_over(system, "primary", "oms-a", expected=None)
    await store.take_over(system, "dr", "promotion-1", expected=first)
    with pytest.raises(LeaseConflict, match="region 'dr' at epoch 2"):
        await store.take_over(system, "primary", "oms-a", expected=first)


async def test_renewal_keeps_the_epoch_and_moves_the_expiry(store: LeaseStore) -> None:
    system = new_system()
    lease = await store.take_over(system, "primary", "oms-a", expected=None)
    renewed = await store.renew(lease)
    assert renewed.epoch == lease.epoch
    assert renewed.revision > lease.revision
    assert renewed.record.expires_at > lease.record.expires_at


async def test_renewing_after_a_takeover_reports_the_lease_lost(store: LeaseStore) -> None:
    system = new_system()
    lease = await store.take_over(system, "primary", "oms-a", expected=None)
    await store.take_over(system, "dr", "promotion-1", expected=lease)
    with pytest.raises(LeaseLost, match="region 'dr' took it at epoch 2"):
        await store.renew(lease)


async def test_a_renewal_retried_after_a_lost_reply_succeeds(store: LeaseStore) -> None:
    system = new_system()
    lease = await store.take_over(system, "primary", "oms-a", expected=None)
    await store.renew(lease)  # its reply is "lost": the caller still holds the old revision
    again = await store.renew(lease)
    assert again.epoch == lease.epoch


async def test_a_takeover_racing_the_old_holders_renewal_still_wins(store: LeaseStore) -> None:
    system = new_system()
    first = await store.take_over(system, "primary", "oms-a", expected=None)
    await store.renew(first)  # the dying primary renews after the promotion read the lease
    taken = await store.take_over(system, "dr", "promotion-1", expected=first)
    assert taken.epoch == 2 and taken.region == "dr"
