"""The state-store ports: the fencing lease, and each feed's active source.

Two stores, two contracts, because they promise different things: the lease is the fencing token
(compare-and-set or nothing), the active source is a pointer consumers follow (last writer wins,
pushed to watchers). A backend (``adapters/stores/<name>.py``) implements both over one service.

Pure: nothing here does I/O or reads a clock. The take-over and renewal logic lives here once,
over the one primitive a backend must supply (an atomic compare-and-set), with the clock
injected by the backend.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.feeds import ActiveSource
from domain.lease import Lease, LeaseRecord

Clock = Callable[[], datetime]

# A holder renews every TTL/3, so a takeover racing it loses at most once or twice in a row.
_TAKEOVER_ATTEMPTS = 5


# --- errors ------------------------------------------------------------------------------------


class StoreError(RuntimeError):
    """The store answered, and retrying will not change the answer: a refusal (ACL, bad
    request) or a stored value nobody can read. A person has to look."""


class StoreUnavailable(StoreError):
    """The store did not answer within the operation timeout. Retryable. For a write, the value
    may or may not have changed."""


class StoreConfigError(StoreError, ValueError):
    """The configuration cannot work (a missing credential variable, say). Not retryable; the
    message names the field to fix."""


class StoreConflict(StoreError):
    """A compare-and-set lost: someone wrote since the value was read."""


class LeaseConflict(StoreConflict):
    """A lease compare-and-set lost: someone wrote the lease since it was read."""

    def __init__(self, system: str, current: Lease | None) -> None:
        holder = (
            f"region {current.region!r} at epoch {current.epoch}" if current else "nobody (absent)"
        )
        super().__init__(f"lease for {system!r} changed underneath us; now held by {holder}")
        self.current = current


class LeaseLost(StoreConflict):
    """The holder's tenure ended: another region took over. Stop trading now."""

    def __init__(self, held: Lease, current: Lease | None) -> None:
        taker = (
            f"region {current.region!r} took it at epoch {current.epoch}"
            if current
            else "the lease was deleted"
        )
        super().__init__(f"lost the lease for {held.record.system!r} (epoch {held.epoch}): {taker}")
        self.current = current


# --- the lease store ---------------------------------------------------------------------------


class LeaseStore(abc.ABC):
    """Where the fencing lease lives. Read it like Patroni's ``AbstractDCS``: methods are sorted
    by what they must guarantee.

    Compare-and-set critical (atomic against every concurrent writer, or an error):
        ``take_over``         write a new tenure (epoch + 1) only if the lease is still
                              ``expected``; LeaseConflict otherwise.
        ``renew``             extend the current tenure only if nobody took it; LeaseLost
                              otherwise.
        ``_compare_and_set``  (backend) write a record only if the stored revision is the one
                              given (None: absent); LeaseConflict with the current lease
                              otherwise. Everything above rests on it.
    Retryable (safe to repeat; may lag the latest write by one round trip):
        ``read``              the current lease, or None if the system never had one.
    Best effort:
        ``close``             release connections; never raises.

    Every call is bounded by ``op_timeout_s``. A store that cannot answer raises
    StoreUnavailable; callers decide between retrying (a promotion) and self-fencing (the
    holder's keeper). A stored record nobody can read raises StoreError.

    A backend must never let the key expire on its own: a forgotten epoch would restart at 1 and
    reuse fencing tokens. Expiry is the record's ``renewed_at + ttl_s``, enforced by the
    holder's keeper and by whoever takes over.
    """

    def __init__(self, ttl_s: float, op_timeout_s: float, clock: Clock) -> None:
        self.ttl_s = ttl_s
        self.op_timeout_s = op_timeout_s
        self._clock = clock

    @abc.abstractmethod
    async def read(self, system: str) -> Lease | None: ...

    @abc.abstractmethod
    async def _compare_and_set(
        self, system: str, record: LeaseRecord, expected_revision: int | None
    ) -> Lease:
        """Write ``record`` if the stored revision is ``expected_revision`` (None: absent).

        Raises LeaseConflict (with the current lease) when it is not.
        """

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def take_over(
        self, system: str, region: str, holder: str, expected: Lease | None
    ) -> Lease:
        """Start a new tenure for ``region``: epoch = expected epoch + 1 (1 for a new system).

        ``expected`` names the tenure being replaced. Renewals of that same tenure by its (perhaps
        dying) holder do not defeat the takeover; a different tenure does (LeaseConflict).
        Idempotent for its caller: if ``holder`` already holds the next tenure (a retry whose
        first attempt succeeded), that tenure is returned instead of a second bump.
        """
        epoch = expected.epoch + 1 if expected else 1
        record = LeaseRecord(
            system=system,
            region=region,
            epoch=epoch,
            holder=holder,
            renewed_at=self._clock(),
            ttl_s=self.ttl_s,
        )
        for _ in range(_TAKEOVER_ATTEMPTS):
            if expected is not None:
                record = record.model_copy(
                    update={
                        "previous_region": expected.region,
                        "previous_expires_at": expected.record.expires_at,
                    }
                )
            try:
                return await self._compare_and_set(
                    system, record, expected.revision if expected else None
                )
            except LeaseConflict as conflict:
                current = conflict.current
                if current is not None and current.record == record.model_copy(
                    update={"renewed_at": current.record.renewed_at}
                ):
                    return current
                if expected is None or current is None or not expected.same_tenure(current):
                    raise
                expected = current  # the old holder renewed in between: replace that renewal
        raise LeaseConflict(system, await self.read(system))

    async def renew(self, lease: Lease, holder: str | None = None) -> Lease:
        """Extend ``lease``'s tenure, optionally handing it to ``holder`` in the same region.

        Raises LeaseLost if another tenure began. A renewal whose reply was lost and is retried
        finds its own write and succeeds.
        """
        record = lease.record.model_copy(
            update={"renewed_at": self._clock(), "holder": holder or lease.record.holder}
        )
        try:
            return await self._compare_and_set(lease.record.system, record, lease.revision)
        except LeaseConflict as conflict:
            current = conflict.current
            if current is not None and lease.same_tenure(current):
                return await self.renew(current, holder)
            raise LeaseLost(lease, current) from None


