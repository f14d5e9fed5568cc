"""The stores on Consul KV: a key's ModifyIndex is the compare-and-set token and the revision.

Keys live under ``key_prefix``: the lease at ``<key_prefix>/dr/<system>/active``, each feed's
active source at ``<key_prefix>/md/<feed>/active``.

The lease is a plain KV key written with ``?cas=<ModifyIndex>`` (``cas=0`` to create it). It is
deliberately not a Consul session lock (``acquire`` with a session TTL): a lock cannot be taken
while its owner's session is alive, and a partitioned primary that still reaches Consul keeps its
session alive (and after the session dies, Consul's lock-delay blocks the key for 15 s more). A
takeover must win against exactly that primary; the epoch fences it. Without a session nothing
in Consul ever deletes the key, which is what we want: a forgotten epoch would restart at 1 and
reuse fencing tokens.

Watching is a Consul blocking query (``?index=<last>&wait=<s>``) on a client of its own, whose
HTTP timeout covers the wait.

python-consul2 is blocking (requests underneath), so every call runs in a worker thread, bounded by
``asyncio.wait_for`` and by the HTTP client's own timeout. A call abandoned by ``wait_for`` may
still land: the caller sees StoreUnavailable, which already means "may or may not have changed".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import consul
import consul.base
import requests
from pydantic import ValidationError

from domain.feeds import ActiveSource, active_source_key
from domain.lease import Lease, LeaseRecord, lease_key
from domain.stores import (
    ActiveSourceState,
    ActiveSourceStore,
    LeaseConflict,
    LeaseStore,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    decode_active_source,
)
from domain.topology import (
    ConsulAddress,
    ConsulLeaseConfig,
    ConsulStoreConfig,
    LeaseConfig,
    NatsStoreConfig,
    parse_consul_address,
)

T = TypeVar("T")

# How long one blocking query waits for a change before Consul answers "no change".
WATCH_WAIT_S = 30

# 4xx: Consul answered and said no (bad ACL token, missing permission). Retrying will not help.
_REFUSED = (
    consul.base.ACLDisabled,
    consul.base.ACLPermissionDenied,
    consul.base.BadRequest,
    consul.base.ClientError,
    consul.base.NotFound,
)
# Anything else on the wire: refused or dropped connections, timeouts, TLS failures, and
# ConsulException itself, which python-consul2 raises for 5xx (e.g. "No cluster leader").
# Must be caught after _REFUSED: those are ConsulException subclasses.
_UNAVAILABLE = (
    requests.exceptions.RequestException,
    consul.base.ConsulException,
    asyncio.TimeoutError,
    OSError,
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _ConsulKV:
    """One Consul client and the error mapping every call goes through."""

    def __init__(self, config: ConsulStoreConfig, op_timeout_s: float, what: str) -> None:
        self.address = config.address
        self.key_prefix = config.key_prefix
        self.op_timeout_s = op_timeout_s
        self.what = what
        self.target = parse_consul_address(config.address)
        self.token = _token(config)
        self.client = _new_client(self.target, self.token, op_timeout_s)

    @classmethod
    async def connect(cls, config: ConsulStoreConfig, op_timeout_s: float, what: str) -> _ConsulKV:
        kv = cls(config, op_timeout_s, what)
        try:
            leader = await kv.call("reachability check", op_timeout_s, kv.client.status.leader)
        except StoreError:
            await kv.close()
            raise
        if not leader:
            await kv.close()
            raise StoreUnavailable(
                f"{what} at {config.address}: Consul has no Raft leader, so writes would fail"
            )
        return kv

    def key(self, suffix: str) -> str:
        return f"{self.key_prefix}/{suffix}"

    async def call(
        self, what: str, timeout_s: float, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Run one blocking python-consul2 call in a thread; map its failures to StoreErrors.

        Concurrent calls share the client's requests session: its urllib3 pool is thread-safe
        and Consul sets no cookies.
        """
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), timeout_s)
        except _REFUSED as exc:
            raise StoreError(
                f"{what}: Consul at {self.address} refused it ({self._describe(exc)})"
            ) from None
        except json.JSONDecodeError:
            raise StoreError(
                f"{what}: {self.address} answered with something other than Consul's JSON API"
            ) from None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"{what}: {self.what} at {self.address} unreachable ({self._describe(exc)})"
            ) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.to_thread(self.client.http.session.close), self.op_timeout_s
            )

    def _describe(self, exc: BaseException) -> str:
        if not isinstance(exc, consul.base.ConsulException):
            # requests' messages repeat the URL and socket details; the type says enough.
            return type(exc).__name__
        # Consul's own error text ("No cluster leader", "Permission denied") is what an operator
        # needs. It never carries the token, but scrub it anyway: this text ends up in logs.
        detail = str(exc)[:200]
        if self.token:
            detail = detail.replace(self.token, "<token>")
        return f"{type(exc).__name__}: {detail}"


