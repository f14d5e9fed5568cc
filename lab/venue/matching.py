"""Random fills: the venue's stand-in for a market trading against resting orders."""

from __future__ import annotations

import asyncio
import random

from lab.venue.book import OrderBook
from lab.venue.models import Fill


def match_once(book: OrderBook, probability: float, rng: random.Random) -> list[Fill]:
    """Give each open order one chance at a fill of random size at its limit price."""
    fills = []
    for order in book.matchable_orders():
        if rng.random() < probability:
            fills.append(book.fill(order, rng.randint(1, order.remaining_qty)))
    return fills


async def match_forever(
    book: OrderBook, interval_s: float, probability: float, rng: random.Random
) -> None:
    # Runs on the request loop: match_once never awaits, so it cannot interleave with a
    # request handler half-way through changing the same order.
    while True:
        await asyncio.sleep(interval_s)
        match_once(book, probability, rng)
