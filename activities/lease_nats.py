"""The lease store on NATS JetStream KV: the KV revision is the compare-and-set token.

The bucket keeps no TTL of its own: if NATS expired the key, the epoch would be forgotten and a
later takeover would restart at 1, reusing fencing tokens. Expiry is the record's ``renewed_at +
ttl_s``, enforced by the holder's keeper (it self-fences) and by whoever takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.kv import KeyValue
from pydantic import ValidationError

from activities.lease import LeaseConflict, LeaseError, LeaseStore, LeaseStoreUnavailable
from domain.lease import Lease, LeaseRecord, lease_key
from domain.topology import LeaseConfig

_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)


class NatsLeaseStore(LeaseStore):
    def __init__(self, nc: Client, kv: KeyValue, ttl_s: float, op_timeout_s: float) -> None:
        super().__init__(ttl_s, op_timeout_s)
        self._nc = nc
        self._kv = kv

    @classmethod
    async def connect(cls, config: LeaseConfig, op_timeout_s: float) -> NatsLeaseStore:
        token = os.environ.get(config.token_env) if config.token_env else None
        try:
            nc = await nats.connect(
                config.address,
                token=token,
                connect_timeout=op_timeout_s,
                # Keep reconnecting: a keeper must survive a NATS restart without a new client.
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.2,
                allow_reconnect=True,
            )
        except _UNAVAILABLE as exc:
            raise LeaseStoreUnavailable(
                f"lease store at {config.address} unreachable: {type(exc).__name__}"
            ) from None
        try:
            js = nc.jetstream(timeout=op_timeout_s)
            kv = await js.create_key_value(bucket=config.bucket, history=16)
        except _UNAVAILABLE as exc:
            await nc.close()
            raise LeaseStoreUnavailable(
                f"lease store at {config.address}: JetStream not answering ({type(exc).__name__})"
            ) from None
        return cls(nc, kv, config.ttl_s, op_timeout_s)

    async def read(self, system: str) -> Lease | None:
        try:
            entry = await asyncio.wait_for(self._kv.get(lease_key(system)), self.op_timeout_s)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except _UNAVAILABLE as exc:
            raise LeaseStoreUnavailable(
                f"lease read for {system!r}: {type(exc).__name__}"
            ) from None
        if entry.value is None or entry.revision is None:
            return None
        try:
            record = LeaseRecord.model_validate_json(entry.value)
        except ValidationError as exc:
            raise LeaseError(
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
            raise LeaseStoreUnavailable(
                f"lease write for {system!r}: {type(exc).__name__}"
            ) from None
        return Lease(record=record, revision=revision)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.close()
