"""The lease store on Consul KV: the key's ModifyIndex is the compare-and-set token.

The lease is a plain KV key written with ``?cas=<ModifyIndex>`` (``cas=0`` to create it). It is
deliberately not a Consul session lock (``acquire`` with a session TTL), although the issue asked
for "a session with TTL": a lock cannot be taken while its owner's session is alive, and a
partitioned primary that still reaches Consul keeps its session alive (and after the session dies,
Consul's lock-delay blocks the key for 15 s more). A takeover must win against exactly that
primary; the epoch fences it. Without a session nothing in Consul ever deletes the key, which is
what we want: a forgotten epoch would restart at 1 and reuse fencing tokens. Expiry is the
record's ``renewed_at + ttl_s``, enforced by the holder's keeper and by whoever takes over.

python-consul2 is blocking (requests underneath), so every call runs in a worker thread, bounded by
``asyncio.wait_for`` and by the HTTP client's own timeout. A call abandoned by ``wait_for`` may
still land: the caller sees LeaseStoreUnavailable, which already means "may or may not have
changed".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import consul
import consul.base
import requests
from pydantic import ValidationError

from activities.lease import LeaseConflict, LeaseError, LeaseStore, LeaseStoreUnavailable
from domain.lease import Lease, LeaseRecord, lease_key
from domain.topology import LeaseConfig

T = TypeVar("T")

# Consul's own defaults for its HTTP and HTTPS listeners.
_DEFAULT_PORTS = {"http": 8500, "https": 8501}
_SCHEMES = {"http": "http", "https": "https", "consul": "http"}

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


class ConsulAddress(NamedTuple):
    scheme: str
    host: str
    port: int


def parse_consul_address(address: str) -> ConsulAddress:
    """``http://host:port``, ``https://host:port`` or ``consul://host:port`` (plain HTTP)."""
    expected = "expected http://host:port, https://host:port or consul://host:port"
    parts = urlsplit(address.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"lease.address {address!r} is not a Consul HTTP address: {expected}")
    if parts.username is not None or parts.password is not None:
        # Do not echo the address: the userinfo may be a secret.
        raise ValueError(
            "lease.address must not carry credentials; name the environment variable that holds "
            "the ACL token in lease.token_env"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"lease.address {address!r} has a path, query or fragment; {expected} "
            "(lease.bucket sets the key prefix)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"lease.address {address!r} has an invalid port; {expected}") from None
    # The client builds its URL from "host:port", so an IPv6 literal needs its brackets back.
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ConsulAddress(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])


class ConsulLeaseStore(LeaseStore):
    def __init__(
        self,
        client: Any,
        address: str,
        bucket: str,
        ttl_s: float,
        op_timeout_s: float,
        token: str | None = None,
    ) -> None:
        super().__init__(ttl_s, op_timeout_s)
        self._client = client
        self._address = address
        self._bucket = bucket
        self._token = token

    @classmethod
    async def connect(cls, config: LeaseConfig, op_timeout_s: float) -> ConsulLeaseStore:
        target = parse_consul_address(config.address)
        token = _token(config)
        client = _new_client(target, token, op_timeout_s)
        store = cls(client, config.address, config.bucket, config.ttl_s, op_timeout_s, token)
        try:
            leader = await store._call("reachability check", op_timeout_s, client.status.leader)
        except LeaseError:
            await store.close()
            raise
        if not leader:
            await store.close()
            raise LeaseStoreUnavailable(
                f"lease store at {config.address}: Consul has no Raft leader, so writes would fail"
            )
        return store

    def _key(self, system: str) -> str:
        return f"{self._bucket}/{lease_key(system)}"

    async def read(self, system: str) -> Lease | None:
        _, entry = await self._call(
            f"lease read for {system!r}", self.op_timeout_s, self._client.kv.get, self._key(system)
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
        written = await self._call(
            what,
            self.op_timeout_s,
            self._client.kv.put,
            key,
            record.model_dump_json().encode(),
            cas=0 if expected_revision is None else expected_revision,
        )
        if not written:
            raise LeaseConflict(system, await self.read(system))
        # put answers only true/false, so the new ModifyIndex must be read back. A consistent
        # read: a stale answer would make our own write look like a conflict.
        _, entry = await self._call(
            what,
            max(deadline - loop.time(), 0.0),
            self._client.kv.get,
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
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.to_thread(self._client.http.session.close), self.op_timeout_s
            )

    def _lease(self, system: str, entry: dict[str, Any]) -> Lease:
        revision = int(entry["ModifyIndex"])
        value = entry.get("Value")
        if not value:
            raise LeaseError(
                f"lease key {self._key(system)!r} holds no record (revision {revision}); "
                "it blocks every takeover until removed"
            )
        try:
            record = LeaseRecord.model_validate_json(value)
        except ValidationError as exc:
            raise LeaseError(
                f"lease key {self._key(system)!r} holds an unreadable record "
                f"(revision {revision}): {exc.error_count()} validation error(s)"
            ) from None
        return Lease(record=record, revision=revision)

    async def _call(
        self, what: str, timeout_s: float, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Run one blocking python-consul2 call in a thread; map its failures to LeaseErrors.

        Concurrent calls share the client's requests session: its urllib3 pool is thread-safe
        and Consul sets no cookies.
        """
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), timeout_s)
        except _REFUSED as exc:
            raise LeaseError(
                f"{what}: Consul at {self._address} refused it ({self._describe(exc)})"
            ) from None
        except json.JSONDecodeError:
            raise LeaseError(
                f"{what}: {self._address} answered with something other than Consul's JSON API"
            ) from None
        except _UNAVAILABLE as exc:
            raise LeaseStoreUnavailable(
                f"{what}: lease store at {self._address} unreachable ({self._describe(exc)})"
            ) from None

    def _describe(self, exc: BaseException) -> str:
        if not isinstance(exc, consul.base.ConsulException):
            # requests' messages repeat the URL and socket details; the type says enough.
            return type(exc).__name__
        # Consul's own error text ("No cluster leader", "Permission denied") is what an operator
        # needs. It never carries the token, but scrub it anyway: this text ends up in logs.
        detail = str(exc)[:200]
        if self._token:
            detail = detail.replace(self._token, "<token>")
        return f"{type(exc).__name__}: {detail}"


def _token(config: LeaseConfig) -> str | None:
    if not config.token_env:
        return None
    token = os.environ.get(config.token_env)
    if not token:
        # Fail here, not with a 403 on the first write in the middle of a failover.
        raise LeaseError(
            f"lease.token_env names {config.token_env}, which is not set in the environment"
        )
    return token


def _new_client(target: ConsulAddress, token: str | None, op_timeout_s: float) -> Any:
    try:
        with warnings.catch_warnings():
            # The constructor warns about legacy ACL and discovery-chain endpoints we never call.
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.Consul(
                host=target.host,
                port=target.port,
                scheme=target.scheme,
                token=token,
                timeout=op_timeout_s,
            )
    except consul.base.ConsulException:
        raise LeaseError(
            "python-consul2 rejected the CONSUL_HTTP_ADDR environment variable; it reads it even "
            "when lease.address is set. Unset it or use <host>:<port> or <scheme>://<host>:<port>"
        ) from None
    # The constructor lets CONSUL_HTTP_ADDR, CONSUL_HTTP_SSL and CONSUL_HTTP_TOKEN override its
    # arguments. The topology is the one source of the lease store's address and token, so pin
    # them back: an ambient variable must not send fencing writes to another cluster.
    client.http = client.http_connect(target.host, target.port, target.scheme, timeout=op_timeout_s)
    client.scheme = target.scheme
    client.token = token
    return client