# --- the active-source store -------------------------------------------------------------------


class ActiveSourceState(BaseModel):
    """One feed's active source as stored, at one revision.

    - absent:         ``revision`` None, ``active`` None (never written; or deleted, as read)
    - cleared:        ``revision`` set, ``active`` None (a watcher saw the key deleted)
    - unreadable:     ``revision`` set, ``active`` None, ``unreadable`` says why
    - set:            ``revision`` and ``active`` set
    """

    model_config = ConfigDict(frozen=True)

    feed: str
    revision: int | None = Field(default=None, ge=1)
    active: ActiveSource | None = None
    unreadable: str | None = None

    @property
    def cleared(self) -> bool:
        return self.revision is not None and self.active is None and self.unreadable is None


def decode_active_source(feed: str, revision: int, value: bytes | None) -> ActiveSourceState:
    """The state a stored value at ``revision`` stands for. The stored form is the
    ActiveSource's JSON, whichever backend holds it."""
    try:
        active = ActiveSource.model_validate_json(value or b"")
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "value"
        why = f"{exc.error_count()} validation error(s): {where}: {error['msg']}"
        return ActiveSourceState(feed=feed, revision=revision, unreadable=why)
    if active.feed != feed:
        return ActiveSourceState(
            feed=feed, revision=revision, unreadable=f"it names feed {active.feed!r}"
        )
    return ActiveSourceState(feed=feed, revision=revision, active=active)


def same_choice(a: ActiveSource, b: ActiveSource) -> bool:
    """Whether a consumer following ``a`` would notice being told ``b`` (when or why does not
    matter to it)."""
    return (a.feed, a.source, a.url.rstrip("/")) == (b.feed, b.source, b.url.rstrip("/"))


class ActiveSourceStore(abc.ABC):
    """Where each feed's active source is published and watched. Sorted by guarantee:

    Idempotent write (last writer wins; the feed monitor is the one writer):
        ``write``   make ``active`` the feed's source. Writing the source already stored changes
                    nothing (no new revision, so no watcher wakes up); the stored revision is
                    returned either way.
    Retryable (safe to repeat):
        ``read``    the stored state now (``revision`` None if never written).
        ``watch``   an async iterator: the stored state first, then every change, in order.
                    It follows the store across short outages where the backend can; when it
                    cannot it raises StoreUnavailable and the caller opens a new watch (which
                    starts again with the current state, so a consumer that remembers the last
                    revision it applied loses nothing and applies nothing twice).
    Best effort:
        ``close``   release connections; never raises.

    ``read`` and ``write`` are bounded by ``op_timeout_s`` and raise StoreUnavailable when the
    store does not answer in time; an unreadable stored value is reported in the state's
    ``unreadable``, never raised, so one bad write cannot stop a consumer.
    """

    def __init__(self, op_timeout_s: float) -> None:
        self.op_timeout_s = op_timeout_s

    @abc.abstractmethod
    async def read(self, feed: str) -> ActiveSourceState: ...

    @abc.abstractmethod
    async def _put(self, active: ActiveSource) -> int:
        """Store ``active`` unconditionally; the new revision."""

    @abc.abstractmethod
    def watch(self, feed: str) -> AsyncIterator[ActiveSourceState]: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def write(self, active: ActiveSource) -> int:
        current = await self.read(active.feed)
        if (
            current.revision is not None
            and current.active is not None
            and same_choice(current.active, active)
        ):
            return current.revision
        return await self._put(active)
