"""Lease activities: what the runbooks do with the fencing store."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.lease import LeaseRecord
from domain.promotion import LeaseGrant
from domain.stores import LeaseConflict, LeaseStore


class AcquireLeaseRequest(BaseModel):
    system: str
    region: str
    holder: str


class LeaseActivities:
    def __init__(self, store: LeaseStore) -> None:
        self._store = store

    @activity.defn(name="read_lease")
    async def read_lease(self, system: str) -> LeaseRecord | None:
        """The current lease of ``system`` (None if it never had one). Read-only."""
        lease = await self._store.read(system)
        return lease.record if lease else None

    @activity.defn(name="acquire_lease")
    async def acquire_lease(self, request: AcquireLeaseRequest) -> LeaseGrant:
        """Take the lease for ``region`` at the next epoch, exactly once per promotion.

        ``holder`` names the promotion run. If the lease already shows that holder (an earlier
        attempt succeeded but its result was lost), that grant is returned: never a second bump.
        Store outages surface as retryable errors: the promotion waits, it never goes on without
        the lease.
        """
        current = await self._store.read(request.system)
        if current is not None and current.record.holder == request.holder:
            return LeaseGrant.from_record(current.record, activity.info().attempt)
        if current is not None and current.region == request.region:
            raise ApplicationError(
                f"region {request.region!r} already holds the lease of {request.system!r} at "
                f"epoch {current.epoch} (holder {current.record.holder}); nothing to promote",
                non_retryable=True,
            )
        try:
            granted = await self._store.take_over(
                request.system, request.region, request.holder, expected=current
            )
        except LeaseConflict as exc:
            raise ApplicationError(
                f"another writer took the lease of {request.system!r} during this promotion: {exc}",
                non_retryable=True,
            ) from None
        return LeaseGrant.from_record(granted.record, activity.info().attempt)
