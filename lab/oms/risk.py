"""The lab OMS's pre-trade risk check: an order that could take a symbol's position past its
``max_position`` (or is larger than its ``max_order_qty``) is not sent.

Worst case, not expected case: every open order on the order's side counts as if it filled,
so no order of fills can breach the limit. An order that moves the position back towards the
limit is allowed even when the position is already beyond it (a lowered limit must not trap a
desk in its position). A symbol with no row in the database is not limited; the lab seeds one
for every symbol it trades.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from domain.book import Order, Side
from domain.database import RiskParameter

# What the lab writes for a symbol that has no limit yet, the first time an OMS takes the lease.
DEFAULT_MAX_POSITION = Decimal(1000)


def risk_limit_breach(
    limits: Mapping[str, RiskParameter],
    symbol: str,
    side: Side,
    qty: int,
    position: int,
    open_orders: Iterable[Order],
) -> str | None:
    """Why sending this order could breach ``symbol``'s limits, or None when it cannot."""
    limit = limits.get(symbol)
    if limit is None:
        return None
    if limit.max_order_qty is not None and qty > limit.max_order_qty:
        return f"{qty} {symbol} is above max_order_qty {limit.max_order_qty}"
    resting = sum(o.remaining_qty for o in open_orders if o.symbol == symbol and o.side == side)
    worst = position + side.sign * (resting + qty)
    if side.sign * worst > limit.max_position:
        return (
            f"{side.value} {qty} {symbol} could take the position to {worst} "
            f"(max_position {limit.max_position})"
        )
    return None
