"""The lab OMS's database access: risk limits and pending orders, every write carrying the
writer's epoch (the database refuses a stale one; see ``lab/oms_schema.py``).

The lab OMS calls these with the epoch of the lease it holds. A refused write raises
``StaleEpoch``: the OMS must stop trading, a newer region holds the lease.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from adapters.databases.postgres import fetch_state
from domain.database import PendingOrder, RiskParameter
from lab.oms_schema import STALE_EPOCH_SQLSTATE

CONNECT_TIMEOUT_S = 3


class StaleEpoch(RuntimeError):
    """The database is fenced at a newer epoch than the writer's."""


async def _write(dsn: str, sql: str, params: tuple[Any, ...]) -> dict[str, Any]:
    try:
        async with (
            await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            ) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(sql.encode(), params)
            row = await cur.fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate == STALE_EPOCH_SQLSTATE:
            raise StaleEpoch(exc.diag.message_primary or str(exc)) from None
        raise
    if row is None:
        raise LookupError("the write matched no row")
    return row


async def set_risk_limit(
    dsn: str,
    epoch: int,
    symbol: str,
    max_position: Decimal,
    max_order_qty: Decimal | None = None,
) -> RiskParameter:
    """Change ``symbol``'s limits (``max_order_qty`` None keeps the current one)."""
    row = await _write(
        dsn,
        "SELECT * FROM oms_write_risk_limit(%s, %s, %s, %s)",
        (epoch, symbol, max_position, max_order_qty),
    )
    return RiskParameter.model_validate(row)


async def add_pending_order(
    dsn: str,
    epoch: int,
    client_order_id: str,
    symbol: str,
    side: str,
    quantity: Decimal,
    limit_price: Decimal | None,
) -> PendingOrder:
    row = await _write(
        dsn,
        "SELECT * FROM oms_write_pending_order(%s, %s, %s, %s, %s, %s)",
        (epoch, client_order_id, symbol, side, quantity, limit_price),
    )
    return PendingOrder.model_validate(row)


async def close_pending_order(dsn: str, epoch: int, client_order_id: str, status: str) -> None:
    """Mark a pending order ``filled`` or ``cancelled``."""
    await _write(
        dsn,
        "SELECT client_order_id FROM oms_close_pending_order(%s, %s, %s)",
        (epoch, client_order_id, status),
    )


async def load_risk_limits(dsn: str) -> dict[str, RiskParameter]:
    """Every symbol's limits, as the DR OMS loads them after promotion."""
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        state = await fetch_state(conn)
    return {r.symbol: r for r in state.risk_parameters}


async def load_pending_orders(dsn: str) -> list[PendingOrder]:
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
    ) as conn:
        state = await fetch_state(conn)
    return state.pending_orders
