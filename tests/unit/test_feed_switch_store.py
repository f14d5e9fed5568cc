"""A feed switch goes through the active-source store port, whichever backend the topology names.

This module registers itself as the ``consul`` backend (adapters.stores.BACKENDS), so the feed
activity reaches this module's fake store exactly as it would reach the Consul adapter: no
network, no Consul.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import adapters.stores
from activities.feeds import FeedActivities, FeedSwitchRequest
from domain.feeds import ActiveSource
from domain.stores import (
    ActiveSourceState,
    ActiveSourceStore,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from domain.topology import ConsulStoreConfig, NatsStoreConfig, Topology, parse_topology

TOPOLOGY = """
[lease]
backend = "consul"
address = "http://consul.internal:8500"
key_prefix = "desk-a"

[[systems]]
name = "lab"
primary_oms_url = "http://127.0.0.1:1"
dr_oms_url = "http://127.0.0.1:2"
venues = ["alpha"]

[systems.dns]
zone = "example.com."
record = "oms.example.com."
primary_target = "a"
dr_target = "b"

[[venues]]
name = "alpha"
url = "http://127.0.0.1:3"
api_key_env = "ALPHA_KEY"

[[feeds]]
name = "lab-md"

[[feeds.sources]]
name = "md-a"
url = "http://127.0.0.1:4"
rank = 1
dns_target = "md-a.example.com"

[[feeds.sources]]
name = "md-b"
url = "http://127.0.0.1:5"
rank = 2
dns_target = "md-b.example.com"
"""


class FakeStore(ActiveSourceStore):
    def __init__(self) -> None:
        super().__init__(op_timeout_s=1.0)
        self.stored: dict[str, tuple[int, ActiveSource]] = {}
        self.closed = False

    async def read(self, feed: str) -> ActiveSourceState:
        if feed not in self.stored:
            return ActiveSourceState(feed=feed)
        revision, active = self.stored[feed]
        return ActiveSourceState(feed=feed, revision=revision, active=active)

    async def _put(self, active: ActiveSource) -> int:
        revision = max((r for r, _ in self.stored.values()), default=0) + 1
        self.stored[active.feed] = (revision, active)
        return revision

    async def watch(self, feed: str) -> AsyncIterator[ActiveSourceState]:
        yield await self.read(feed)

    async def close(self) -> None:
        self.closed = True


# What the registry hands this module when it plays the consul backend.
opened: list[NatsStoreConfig | ConsulStoreConfig] = []
store = FakeStore()
fail_with: StoreError | None = None


async def open_active_source_store(
    config: NatsStoreConfig | ConsulStoreConfig, op_timeout_s: float
) -> ActiveSourceStore:
    opened.append(config)
    if fail_with is not None:
        raise fail_with
    return store


@pytest.fixture(autouse=True)
def as_the_consul_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    global store, fail_with
    monkeypatch.setitem(adapters.stores.BACKENDS, "consul", __name__)
    opened.clear()
    store = FakeStore()
    fail_with = None


def topology() -> Topology:
    return parse_topology(TOPOLOGY, "consul-topology.toml")


async def switch(source: str) -> int:
    request = FeedSwitchRequest(feed="lab-md", source=source, reason="md-a down")
    result = await ActivityEnvironment().run(FeedActivities(topology()).switch_feed_source, request)
    assert result.dns_changed is None  # this feed has no DNS record
    return result.kv_revision


async def test_a_feed_switch_on_a_consul_topology_writes_through_the_consul_store() -> None:
    revision = await switch("md-b")

    assert opened == [topology().lease]
    assert opened[0].backend == "consul"
    stored = (await store.read("lab-md")).active
    assert stored is not None and stored.source == "md-b" and stored.url == "http://127.0.0.1:5"
    assert revision == 1
    assert store.closed


async def test_switching_to_the_active_source_again_writes_nothing_new() -> None:
    first = await switch("md-b")
    again = await switch("md-b")
    assert again == first


async def test_a_store_outage_is_retried_and_a_bad_config_is_not() -> None:
    global fail_with
    fail_with = StoreUnavailable("active-source store at http://consul.internal:8500 unreachable")
    with pytest.raises(ApplicationError, match="unreachable") as outage:
        await switch("md-b")
    assert not outage.value.non_retryable

    fail_with = StoreConfigError("token_env names CONSUL_TOKEN, which is not set")
    with pytest.raises(ApplicationError, match=r"CONSUL_TOKEN.*fix \[lease\]") as config:
        await switch("md-b")
    assert config.value.non_retryable
