"""The OMS side of fencing: keep the lease renewed, or stop trading.

The active OMS runs one keeper. It renews every TTL/3. It calls ``on_fenced`` exactly once:
- at once when a renewal finds another tenure (a promotion took the lease), or
- when no renewal has succeeded for a whole TTL (the store is unreachable: we may have been
  partitioned away and a promotion may be under way on the other side).

Time is measured from the moment the last successful renewal was *sent*, on the monotonic clock,
so the keeper fences no later than the ``renewed_at + ttl_s`` that a takeover would honour.
After fencing the keeper stops; trading resumes only through an explicit activation.

``on_renewal`` (optional) hears the outcome of every renewal attempt, for a holder's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from domain.lease import Lease
from domain.stores import LeaseLost, LeaseStore, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

FencedCallback = Callable[[str], Awaitable[None]]
# "renewed", or why not: the store did not answer, answered too late, another tenure holds the
# lease, or any other store error.
RenewalOutcome = Literal["renewed", "unavailable", "timeout", "lost", "error"]
RenewalObserver = Callable[[RenewalOutcome, Lease], None]


def _ignore(_outcome: RenewalOutcome, _lease: Lease) -> None:
    pass


class LeaseKeeper:
    def __init__(
        self,
        store: LeaseStore,
        lease: Lease,
        on_fenced: FencedCallback,
        on_renewal: RenewalObserver = _ignore,
    ) -> None:
        self._store = store
        self._lease = lease
        self._on_fenced = on_fenced
        self._on_renewal = on_renewal
        self._last_renewal_sent = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.fenced_reason: str | None = None

    @property
    def lease(self) -> Lease:
        return self._lease

    @property
    def ttl_s(self) -> float:
        return self._lease.record.ttl_s

    def holds_lease(self) -> bool:
        """Whether the holder may act now: not fenced, and its last renewal is younger than the
        TTL. Checked before every send, so a process that was frozen past its TTL (SIGSTOP, a
        long GC pause, a suspended VM) sends nothing when it thaws, before the keeper has even
        run to find the lease taken."""
        return (
            self.fenced_reason is None and time.monotonic() < self._last_renewal_sent + self.ttl_s
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease-keeper-{self._lease.epoch}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        interval = self.ttl_s / 3
        while True:
            deadline = self._last_renewal_sent + self.ttl_s
            sent = time.monotonic()
            if sent >= deadline:
                await self._fence(f"could not renew the lease within its TTL ({self.ttl_s:g} s)")
                return
            try:
                # A renewal that takes longer than what is left of the TTL is worthless.
                self._lease = await asyncio.wait_for(
                    self._store.renew(self._lease), timeout=max(deadline - sent, 0.01)
                )
                self._last_renewal_sent = sent
                self._on_renewal("renewed", self._lease)
            except LeaseLost as lost:
                self._on_renewal("lost", self._lease)
                await self._fence(str(lost))
                return
            except (StoreUnavailable, TimeoutError) as exc:
                self._on_renewal(
                    "timeout" if isinstance(exc, TimeoutError) else "unavailable", self._lease
                )
                log.warning("lease renewal failed, will retry: %s", exc or type(exc).__name__)
            except StoreError as exc:
                self._on_renewal("error", self._lease)
                log.error("lease renewal error, will retry: %s", exc)
            next_renewal = self._last_renewal_sent + interval
            deadline = self._last_renewal_sent + self.ttl_s
            wake = min(max(next_renewal, time.monotonic() + interval / 4), deadline)
            await asyncio.sleep(max(wake - time.monotonic(), 0))

    async def _fence(self, reason: str) -> None:
        self.fenced_reason = reason
        log.error("fencing: %s", reason)
        await self._on_fenced(reason)
