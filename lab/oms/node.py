"""One simulated OMS node (primary or DR region) and its role changes.

A node is ACTIVE (holds the lease, trades, publishes its book) or not (STANDBY: mirrors the
stream; FENCED: lost or gave up the lease and sends nothing). Only the DR-control protocol and
the lease move it between the two.

State that never reaches the stream lives in the region's own PostgreSQL (``[systems.database]``):
pending orders, written before they are sent, and risk limits, which an operator changes there
only. Every write carries the node's epoch and the database refuses an old one: the node then
stops trading, as it does when it loses the lease. The DR node reads both when told to sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal, TypeVar

import psycopg
from nats.aio.client import Client
from nats.js import JetStreamContext

from activities import replication
from activities.lease_keeper import LeaseKeeper, RenewalOutcome
from activities.replication import BookMirror, BookPublisher
from adapters.databases.postgres import fetch_state, resolve_dsn
from adapters.stores import open_lease_store
from adapters.venues.lab import LabOrderGateway
from domain.book import Book, FillEvent, OrderEvent, PositionEvent, Side
from domain.database import DbStateSummary, PendingOrder, RiskParameter
from domain.lease import Lease
from domain.stores import LeaseStore, StoreUnavailable
from domain.topology import LabVenueConfig, SystemConfig, Topology, VenueConfig
from lab import oms_db
from lab.oms.risk import DEFAULT_MAX_POSITION, risk_limit_breach
from lab.oms_metrics import OmsLeaseMetrics, RenewalFailure

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a fence waits for the venue call in flight (the lab clients time out sooner).
IN_FLIGHT_GRACE_S = 3.0


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


class UnknownVenues(ValueError):
    """A control call naming venues this OMS does not trade on."""


class OmsNode:
    def __init__(self, topology: Topology, system: SystemConfig, region: str, seed: int) -> None:
        self.topology = topology
        self.system = system
        self.region = region
        self.holder = f"oms:{system.name}:{region}"
        self.rng = random.Random(seed)
        self.book = Book()
        self.metrics = OmsLeaseMetrics(system.name, region)
        self._state = TradingState.STANDBY
        self.epoch = 0
        self.fenced_reason: str | None = None
        # The venues this node may send new orders to while trading: all of them for a node
        # that starts or is activated trading, each as the promotion releases it otherwise.
        self.released_venues: set[str] = set()
        self.started_at = datetime.now(UTC)
        self.venues = {
            v.name: LabOrderGateway(
                _lab_dialect(topology, v),
                v.account_for(system.name),
                user_agent=f"lab-oms-{region}",
            )
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
        # Held by the trader around one venue action and its recording: a fence lets the
        # action in flight finish, so the venue never changes without the stream hearing of it.
        self.venue_action = asyncio.Lock()
        # This region's database (raises DatabaseConfigError naming an unset variable).
        self.dsn = _database_dsn(system, region)
        self.risk_limits: dict[str, RiskParameter] = {}
        self.pending_orders: dict[str, PendingOrder] = {}  # as the last load read them
        self.database_loaded: DbStateSummary | None = None
        self.database_error: str | None = None
        self.risk_refusals: dict[str, int] = {}

    @property
    def state(self) -> TradingState:
        return self._state

    @state.setter
    def state(self, state: TradingState) -> None:
        self._state = state
        self.metrics.set_trading(state.active, self.epoch if state.active else None)

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
        if self.dsn is not None:
            # The limits in force before the first order; without the database, the last loaded.
            with contextlib.suppress(psycopg.Error):
                await self.load_database()
        self._keeper = LeaseKeeper(self._store, lease, self._on_lease_lost, self._on_renewal)
        self._keeper.start()
        self.publisher = BookPublisher(self.topology.replication, self.system.name)
        self.publisher.start()
        self.state = mode
        self.released_venues = set(self.venues) if mode is TradingState.TRADING else set()
        from lab.oms.strategy import trade_forever

        self.trader_task = asyncio.create_task(trade_forever(self), name="trader")
        log.info("active at epoch %s in %s mode", self.epoch, mode)
        await self._seed_risk_limits()

    def may_send(self, venue: str | None = None) -> bool:
        """Trading (at ``venue``, when given: released there), and still inside the lease's
        TTL on this process's own clock."""
        return (
            self.state is TradingState.TRADING
            and (venue is None or venue in self.released_venues)
            and self._keeper is not None
            and self._keeper.holds_lease()
        )

    async def _on_lease_lost(self, reason: str) -> None:
        await self.fence(reason)

    def _on_renewal(self, outcome: RenewalOutcome, lease: Lease) -> None:
        if outcome == "renewed":
            self.metrics.renewed(lease.epoch)
        else:
            self.metrics.renewal_failed(RenewalFailure(outcome))

    async def fence(self, reason: str) -> None:
        """Stop trading now. Safe to call repeatedly and from inside the trader."""
        if self.state is TradingState.FENCED:
            return
        self.state = TradingState.FENCED
        self.fenced_reason = reason
        self.released_venues = set()
        log.error("fenced: %s", reason)
        task, self.trader_task = self.trader_task, None
        if task is not None and task is not asyncio.current_task():
            # A cancel the venue has done but the stream never heard of leaves DR holding an
            # order nobody has: the action in flight (one venue call) finishes first.
            held = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IN_FLIGHT_GRACE_S):
                    await self.venue_action.acquire()
                    held = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if held:
                self.venue_action.release()
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
                    self.released_venues = set(self.venues)
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

    async def release(self, epoch: int | None = None, venues: list[str] | None = None) -> None:
        """Trade again on ``venues`` (None: every venue, as callers before per-venue release
        asked). Idempotent for the same epoch; venues already released stay released."""
        async with self._role_lock:
            if not self.state.active:
                raise ControlRefused(f"cannot release trading: node is {self.state.value}")
            if epoch is not None and epoch != self.epoch:
                raise ControlRefused(
                    f"release at epoch {epoch} refused: this node is active at epoch {self.epoch}"
                )
            unknown = sorted(set(venues or ()) - set(self.venues))
            if unknown:
                raise UnknownVenues(f"unknown venue(s) {unknown}; known: {sorted(self.venues)}")
            self.released_venues |= set(self.venues if venues is None else venues)
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

    async def sync_database(self) -> DbStateSummary | None:
        """The database part of ``/control/sync``: load pending orders and risk limits from
        this region's database (DR's promoted replica) and enforce those limits from now on."""
        async with self._role_lock:
            return await self.load_database()

    # --- the OMS database --------------------------------------------------------------------

    async def load_database(self) -> DbStateSummary | None:
        """Read pending orders and risk limits in one snapshot; None without a database."""
        if self.dsn is None:
            return None
        try:
            async with await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=oms_db.CONNECT_TIMEOUT_S
            ) as conn:
                state = await fetch_state(conn)
        except psycopg.Error as exc:
            self._database_failed(exc)
            raise
        self.risk_limits = {r.symbol: r for r in state.risk_parameters}
        self.pending_orders = {o.client_order_id: o for o in state.pending_orders}
        self.database_loaded = DbStateSummary.of(state)
        self.database_error = None
        return self.database_loaded

    async def write_risk_limit(
        self, symbol: str, max_position: Decimal, max_order_qty: Decimal | None = None
    ) -> RiskParameter:
        """An operator's change of a limit: in the database only (never on the stream), under
        this node's epoch, and in force here at once."""
        if self.dsn is None:
            raise ControlRefused(f"system {self.system.name!r} has no [systems.database]")
        if not self.state.active:
            raise ControlRefused(
                f"only the active OMS writes risk limits; this node is {self.state.value}"
            )
        parameter = await self._database_write(
            oms_db.set_risk_limit(self.dsn, self.epoch, symbol, max_position, max_order_qty)
        )
        self.risk_limits[symbol] = parameter
        return parameter

    def risk_breach(self, symbol: str, side: Side, qty: int) -> str | None:
        """Why this order must not be sent under the limits in force (counted), or None."""
        reason = risk_limit_breach(
            self.risk_limits,
            symbol,
            side,
            qty,
            self.book.positions.get(symbol, 0),
            self.book.orders.values(),
        )
        if reason is not None:
            self.risk_refusals[symbol] = self.risk_refusals.get(symbol, 0) + 1
        return reason

    async def record_pending_order(
        self, client_order_id: str, symbol: str, side: Side, qty: int, price: Decimal
    ) -> bool:
        """Write-ahead: the order is in the database under this epoch before it is sent.
        False (send nothing) when the database refuses the epoch or does not answer."""
        if self.dsn is None:
            return True
        try:
            await self._database_write(
                oms_db.add_pending_order(
                    self.dsn, self.epoch, client_order_id, symbol, side.value, Decimal(qty), price
                )
            )
        except (oms_db.StaleEpoch, psycopg.Error):
            return False
        return True

    async def close_pending_order(
        self, client_order_id: str, status: Literal["filled", "cancelled"]
    ) -> None:
        """Best effort: a pending order that stays open in the database is one more row for
        the next reconciliation, not a risk."""
        if self.dsn is None:
            return
        with contextlib.suppress(oms_db.StaleEpoch, psycopg.Error, LookupError):
            await self._database_write(
                oms_db.close_pending_order(self.dsn, self.epoch, client_order_id, status)
            )

    async def _seed_risk_limits(self) -> None:
        """A limit for every symbol the system trades that has none yet (a fresh database)."""
        missing = [s for s in self.system.symbols if s not in self.risk_limits]
        if self.dsn is None or not missing or not self.state.active:
            return
        with contextlib.suppress(oms_db.StaleEpoch, psycopg.Error):
            for symbol in missing:
                await self.write_risk_limit(symbol, DEFAULT_MAX_POSITION)
            await self.load_database()  # so /health says what the database now holds

    async def _database_write(self, write: Awaitable[T]) -> T:
        """Every write: a stale epoch fences this node, an unreachable database is recorded."""
        try:
            result = await write
        except oms_db.StaleEpoch as exc:
            await self.fence(f"the database refused epoch {self.epoch}: {exc}")
            raise
        except psycopg.Error as exc:
            self._database_failed(exc)
            raise
        self.database_error = None
        return result

    def _database_failed(self, exc: psycopg.Error) -> None:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first_line}"
        if reason != self.database_error:
            log.warning("OMS database: %s (no order is sent until a write succeeds)", reason)
        self.database_error = reason

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


