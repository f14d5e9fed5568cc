"""The lease store: where the fencing lease lives, and the one interface every backend honours.

Read it like Patroni's ``AbstractDCS``: methods are sorted by what they must guarantee.

Compare-and-set critical (atomic against every concurrent writer, or an error):
    ``take_over``  write a new tenure (epoch + 1) only if the lease is still ``expected``.
    ``renew``      extend the current tenure only if nobody wrote since ``lease``.
Retryable (safe to repeat; may lag the latest write by one round trip):
    ``read``       the current lease, or None if the system never had one.
Best effort:
    ``close``      release connections.

Every call is bounded by ``op_timeout_s``. A store that cannot answer raises
``LeaseStoreUnavailable``; callers decide between retrying and self-fencing.
"""

from __future__ import annotations

import abc
from datetime import UTC, datetime

from domain.lease import Lease, LeaseRecord
from domain.topology import LeaseConfig

# A holder renews every TTL/3, so a takeover racing it loses at most once or twice in a row.
_TAKEOVER_ATTEMPTS = 5


class LeaseError(RuntimeError):
    pass


class LeaseConflict(LeaseError):
    """A compare-and-set lost: someone wrote the lease since it was read."""

    def __init__(self, system: str, current: Lease | None) -> None:
        holder = (
            f"region {current.region!r} at epoch {current.epoch}" if current else "nobody (absent)"
        )
        super().__init__(f"lease for {system!r} changed underneath us; now held by {holder}")
        self.current = current


class LeaseLost(LeaseError):
    """The holder's tenure ended: another region took over. Stop trading now."""

    def __init__(self, held: Lease, current: Lease | None) -> None:
        taker = (
            f"region {current.region!r} took it at epoch {current.epoch}"
            if current
            else "the lease was deleted"
        )
        super().__init__(f"lost the lease for {held.record.system!r} (epoch {held.epoch}): {taker}")
        self.current = current


class LeaseStoreUnavailable(LeaseError):
    """The store did not answer in time. The lease may or may not have changed."""


class LeaseStore(abc.ABC):
    def __init__(self, ttl_s: float, op_timeout_s: float) -> None:
        self.ttl_s = ttl_s
        self.op_timeout_s = op_timeout_s

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
            renewed_at=_now(),
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
            update={"renewed_at": _now(), "holder": holder or lease.record.holder}
        )
        try:
            return await self._compare_and_set(lease.record.system, record, lease.revision)
        except LeaseConflict as conflict:
            current = conflict.current
            if current is not None and lease.same_tenure(current):
                return await self.renew(current, holder)
            raise LeaseLost(lease, current) from None


def _now() -> datetime:
    return datetime.now(UTC)


async def open_lease_store(config: LeaseConfig, op_timeout_s: float = 2.0) -> LeaseStore:
    """Connect to the configured backend."""
    if config.backend == "nats":
        from activities.lease_nats import NatsLeaseStore

        return await NatsLeaseStore.connect(config, op_timeout_s)
    if config.backend == "consul":
        from activities.lease_consul import ConsulLeaseStore

        return await ConsulLeaseStore.connect(config, op_timeout_s)
    raise LeaseError(
        f'lease.backend {config.backend!r} is not available yet; use lease.backend = "nats"'
    )
