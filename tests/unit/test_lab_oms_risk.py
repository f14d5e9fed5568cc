"""The lab OMS's pre-trade check: worst case over resting orders, and never a trap."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from domain.book import Order, Side
from domain.database import RiskParameter
from lab.oms.risk import risk_limit_breach

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def limit(max_position: int, max_order_qty: int | None = None) -> dict[str, RiskParameter]:
    return {
        "AAPL": RiskParameter(
            symbol="AAPL",
            max_position=Decimal(max_position),
            max_order_qty=None if max_order_qty is None else Decimal(max_order_qty),
            epoch=1,
            updated_at=NOW,
        )
    }


def resting(side: Side, qty: int, symbol: str = "AAPL") -> Order:
    return Order(
        client_order_id=f"E1-{side}-{qty}-{symbol}",
        venue="alpha",
        epoch=1,
        symbol=symbol,
        side=side,
        qty=qty,
        price=Decimal(100),
    )


def test_an_order_within_the_limit_passes() -> None:
    assert risk_limit_breach(limit(10), "AAPL", Side.BUY, 4, 6, []) is None
    assert risk_limit_breach(limit(10), "AAPL", Side.SELL, 10, 0, []) is None


def test_resting_orders_on_the_same_side_count_as_filled() -> None:
    reason = risk_limit_breach(limit(10), "AAPL", Side.BUY, 4, 3, [resting(Side.BUY, 4)])
    assert reason == "buy 4 AAPL could take the position to 11 (max_position 10)"
    # The other side's orders and other symbols' orders do not add to this side's risk.
    others = [resting(Side.SELL, 50), resting(Side.BUY, 50, "MSFT")]
    assert risk_limit_breach(limit(10), "AAPL", Side.BUY, 4, 3, others) is None


def test_a_short_beyond_the_limit_is_a_breach_too() -> None:
    reason = risk_limit_breach(limit(5), "AAPL", Side.SELL, 3, -4, [])
    assert reason == "sell 3 AAPL could take the position to -7 (max_position 5)"


def test_an_order_back_towards_a_lowered_limit_is_allowed() -> None:
    # Long 50 under a limit lowered to 0: selling reduces the risk, buying adds to it.
    assert risk_limit_breach(limit(0), "AAPL", Side.SELL, 5, 50, []) is None
    assert risk_limit_breach(limit(0), "AAPL", Side.BUY, 1, 50, []) is not None


def test_max_order_qty_and_unlimited_symbols() -> None:
    assert risk_limit_breach(limit(100, 5), "AAPL", Side.BUY, 6, 0, []) == (
        "6 AAPL is above max_order_qty 5"
    )
    assert risk_limit_breach(limit(0), "MSFT", Side.BUY, 1000, 0, []) is None
