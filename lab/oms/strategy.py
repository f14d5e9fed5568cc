"""The lab primary's small random strategy: place, cancel, and book the venues' fills.

It exists to make the book move: orders open and close, fills change positions, and every change
is replicated, so a failover always has real state to carry over.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from decimal import Decimal

from activities.venue_client import (
    ReconnectCooldown,
    SessionInactive,
    StaleEpoch,
    VenueClient,
    VenueError,
)
from domain.book import (
    FillEvent,
    OrderEvent,
    OrderStatus,
    PositionEvent,
    Side,
    client_order_id_prefix,
)
from domain.reconciliation import parse_venue_fills
from lab.oms.node import OmsNode
from lab.topology_gen import SYMBOLS

log = logging.getLogger(__name__)

MAX_OPEN_ORDERS = 40


async def trade_forever(node: OmsNode, interval_s: float = 0.2) -> None:
    cooldown_until: dict[str, float] = {}
    while node.state.active:
        for client in node.venues.values():
            await _book_fills(node, client)
        # Not merely "trading": a process frozen past its lease's TTL must not send on thawing.
        if node.may_send():
            client = node.rng.choice(list(node.venues.values()))
            if time.monotonic() >= cooldown_until.get(client.name, 0):
                try:
                    await _act(node, client)
                except ReconnectCooldown as cooldown:
                    cooldown_until[client.name] = time.monotonic() + cooldown.retry_after_s
                except StaleEpoch as stale:
                    await node.fence(str(stale))
                    return
                except SessionInactive:
                    client.session = None
                except VenueError as exc:
                    log.warning("%s", exc)
        await asyncio.sleep(interval_s)


async def _act(node: OmsNode, client: VenueClient) -> None:
    if client.session is None:
        await client.connect()
    ours = [o for o in node.book.orders.values() if o.venue == client.name]
    if ours and (len(node.book.orders) >= MAX_OPEN_ORDERS or node.rng.random() < 0.3):
        await _cancel_one(node, client, node.rng.choice(ours).client_order_id)
    else:
        await _place_one(node, client)


async def _place_one(node: OmsNode, client: VenueClient) -> None:
    rng = node.rng
    client_order_id = f"{client_order_id_prefix(node.epoch)}{uuid.uuid4().hex[:16]}"
    if not node.may_send():  # the connect above may have outlasted the lease
        return
    order = await client.place_order(
        client_order_id=client_order_id,
        epoch=node.epoch,
        symbol=rng.choice(SYMBOLS),
        side=rng.choice([Side.BUY, Side.SELL]),
        qty=rng.randint(1, 10),
        price=Decimal(rng.randint(9500, 10500)) / 100,
    )
    node.record(OrderEvent(order=order))


async def _cancel_one(node: OmsNode, client: VenueClient, client_order_id: str) -> None:
    outcome = (await client.cancel([client_order_id])).get(client_order_id)
    order = node.book.orders.get(client_order_id)
    if order is not None and outcome in ("cancelled", "already_cancelled"):
        node.record(OrderEvent(order=order.model_copy(update={"status": OrderStatus.CANCELLED})))


async def _book_fills(node: OmsNode, client: VenueClient) -> None:
    try:
        raw = await client.fills_raw(since_seq=node.book.venue_fill_seq.get(client.name, 0))
        # One bad report must not stop the good ones being booked; it is logged once.
        fills, invalid = parse_venue_fills(client.name, raw)
        for finding in invalid:
            if (client.name, finding.trade_id) not in node.reported_bad_fills:
                node.reported_bad_fills.add((client.name, finding.trade_id))
                log.warning("%s: %s", client.name, finding.detail)
        for fill in fills:
            if fill.trade_id in node.book.trade_ids:
                continue
            node.record(FillEvent(fill=fill))
            node.record(PositionEvent(symbol=fill.symbol, qty=node.book.positions[fill.symbol]))
    except VenueError as exc:
        log.warning("fill polling: %s", exc)
