"""The DR-control protocol over HTTP+JSON, served by a lab OMS node.

This is the contract a user's OMS implements; FastAPI publishes it as OpenAPI at /openapi.json.
Every control call is idempotent for the same epoch.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import psycopg
from fastapi import FastAPI, HTTPException
from pydantic import AwareDatetime, BaseModel, Field

from adapters.venues.lab import LabOrderGateway
from domain.book import BookSnapshot, OrderEvent, Side, Watermark, client_order_id_prefix
from domain.database import DbStateSummary, RiskParameter
from domain.venues import ReconnectCooldown, StaleEpoch, VenueError
from lab import oms_db
from lab.oms.node import ControlRefused, OmsNode, TradingState, UnknownVenues
from lab.oms_metrics import add_metrics_route
from lab.service import install_latency_chaos

Epoch = Annotated[int, Field(ge=1)]


class Health(BaseModel):
    system: str
    region: str
    role: Literal["active", "standby"]
    trading_state: TradingState
    epoch: int
    last_applied_seq: int
    last_applied_event_at: datetime | None
    last_published_seq: int
    last_published_event_at: datetime | None
    replication_lag_s: float
    publish_backlog: int
    malformed_events: int
    position_mismatches: int
    fenced_reason: str | None
    # symbol -> max_position: the risk limits this node enforces on new orders now.
    risk_limits: dict[str, Decimal]
    # Orders the strategy held back because they could breach a limit, by symbol.
    risk_refusals: dict[str, int]
    # What the last load from this region's database read (None: not loaded, or no database).
    database: DbStateSummary | None
    # The last database error, until a database call succeeds again.
    database_error: str | None
    # Where a trading node sends new orders (per-venue release); empty while not trading.
    released_venues: list[str] = []


class DeactivateRequest(BaseModel):
    epoch: Epoch


class ActivateRequest(BaseModel):
    epoch: Epoch
    mode: Literal["reduce_only", "normal"] = "reduce_only"


class ReleaseRequest(BaseModel):
    """Both optional, so the body-less release of older callers still means "every venue"."""

    epoch: Epoch | None = None
    venues: list[str] | None = None


class SyncResult(BaseModel):
    applied_seq: int
    stream_last_seq: int
    gap_events: int
    # The database part: what was loaded from this region's (promoted) database: counts of
    # pending orders and risk parameters, their symbols and the last change time. None when
    # the system has no database.
    database: DbStateSummary | None = None


class RiskLimitChange(BaseModel):
    symbol: Annotated[str, Field(min_length=1, max_length=64)]
    max_position: Annotated[Decimal, Field(ge=0)]
    # None keeps the symbol's current max_order_qty.
    max_order_qty: Annotated[Decimal | None, Field(gt=0)] = None


class ControlResult(BaseModel):
    trading_state: TradingState
    epoch: int


class ForcedOrder(BaseModel):
    venue: str
    symbol: str = "AAPL"
    side: Side = Side.BUY
    qty: Annotated[int, Field(gt=0)] = 1
    price: Annotated[Decimal, Field(gt=0)] = Decimal("100")


class ForcedOrderResult(BaseModel):
    accepted: bool
    epoch: int
    detail: str


def create_app(node: OmsNode) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.close()

    app = FastAPI(
        title="DR-control protocol",
        version="1",
        description="What an OMS implements so failover-runbooks can fence, sync and promote it.",
        lifespan=lifespan,
    )
    install_latency_chaos(app)
    add_metrics_route(app, node.metrics)

    def result() -> ControlResult:
        return ControlResult(trading_state=node.state, epoch=node.epoch)

    @app.get("/health")
    async def health() -> Health:
        publisher, mirror = node.publisher, node.mirror
        return Health(
            system=node.system.name,
            region=node.region,
            role="active" if node.state.active else "standby",
            trading_state=node.state,
            epoch=node.epoch,
            last_applied_seq=node.book.watermark.seq,
            last_applied_event_at=node.book.watermark.published_at,
            last_published_seq=publisher.last_published_seq if publisher else 0,
            last_published_event_at=publisher.last_published_event_at if publisher else None,
            replication_lag_s=mirror.last_lag_s if mirror else 0.0,
            publish_backlog=publisher.backlog if publisher else 0,
            malformed_events=mirror.malformed_events if mirror else 0,
            position_mismatches=node.book.position_mismatches,
            fenced_reason=node.fenced_reason,
            risk_limits={s: r.max_position for s, r in sorted(node.risk_limits.items())},
            risk_refusals=dict(sorted(node.risk_refusals.items())),
            database=node.database_loaded,
            database_error=node.database_error,
            released_venues=sorted(node.released_venues),
        )

    @app.post("/control/deactivate")
    async def deactivate(request: DeactivateRequest) -> ControlResult:
        try:
            await node.deactivate(request.epoch)
        except ControlRefused as exc:
            raise HTTPException(409, str(exc)) from None
        return result()

    @app.post("/control/activate")
    async def activate(request: ActivateRequest) -> ControlResult:
        mode = TradingState.TRADING if request.mode == "normal" else TradingState.REDUCE_ONLY
        try:
            await node.activate(request.epoch, mode)
        except ControlRefused as exc:
            raise HTTPException(409, str(exc)) from None
        return result()

    @app.post("/control/sync")
    async def sync() -> SyncResult:
        applied, last = await node.sync(node.topology.replication.sync_timeout_s)
        try:
            loaded = await node.sync_database()
        except psycopg.Error:
            raise HTTPException(
                503, f"the stream is synced; the database did not answer: {node.database_error}"
            ) from None
        return SyncResult(
            applied_seq=applied,
            stream_last_seq=last,
            gap_events=max(last - applied, 0),
            database=loaded,
        )

    @app.post("/control/release")
    async def release(request: ReleaseRequest | None = None) -> ControlResult:
        """Trading resumes on ``venues`` (all when absent) at ``epoch``, venue by venue as the
        promotion reconciles each; the others stay reduce-only."""
        body = request or ReleaseRequest()
        try:
            await node.release(body.epoch, body.venues)
        except ControlRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except UnknownVenues as exc:
            raise HTTPException(422, str(exc)) from None
        return result()

    @app.get("/book")
    async def book(
        fills_since: AwareDatetime | None = None,
        venue: str | None = None,
        include_orders: bool = True,
    ) -> BookSnapshot:
        """Open orders, positions and watermark; ``fills_since`` adds the fills booked since.

        ``venue`` narrows orders and fills to one venue; ``include_orders=false`` leaves the
        orders out (a runbook that needs only the watermark should not carry the whole book).
        """
        snapshot = node.book.snapshot(fills_since)
        if venue is not None or not include_orders:
            snapshot = snapshot.model_copy(
                update={
                    "open_orders": snapshot.open_orders_at(venue)
                    if include_orders and venue is not None
                    else ([] if not include_orders else snapshot.open_orders),
                    "fills": [f for f in snapshot.fills if venue is None or f.venue == venue],
                }
            )
        publisher = node.publisher
        if node.state.active and publisher is not None:
            published = Watermark(
                seq=publisher.last_published_seq, published_at=publisher.last_published_event_at
            )
            snapshot = snapshot.model_copy(
                update={"watermark": published, "unpublished_events": publisher.backlog}
            )
        return snapshot

    @app.post("/admin/risk-limits")
    async def change_risk_limit(change: RiskLimitChange) -> RiskParameter:
        """An operator changes a risk limit. It goes to the database only, never on the
        stream, under this node's epoch; this node enforces it at once, DR once it syncs."""
        symbols = node.system.symbols
        if symbols and change.symbol not in symbols:
            raise HTTPException(422, f"{change.symbol!r} is not traded here; one of {symbols}")
        try:
            return await node.write_risk_limit(
                change.symbol, change.max_position, change.max_order_qty
            )
        except ControlRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except oms_db.StaleEpoch as exc:
            raise HTTPException(409, f"refused by the database, this node stops: {exc}") from None
        except psycopg.Error:
            detail = f"the database did not answer: {node.database_error}"
            raise HTTPException(503, detail) from None

    @app.post("/admin/force-order")
    async def force_order(request: ForcedOrder) -> ForcedOrderResult:
        """Send an order with this node's epoch whatever its state: the split-brain probe."""
        client = node.venues.get(request.venue)
        if client is None:
            raise HTTPException(
                404, f"unknown venue {request.venue!r}; known: {sorted(node.venues)}"
            )
        epoch = max(node.epoch, 1)
        try:
            if client.session is None:
                await _connect_waiting_out_cooldown(client)

            order = await client.place_order(
                f"{client_order_id_prefix(epoch)}forced-{uuid.uuid4().hex[:12]}",
                epoch,
                request.symbol,
                request.side,
                request.qty,
                request.price,
            )
        except StaleEpoch as exc:
            return ForcedOrderResult(accepted=False, epoch=epoch, detail=str(exc))
        except VenueError as exc:
            raise HTTPException(502, str(exc)) from None
        if node.publisher is not None and node.state.active:
            node.record(OrderEvent(order=order))
        return ForcedOrderResult(accepted=True, epoch=epoch, detail=order.client_order_id)

    return app


async def _connect_waiting_out_cooldown(client: LabOrderGateway) -> None:
    """Log on even if the venue first imposes its cooldown (a forced order insists)."""
    try:
        await client.connect()
    except ReconnectCooldown as cooldown:
        await asyncio.sleep(cooldown.retry_after_s)
        await client.connect()
