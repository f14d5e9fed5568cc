"""State-store backends, one module each, found by the topology's ``backend`` name.

A backend module provides two coroutines::

    async def open_lease_store(config, op_timeout_s: float) -> LeaseStore
    async def open_active_source_store(config, op_timeout_s: float) -> ActiveSourceStore

Adding a backend = its config model in ``domain/topology.py`` (one line in the ``StoreConfig``
and ``LeaseConfig`` unions), its module here, one line in ``BACKENDS``, and one parameter in
each contract suite (tests/contract/test_*_store_contract.py). Modules are imported when first
used, so a NATS deployment never loads the Consul client.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from domain.stores import ActiveSourceStore, LeaseStore, StoreConfigError
from domain.topology import ConsulStoreConfig, LeaseConfig, NatsStoreConfig

BACKENDS: dict[str, str] = {
    "nats": "adapters.stores.nats",
    "consul": "adapters.stores.consul",
}

DEFAULT_OP_TIMEOUT_S = 2.0


class StoreBackend(Protocol):
    async def open_lease_store(self, config: LeaseConfig, op_timeout_s: float) -> LeaseStore: ...

    async def open_active_source_store(
        self, config: NatsStoreConfig | ConsulStoreConfig, op_timeout_s: float
    ) -> ActiveSourceStore: ...


def backend(name: str) -> StoreBackend:
    module = BACKENDS.get(name)
    if module is None:
        raise StoreConfigError(
            f"store backend {name!r} is not available; known backends: {', '.join(BACKENDS)}"
        )
    return cast(StoreBackend, importlib.import_module(module))


async def open_lease_store(
    config: LeaseConfig, op_timeout_s: float = DEFAULT_OP_TIMEOUT_S
) -> LeaseStore:
    """Connect to the fencing store the topology's ``[lease]`` names."""
    return await backend(config.backend).open_lease_store(config, op_timeout_s)


async def open_active_source_store(
    config: NatsStoreConfig | ConsulStoreConfig, op_timeout_s: float = DEFAULT_OP_TIMEOUT_S
) -> ActiveSourceStore:
    """Connect to the store of feeds' active sources (``Topology.active_source_store``)."""
    return await backend(config.backend).open_active_source_store(config, op_timeout_s)
