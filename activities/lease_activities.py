"""Lease activities: what the runbooks do with the fencing store."""

from __future__ import annotations

from temporalio import activity

from activities.lease import LeaseStore
from domain.lease import LeaseRecord


class LeaseActivities:
    def __init__(self, store: LeaseStore) -> None:
        self._store = store

    @activity.defn(name="read_lease")
    async def read_lease(self, system: str) -> LeaseRecord | None:
        """The current lease of ``system`` (None if it never had one). Read-only."""
        lease = await self._store.read(system)
        return lease.record if lease else None