async def open_lease_store(config: LeaseConfig, op_timeout_s: float) -> ConsulLeaseStore:
    assert isinstance(config, ConsulLeaseConfig)  # the registry dispatched on backend
    kv = await _ConsulKV.connect(config, op_timeout_s, "lease store")
    return ConsulLeaseStore(kv, config.ttl_s, op_timeout_s)


async def open_active_source_store(
    config: NatsStoreConfig | ConsulStoreConfig, op_timeout_s: float
) -> ConsulActiveSourceStore:
    assert isinstance(config, ConsulStoreConfig)  # the registry dispatched on backend
    kv = await _ConsulKV.connect(config, op_timeout_s, "active-source store")
    return ConsulActiveSourceStore(kv, op_timeout_s)


class ConsulLeaseStore(LeaseStore):
    def __init__(self, kv: _ConsulKV, ttl_s: float, op_timeout_s: float) -> None:
        super().__init__(ttl_s, op_timeout_s, _utc_now)
        self._kv = kv

    def _key(self, system: str) -> str:
        return self._kv.key(lease_key(system))

    async def read(self, system: str) -> Lease | None:
        _, entry = await self._kv.call(
            f"lease read for {system!r}",
            self.op_timeout_s,
            self._kv.client.kv.get,
            self._key(system),
        )
        return None if entry is None else self._lease(system, entry)

    async def _compare_and_set(
        self, system: str, record: LeaseRecord, expected_revision: int | None
    ) -> Lease:
        key = self._key(system)
        what = f"lease write for {system!r}"
        loop = asyncio.get_running_loop()
        # The put and its read-back are one write to the caller: they share one op_timeout_s.
        deadline = loop.time() + self.op_timeout_s
        written = await self._kv.call(
            what,
            self.op_timeout_s,
            self._kv.client.kv.put,
            key,
            record.model_dump_json().encode(),
            cas=0 if expected_revision is None else expected_revision,
        )
        if not written:
            raise LeaseConflict(system, await self.read(system))
        # put answers only true/false, so the new ModifyIndex must be read back. A consistent
        # read: a stale answer would make our own write look like a conflict.
        _, entry = await self._kv.call(
            what,
            max(deadline - loop.time(), 0.0),
            self._kv.client.kv.get,
            key,
            consistency="consistent",
        )
        stored = None if entry is None else self._lease(system, entry)
        if stored is None or stored.record != record:
            # Someone wrote on top of our write before we could read it back: our revision is
            # already stale, so report the lease as it is now.
            raise LeaseConflict(system, stored)
        return Lease(record=record, revision=stored.revision)

    async def close(self) -> None:
        await self._kv.close()

    def _lease(self, system: str, entry: dict[str, Any]) -> Lease:
        revision = int(entry["ModifyIndex"])
        value = entry.get("Value")
        if not value:
            raise StoreError(
                f"lease key {self._key(system)!r} holds no record (revision {revision}); "
                "it blocks every takeover until removed"
            )
        try:
            record = LeaseRecord.model_validate_json(value)
        except ValidationError as exc:
            raise StoreError(
                f"lease key {self._key(system)!r} holds an unreadable record "
                f"(revision {revision}): {exc.error_count()} validation error(s)"
            ) from None
        return Lease(record=record, revision=revision)


