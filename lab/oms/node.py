"""One simulated OMS node (primary or DR region) and its role changes.

A node is ACTIVE (holds the lease, trades, publishes its book) or not (STANDBY: mirrors the
stream; FENCED: lost or gave up the lease and sends nothing). Only the DR-control protocol and
the lease move it between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import UTC, datetime
from enum import StrEnum

from nats.aio.client import Client
from nats.js import JetStreamContext

from activities import replication
from activities.lease import LeaseStore, LeaseStoreUnavailable, open_lease_store
from activities.lease_keeper import LeaseKeeper
from activities.replication import BookMirror, BookPublisher
from activities.venue_client import VenueClient
from domain.book import Book, FillEvent, OrderEvent, PositionEvent
from domain.lease import Lease
from domain.topology import SystemConfig, Topology

log = logging.getLogger(__name__)


class TradingState(StrEnum):
    STANDBY = "standby"
    TRADING = "trading"
    REDUCE_ONLY = "reduce_only"
    FENCED = "fenced"

    @property
    def active(self) -> bool:
        return self in (TradingState.TRADING, TradingState.REDUCE_ONLY)


class ControlRefused(Exception):
    """A control call that contradicts the lease or the epoch; the message says why."""


class OmsNode:
    def __init__(self, topology: Topology, system: SystemConfig, region: str, seed: int) -> None:
        self.topology = topology
        self.system = system
        self.region = region
        self.holder = f"oms:{system.name}:{region}"
        self.rng = random.Random(seed)
        self.book = Book()
        self.state = TradingState.STANDBY
        self.epoch = 0
        self.fenced_reason: str | None = None
        self.started_at = datetime.now(UTC)
        self.venues = {
            v.name: VenueClient(v, member=system.name, user_agent=f"lab-oms-{region}")
            for v in topology.venues_of(system)
        }
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._store: LeaseStore | None = None
        self._keeper: LeaseKeeper | None = None
        self.reported_bad_fills: set[tuple[str, str]] = set()
        self.publisher: BookPublisher | None = None
        self.mirror: BookMirror | None = None
        self._role_lock = asyncio.Lock()
        self.trader_task: asyncio.Task[None] | None = None

    @property
    def is_primary_region(self) -> bool:
        return self.region == self.system.primary_region

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "node not started"
        return self._js

    async def start(self) -> None:
        """Rebuild the book from the stream, then claim the lease if this is the primary."""
        self._nc = await replication.connect(self.topology.replication)
        self._js = self._nc.jetstream(timeout=2.0)
        await replication.ensure_stream(self._js, self.topology.replication)
        self._store = await _retry_until_connected(self)
        await self._start_mirror(from_scratch=True)
        applied, last = await self.mirror_catch_up()
        log.info("book rebuilt from stream: applied %s of %s", applied, last)
        if self.is_primary_region:
            await self._claim_on_start()

    async def _claim_on_start(self) -> None:
        assert self._store is not None
        lease = await self._store.read(self.system.name)
        if lease is None:
            lease = await self._store.take_over(self.system.name, self.region, self.holder, None)
        elif lease.region != self.region:
            self.state = TradingState.FENCED
            self.fenced_reason = (
                f"lease held by region {lease.region!r} at epoch {lease.epoch}; not trading"
            )
            log.warning(self.fenced_reason)
            return
        else:
            lease = await self._store.renew(lease, holder=self.holder)
        await self._become_active(lease, TradingState.TRADING)

    async def _become_active(self, lease: Lease, mode: TradingState) -> None:
        assert self._store is not None
        if self.mirror is not None:
            await self.mirror_catch_up()
            await self.mirror.stop()
            self.mirror = None
        self.epoch = lease.epoch
        self.fenced_reason = None
        self._keeper = LeaseKeeper(self._store, lease, self._on_lease_lost)
        self._keeper.start()
        self.publisher = BookPublisher(self.js, self.topology.replication, self.system.name)
        self.publisher.start()
        self.state = mode
        from lab.oms.strategy import trade_forever

        self.trader_task = asyncio.create_task(trade_forever(self), name="trader")
        log.info("active at epoch %s in %s mode", self.epoch, mode)

    def may_send(self) -> bool:
        """Trading, and still inside the lease's TTL on this process's own clock."""
        return (
            self.state is TradingState.TRADING
            and self._keeper is not None
            and self._keeper.holds_lease()
        )

    async def _on_lease_lost(self, reason: str) -> None:
        await self.fence(reason)

    async def fence(self, reason: str) -> None:
        """Stop trading now. Safe to call repeatedly and from inside the trader."""
        if self.state is TradingState.FENCED:
            return
        self.state = TradingState.FENCED
        self.fenced_reason = reason
        log.error("fenced: %s", reason)
        task, self.trader_task = self.trader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._keeper is not None:
            await self._keeper.stop()
            self._keeper = None
        if self.publisher is not None:
            # Facts already recorded (fills) still go out if NATS lets them; then stop.
            await self.publisher.flush(timeout_s=1.0)
            await self.publisher.stop()
        for client in self.venues.values():
            with contextlib.suppress(Exception):
                await client.logout()

    def record(self, event: OrderEvent | FillEvent | PositionEvent) -> None:
        assert self.publisher is not None
        self.publisher.record(self.book, self.epoch, event)

    # --- the DR-control protocol -------------------------------------------------------------

    async def deactivate(self, epoch: int) -> None:
        async with self._role_lock:
            if epoch < self.epoch:
                raise ControlRefused(f"deactivate epoch {epoch} is older than ours ({self.epoch})")
            await self.fence(f"deactivated by control call for epoch {epoch}")

    async def activate(self, epoch: int, mode: TradingState) -> None:
        async with self._role_lock:
            if self.state.active and self.epoch == epoch:
                if mode is TradingState.TRADING:
                    self.state = mode
                return  # same epoch again: idempotent
            assert self._store is not None
            lease = await self._store.read(self.system.name)
            if lease is None or lease.region != self.region or lease.epoch != epoch:
                held = f"region {lease.region!r} epoch {lease.epoch}" if lease else "nobody"
                raise ControlRefused(
                    f"cannot activate {self.region!r} at epoch {epoch}: the lease is held by {held}"
                )
            if self.state.active:
                raise ControlRefused(f"already active at epoch {self.epoch}")
            lease = await self._store.renew(lease, holder=self.holder)
            await self._become_active(lease, mode)

    async def release(self) -> None:
        async with self._role_lock:
            if not self.state.active:
                raise ControlRefused(f"cannot release trading: node is {self.state.value}")
            self.state = TradingState.TRADING

    async def sync(self, timeout_s: float) -> tuple[int, int]:
        """Bring a non-active book level with the stream; a fenced node rebuilds from scratch."""
        async with self._role_lock:
            if self.state.active:
                assert self.publisher is not None
                await self.publisher.flush(timeout_s)
                return self.book.watermark.seq, self.publisher.last_published_seq
            if self.mirror is None:
                await self._start_mirror(from_scratch=True)
                self.state = TradingState.STANDBY
                self.fenced_reason = None
            return await self.mirror_catch_up(timeout_s)

    async def _start_mirror(self, from_scratch: bool) -> None:
        if from_scratch:
            self.book = Book()
        self.mirror = BookMirror(self.js, self.topology.replication, self.system.name, self.book)
        await self.mirror.start()

    async def mirror_catch_up(self, timeout_s: float | None = None) -> tuple[int, int]:
        assert self.mirror is not None
        return await self.mirror.catch_up(timeout_s or self.topology.replication.sync_timeout_s)

    async def close(self) -> None:
        await self.fence("shutting down") if self.state.active else None
        if self.mirror is not None:
            await self.mirror.stop()
        for client in self.venues.values():
            await client.close()
        if self._store is not None:
            await self._store.close()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()


async def _retry_until_connected(node: OmsNode) -> LeaseStore:
    while True:
        try:
            return await open_lease_store(node.topology.lease)
        except LeaseStoreUnavailable as exc:
            log.warning("lease store not reachable yet, retrying: %s", exc)
            await asyncio.sleep(0.5)
