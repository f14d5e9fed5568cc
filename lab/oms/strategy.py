"""The lab primary's small random strategy: place, cancel, and book the venues' fills.

It exists to make the book move: orders open and close, fills change positions, and every change
is replicated, so a failover always has real state to carry over. It keeps to the risk limits in
force (an order that could breach one is not sent) and records each order in the database
before sending it (an order the database refuses is not sent either).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from decimal import Decimal

from adapters.venues.lab import LabOrderGateway, SessionInactive
from domain.book import (
    FillEvent,
    OrderEvent,
    OrderStatus,
    PositionEvent,
    Side,
    client_order_id_prefix,
)
from domain.reconciliation import fills_from_reports
from domain.venues import ReconnectCooldown, StaleEpoch, VenueError
from lab.oms.node import OmsNode
from lab.topology_gen import SYMBOLS

log = logging.getLogger(__name__)

MAX_OPEN_ORDERS = 40


async def trade_forever(node: OmsNode, interval_s: float = 0.2) -> None:
    cooldown_until: dict[str, float] = {}
    acted_at: dict[str, float] = {}
    while node.state.active:
        for client in node.venues.values():
            await _book_fills(node, client)
        # Not merely "trading": a process frozen past its lease's TTL must not send on thawing.
        # Only released venues, each in turn: a venue just released is served next.
        released = [c for c in node.venues.values() if node.may_send(c.venue)]
        if released:
            client = min(released, key=lambda c: acted_at.get(c.venue, 0.0))
            acted_at[client.venue] = time.monotonic()
            if time.monotonic() >= cooldown_until.get(client.venue, 0):
                try:
                    async with node.venue_action:
                        await _act(node, client)
                except ReconnectCooldown as cooldown:
                    cooldown_until[client.venue] = time.monotonic() + cooldown.retry_after_s
                except StaleEpoch as stale:
                    await node.fence(str(stale))
                    return
                except SessionInactive:
                    client.session = None
                except VenueError as exc:
                    log.warning("%s", exc)
        await asyncio.sleep(interval_s)


async def _act(node: OmsNode, client: LabOrderGateway) -> None:
    if client.session is None:
        await client.connect()
    ours = [o for o in node.book.orders.values() if o.venue == client.venue]
    if ours and (len(node.book.orders) >= MAX_OPEN_ORDERS or node.rng.random() < 0.3):
        await _cancel_one(node, client, node.rng.choice(ours).client_order_id)
    else:
        await _place_one(node, client)


async def _place_one(node: OmsNode, client: LabOrderGateway) -> None:
    rng = node.rng
    client_order_id = f"{client_order_id_prefix(node.epoch)}{uuid.uuid4().hex[:16]}"
    symbol, side = rng.choice(SYMBOLS), rng.choice([Side.BUY, Side.SELL])
    qty, price = rng.randint(1, 10), Decimal(rng.randint(9500, 10500)) / 100
    if node.risk_breach(symbol, side, qty) is not None:
        return  # held back, and counted in /health's risk_refusals
    if not node.may_send(client.venue):  # the connect above may have outlasted the lease
        return
    if not await node.record_pending_order(client_order_id, symbol, side, qty, price):
        return
    if not node.may_send():  # ...and so may the write
        await node.close_pending_order(client_order_id, "cancelled")
        return
    try:
        order = await client.place_order(
            client_order_id=client_order_id,
            epoch=node.epoch,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
        )
    except Exception:
        await node.close_pending_order(client_order_id, "cancelled")
        raise
    node.record(OrderEvent(order=order))


async def _cancel_one(node: OmsNode, client: LabOrderGateway, client_order_id: str) -> None:
    outcome = (await client.cancel([client_order_id])).get(client_order_id)
    order = node.book.orders.get(client_order_id)
    if order is not None and outcome in ("cancelled", "already_cancelled"):
        node.record(OrderEvent(order=order.model_copy(update={"status": OrderStatus.CANCELLED})))
        await node.close_pending_order(client_order_id, "cancelled")


async def _book_fills(node: OmsNode, client: LabOrderGateway) -> None:
    try:
        reports = await client.fill_pages(since_seq=node.book.venue_fill_seq.get(client.venue, 0))
        # One bad report must not stop the good ones being booked; it is logged once.
        fills, invalid = fills_from_reports(client.venue, reports)
        for finding in invalid:
            if (client.venue, finding.trade_id) not in node.reported_bad_fills:
                node.reported_bad_fills.add((client.venue, finding.trade_id))
                log.warning("%s: %s", client.venue, finding.detail)
        for fill in fills:
            if fill.trade_key in node.book.trade_ids:
                continue
            node.record(FillEvent(fill=fill))
            node.record(PositionEvent(symbol=fill.symbol, qty=node.book.positions[fill.symbol]))
            if fill.client_order_id not in node.book.orders:
                await node.close_pending_order(fill.client_order_id, "filled")
    except VenueError as exc:
        log.warning("fill polling: %s", exc)
