"""The stores on NATS JetStream KV: the KV revision is the compare-and-set token.

Both stores share one bucket (``config.bucket``): the lease under ``dr/<system>/active``, each
feed's active source under ``md/<feed>/active``. The bucket keeps no TTL of its own: if NATS
expired the lease key, the epoch would be forgotten and a later takeover would restart at 1,
reusing fencing tokens. Expiry is the record's ``renewed_at + ttl_s``, enforced by the holder's
keeper (it self-fences) and by whoever takes over.

Watching is a KV watch: an ordered consumer that re-creates itself after missed heartbeats, so a
watch outlives a NATS restart without a new client.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
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
from domain.topology import ConsulStoreConfig, LeaseConfig, NatsLeaseConfig, NatsStoreConfig

# Every client that creates the shared bucket must ask for the same configuration:
# create_key_value is only idempotent then.
BUCKET_HISTORY = 16

_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


async def _open_bucket(config: NatsStoreConfig, op_timeout_s: float, what: str) -> _Bucket:
    token = None
    if config.token_env:
        token = os.environ.get(config.token_env)
        if not token:
            raise StoreConfigError(
                f"token_env names {config.token_env}, which is not set in the environment"
            )
    nc = Client()
    try:
        # Unlimited reconnects keep one client through a NATS restart (a keeper, a watch); the
        # first connection is still bounded by the operation timeout.
        await asyncio.wait_for(
            nc.connect(
                config.url,
                token=token,
                connect_timeout=math.ceil(op_timeout_s),
                max_reconnect_attempts=-1,
                # nats-py annotates int but sleeps on it as float seconds.
                reconnect_time_wait=0.2,  # type: ignore[arg-type]
                allow_reconnect=True,
                error_cb=_ignore_error,
            ),
            op_timeout_s,
        )
    except _UNAVAILABLE as exc:
        await _close(nc, op_timeout_s)
        raise StoreUnavailable(
            f"{what} at {config.url} unreachable: {type(exc).__name__}"
        ) from None
    try:
        js = nc.jetstream(timeout=op_timeout_s)
        kv = await js.create_key_value(bucket=config.bucket, history=BUCKET_HISTORY)
    except _UNAVAILABLE as exc:
        await _close(nc, op_timeout_s)
        raise StoreUnavailable(
            f"{what} at {config.url}: JetStream not answering ({type(exc).__name__})"
        ) from None
    except nats.js.errors.BadRequestError as exc:
        await _close(nc, op_timeout_s)
        raise StoreError(
            f"{what} at {config.url}: bucket {config.bucket!r} exists with another "
            f"configuration ({exc.description})"
        ) from None
    return _Bucket(nc, kv)


async def _ignore_error(_: Exception) -> None:
    # Without a callback nats-py logs every failed reconnect; the callers report outages.
    return None


async def _close(nc: Client, timeout_s: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), timeout_s)


class _Bucket:
    def __init__(self, nc: Client, kv: KeyValue) -> None:
        self.nc = nc
        self.kv = kv


async def open_lease_store(config: LeaseConfig, op_timeout_s: float) -> NatsLeaseStore:
    assert isinstance(config, NatsLeaseConfig)  # the registry dispatched on backend
    bucket = await _open_bucket(config, op_timeout_s, "lease store")
    return NatsLeaseStore(bucket, config.ttl_s, op_timeout_s)


async def open_active_source_store(
    config: NatsStoreConfig | ConsulStoreConfig, op_timeout_s: float
) -> NatsActiveSourceStore:
    assert isinstance(config, NatsStoreConfig)  # the registry dispatched on backend
    bucket = await _open_bucket(config, op_timeout_s, "active-source store")
    return NatsActiveSourceStore(bucket, op_timeout_s)


class NatsLeaseStore(LeaseStore):
    def __init__(self, bucket: _Bucket, ttl_s: float, op_timeout_s: float) -> None:
        super().__init__(ttl_s, op_timeout_s, _utc_now)
        self._bucket = bucket
        self._kv = bucket.kv

    async def read(self, system: str) -> Lease | None:
        try:
            entry = await asyncio.wait_for(self._kv.get(lease_key(system)), self.op_timeout_s)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"lease read for {system!r}: {type(exc).__name__}") from None
        if entry.value is None or entry.revision is None:
            return None
        try:
            record = LeaseRecord.model_validate_json(entry.value)
        except ValidationError as exc:
            raise StoreError(
                f"lease key {lease_key(system)!r} holds an unreadable record "
                f"(revision {entry.revision}): {exc.error_count()} validation error(s)"
            ) from None
        return Lease(record=record, revision=entry.revision)

    async def _compare_and_set(
        self, system: str, record: LeaseRecord, expected_revision: int | None
    ) -> Lease:
        key = lease_key(system)
        value = record.model_dump_json().encode()
        try:
            if expected_revision is None:
                write = self._kv.create(key, value)
            else:
                write = self._kv.update(key, value, last=expected_revision)
            revision = await asyncio.wait_for(write, self.op_timeout_s)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise LeaseConflict(system, await self.read(system)) from None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"lease write for {system!r}: {type(exc).__name__}") from None
        return Lease(record=record, revision=revision)

    async def close(self) -> None:
        await _close(self._bucket.nc, self.op_timeout_s)


class NatsActiveSourceStore(ActiveSourceStore):
    def __init__(self, bucket: _Bucket, op_timeout_s: float) -> None:
        super().__init__(op_timeout_s)
        self._bucket = bucket
        self._kv = bucket.kv

    async def read(self, feed: str) -> ActiveSourceState:
        try:
            entry = await asyncio.wait_for(self._kv.get(active_source_key(feed)), self.op_timeout_s)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return ActiveSourceState(feed=feed)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"active-source read for {feed!r}: {type(exc).__name__}"
            ) from None
        if entry.revision is None:
            return ActiveSourceState(feed=feed)
        return decode_active_source(feed, entry.revision, entry.value)

    async def _put(self, active: ActiveSource) -> int:
        key = active_source_key(active.feed)
        try:
            return int(
                await asyncio.wait_for(
                    self._kv.put(key, active.model_dump_json().encode()), self.op_timeout_s
                )
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"active-source write for {active.feed!r}: {type(exc).__name__}"
            ) from None

    async def watch(self, feed: str) -> AsyncIterator[ActiveSourceState]:
        key = active_source_key(feed)
        try:
            watcher = await asyncio.wait_for(self._kv.watch(key), self.op_timeout_s)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot watch {key}: {type(exc).__name__}") from None
        try:
            current_delivered = False
            async for entry in watcher:
                if entry is None:
                    # The marker that the current value has been delivered: without a value
                    # before it, the key is absent.
                    if not current_delivered:
                        current_delivered = True
                        yield ActiveSourceState(feed=feed)
                    continue
                current_delivered = True
                if entry.revision is None:
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    yield ActiveSourceState(feed=feed, revision=entry.revision)
                else:
                    yield decode_active_source(feed, entry.revision, entry.value)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher.stop(), self.op_timeout_s)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await _close(self._bucket.nc, self.op_timeout_s)
