"""DR mirror apply throughput: decode + apply replicated book events, as the DR does per message.

Target (see the fault-and-benchmark issue): >= 50,000 events/s on the lab machine.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.book import (
    Book,
    BookEnvelope,
    Fill,
    FillEvent,
    Order,
    OrderEvent,
    PositionEvent,
    Side,
)


def make_events(n_events: int, seed: int = 1) -> list[OrderEvent | FillEvent | PositionEvent]:
    """A primary's book events: new orders, and fills on them each followed by the position."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)
    positions: dict[str, int] = {}
    events: list[OrderEvent | FillEvent | PositionEvent] = []
    open_ids: list[str] = []
    i = 0
    while len(events) < n_events:
        i += 1
        ts = now + timedelta(milliseconds=i)
        if open_ids and rng.random() < 0.5:
            cid = open_ids.pop(rng.randrange(len(open_ids)))
            symbol = "AAPL"
            side = Side.BUY
            fill = Fill(
                trade_id=f"T{i}", venue="alpha", venue_seq=i, client_order_id=cid, epoch=1,
                symbol=symbol, side=side, qty=5, price=Decimal("100.25"), ts=ts,
            )  # fmt: skip
            positions[symbol] = positions.get(symbol, 0) + 5
            events += [FillEvent(fill=fill), PositionEvent(symbol=symbol, qty=positions[symbol])]
        else:
            cid = f"E1-{i:012d}"
            open_ids.append(cid)
            order = Order(
                client_order_id=cid, venue="alpha", epoch=1, symbol="AAPL", side=Side.BUY,
                qty=5, price=Decimal("100.25"), updated_at=ts,
            )  # fmt: skip
            events.append(OrderEvent(order=order))
    return events[:n_events]


def make_stream(n_events: int, seed: int = 1) -> list[bytes]:
    now = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)
    return [
        BookEnvelope(system="lab", epoch=1, published_at=now, event=e).model_dump_json().encode()
        for e in make_events(n_events, seed)
    ]


def run(n_events: int = 100_000) -> dict[str, float]:
    stream = make_stream(n_events)
    book = Book()
    started = time.perf_counter()
    for seq, raw in enumerate(stream, start=1):
        book.apply_envelope(seq, BookEnvelope.model_validate_json(raw))
    elapsed = time.perf_counter() - started
    return {"events": n_events, "seconds": elapsed, "events_per_s": n_events / elapsed}