class ConsulActiveSourceStore(ActiveSourceStore):
    def __init__(self, kv: _ConsulKV, op_timeout_s: float) -> None:
        super().__init__(op_timeout_s)
        self._kv = kv
        self._watch_client: Any = None

    def _key(self, feed: str) -> str:
        return self._kv.key(active_source_key(feed))

    async def read(self, feed: str) -> ActiveSourceState:
        _, entry = await self._kv.call(
            f"active-source read for {feed!r}",
            self.op_timeout_s,
            self._kv.client.kv.get,
            self._key(feed),
            consistency="consistent",
        )
        return _state(feed, entry)

    async def _put(self, active: ActiveSource) -> int:
        key = self._key(active.feed)
        what = f"active-source write for {active.feed!r}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.op_timeout_s
        value = active.model_dump_json().encode()
        await self._kv.call(what, self.op_timeout_s, self._kv.client.kv.put, key, value)
        # put answers only true/false: read the new ModifyIndex back.
        _, entry = await self._kv.call(
            what,
            max(deadline - loop.time(), 0.0),
            self._kv.client.kv.get,
            key,
            consistency="consistent",
        )
        if entry is None:
            raise StoreUnavailable(f"{what}: the key was gone when read back; retry the write")
        return int(entry["ModifyIndex"])

    async def watch(self, feed: str) -> AsyncIterator[ActiveSourceState]:
        if self._watch_client is None:
            # Its HTTP timeout must outlast a blocking query's wait.
            self._watch_client = _new_client(
                self._kv.target, self._kv.token, WATCH_WAIT_S + self.op_timeout_s
            )
        client = self._watch_client
        key = self._key(feed)
        index: int | None = None
        last: tuple[int | None, bool] | None = None
        while True:
            new_index, entry = await self._kv.call(
                f"watching {key}",
                WATCH_WAIT_S + self.op_timeout_s,
                client.kv.get,
                key,
                index=index,
                wait=f"{WATCH_WAIT_S}s",
            )
            state = _state(feed, entry)
            seen = (state.revision, entry is None)
            if seen != last:
                if entry is None and last is not None:
                    # Deleted while watched: the blocking index stands for the deletion.
                    state = ActiveSourceState(feed=feed, revision=int(new_index))
                last = seen
                yield state
            # Consul: an index that goes backwards (a snapshot restore) restarts the watch.
            current = int(new_index)
            index = current if index is None or current >= index else None

    async def close(self) -> None:
        await self._kv.close()
        if self._watch_client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.to_thread(self._watch_client.http.session.close), self.op_timeout_s
                )


def _state(feed: str, entry: dict[str, Any] | None) -> ActiveSourceState:
    if entry is None:
        return ActiveSourceState(feed=feed)
    return decode_active_source(feed, int(entry["ModifyIndex"]), entry.get("Value"))


def _token(config: ConsulStoreConfig) -> str | None:
    if not config.token_env:
        return None
    token = os.environ.get(config.token_env)
    if not token:
        # Fail here, not with a 403 on the first write in the middle of a failover.
        raise StoreConfigError(
            f"token_env names {config.token_env}, which is not set in the environment"
        )
    return token


def _new_client(target: ConsulAddress, token: str | None, timeout_s: float) -> Any:
    try:
        with warnings.catch_warnings():
            # The constructor warns about legacy ACL and discovery-chain endpoints we never call.
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.Consul(
                host=target.host,
                port=target.port,
                scheme=target.scheme,
                token=token,
                timeout=timeout_s,
            )
    except consul.base.ConsulException:
        raise StoreConfigError(
            "python-consul2 rejected the CONSUL_HTTP_ADDR environment variable; it reads it even "
            "when the topology gives an address. Unset it or use <host>:<port> or "
            "<scheme>://<host>:<port>"
        ) from None
    # The constructor lets CONSUL_HTTP_ADDR, CONSUL_HTTP_SSL and CONSUL_HTTP_TOKEN override its
    # arguments. The topology is the one source of the store's address and token, so pin them
    # back: an ambient variable must not send fencing writes to another cluster.
    client.http = client.http_connect(target.host, target.port, target.scheme, timeout=timeout_s)
    client.scheme = target.scheme
    client.token = token
    return client