def _database_dsn(system: SystemConfig, region: str) -> str | None:
    """This region's database: the primary region's server, or DR's replica. Each site keeps
    its variable whatever its role, so after a failback the primary writes to its own again."""
    config = system.database
    if config is None:
        return None
    variable = config.primary_dsn_env if region == system.primary_region else config.replica_dsn_env
    return resolve_dsn(variable, os.environ)


async def _retry_until_connected(node: OmsNode) -> LeaseStore:
    while True:
        try:
            return await open_lease_store(node.topology.lease)
        except StoreUnavailable as exc:
            log.warning("lease store not reachable yet, retrying: %s", exc)
            await asyncio.sleep(0.5)


def _lab_dialect(topology: Topology, venue: VenueConfig) -> LabVenueConfig:
    """The lab OMS trades through the lab's own order-gateway dialect: the venue's own entry
    when the runbooks use that dialect too, else the venue's REST face from ``[lab]``."""
    if isinstance(venue, LabVenueConfig):
        return venue
    gateway = topology.lab.order_gateway(venue.name) if topology.lab else None
    if gateway is None:
        raise ValueError(
            f"venue {venue.name}: the lab OMS trades through the lab dialect; the runbooks reach "
            f"this venue through {venue.adapter!r}, so [[lab.order_gateways]] must name its REST "
            "face"
        )
    return gateway
