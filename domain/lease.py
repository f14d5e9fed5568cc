"""The fencing lease: who may trade for a system, under which epoch.

The lease record lives in the lease store under ``dr/<system>/active``. Its epoch is the fencing
token: it only ever grows, by exactly one per takeover, and every order carries it. Renewals keep
the epoch and move ``renewed_at``; the store's own revision is the compare-and-set token.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


def lease_key(system: str) -> str:
    return f"dr/{system}/active"


class LeaseRecord(BaseModel):
    """The value stored under the lease key."""

    model_config = ConfigDict(frozen=True)

    system: str
    region: str
    epoch: Annotated[int, Field(ge=1)]
    holder: str
    renewed_at: datetime
    ttl_s: Annotated[float, Field(gt=0)]
    # Set by a takeover: whom it replaced and until when that tenure could still have traded.
    previous_region: str | None = None
    previous_expires_at: datetime | None = None

    @property
    def expires_at(self) -> datetime:
        return self.renewed_at + timedelta(seconds=self.ttl_s)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class Lease(BaseModel):
    """A lease record as read from the store, with the revision a compare-and-set must match."""

    model_config = ConfigDict(frozen=True)

    record: LeaseRecord
    revision: Annotated[int, Field(ge=1)]

    @property
    def epoch(self) -> int:
        return self.record.epoch

    @property
    def region(self) -> str:
        return self.record.region

    def same_tenure(self, other: Lease) -> bool:
        """True when ``other`` is this lease renewed, not a takeover."""
        return (
            self.record.system == other.record.system
            and self.record.region == other.record.region
            and self.record.epoch == other.record.epoch
        )
