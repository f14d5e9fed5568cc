"""A simulated market-data source with the faults real feeds have while still answering.

A feed rarely fails by going silent. It keeps answering with data that has stopped moving
(stale), or its sequence numbers repeat or run backwards. The admin mode switch injects exactly
those faults so that the health monitor's freshness and sequence-integrity probes are tested
against a real HTTP service rather than against a mock of themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import cycle
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lab.service import ADMIN_PREFIX, install_latency_chaos

FeedMode = Literal["normal", "stale", "dup-seq", "reversed-seq"]

# Enough history for a probe that polls every few seconds to see every tick it missed.
RING_CAPACITY = 1000
PRICE_INCREMENT = Decimal("0.01")


class Tick(BaseModel):
    source: str
    symbol: str
    price: Decimal
    exchange_ts: datetime
    seq: int


class TickPage(BaseModel):
    ticks: list[Tick]


class ModeSetting(BaseModel):
    mode: FeedMode


class SourceHealth(BaseModel):
    source: str
    # Always "ok": a degraded feed still reports itself healthy, which is the point of the lab.
    status: Literal["ok"] = "ok"
    mode: FeedMode
    time: datetime


class FeedError(Exception):
    """A request the feed cannot answer; becomes ``{"error": message}`` with ``status_code``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


class MarketDataFeed:
    """The tick stream of one source.

    Only ever touched from the event loop and never across an ``await``, so the producer task
    and the request handlers cannot interleave inside a method and no lock is needed.
    """

    def __init__(self, name: str, symbols: Sequence[str], seed: int | None = None) -> None:
        if not symbols:
            raise ValueError("a market-data source needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be unique, got {list(symbols)}")
        self.name = name
        self.symbols = tuple(symbols)
        self.mode: FeedMode = "normal"
        self._rng = random.Random(seed)
        self._prices = {
            symbol: self._rng.randint(2_000, 50_000) * PRICE_INCREMENT for symbol in self.symbols
        }
        # Round-robin keeps every symbol equally fresh, so freshness depends only on the mode.
        self._symbol_order = cycle(self.symbols)
        self._recent: deque[Tick] = deque(maxlen=RING_CAPACITY)
        self._latest: dict[str, Tick] = {}
        self._max_seq = 0

    def publish_next(self) -> Tick:
        symbol = next(self._symbol_order)
        frozen = self._latest.get(symbol) if self.mode == "stale" else None
        if frozen is not None:
            price, exchange_ts = frozen.price, frozen.exchange_ts
        else:
            price, exchange_ts = self._walk(symbol), datetime.now(UTC)
        tick = Tick(
            source=self.name,
            symbol=symbol,
            price=price,
            exchange_ts=exchange_ts,
            seq=self._next_seq(),
        )
        self._recent.append(tick)
        self._latest[symbol] = tick
        self._max_seq = max(self._max_seq, tick.seq)
        return tick

    def latest(self, symbol: str | None = None) -> Tick:
        if symbol is not None and symbol not in self.symbols:
            raise FeedError(
                404, f"unknown symbol {symbol!r}; known symbols: {', '.join(self.symbols)}"
            )
        tick = self._latest.get(symbol) if symbol else (self._recent[-1] if self._recent else None)
        if tick is None:
            raise FeedError(503, f"no tick published yet for {symbol or 'any symbol'}")
        return tick

    def since(self, since_seq: int | None, limit: int) -> list[Tick]:
        """Oldest first. With ``since_seq``, the first ``limit`` ticks whose seq is above it
        (paging forward); without, the most recent ``limit`` ticks (what a probe inspects for
        repeated or reversed sequence numbers, which a seq cursor would skip over)."""
        if since_seq is None:
            return list(self._recent)[-limit:]
        return [tick for tick in self._recent if tick.seq > since_seq][:limit]

    def _next_seq(self) -> int:
        previous = self._recent[-1].seq if self._recent else None
        if previous is None or self.mode in ("normal", "stale"):
            # Past the highest seq ever sent, so leaving a chaos mode never re-sends one.
            return self._max_seq + 1
        if self.mode == "dup-seq":
            return previous
        return previous - 1

    def _walk(self, symbol: str) -> Decimal:
        step = self._rng.randint(-3, 3) * PRICE_INCREMENT
        self._prices[symbol] = max(self._prices[symbol] + step, PRICE_INCREMENT)
        return self._prices[symbol]


def create_app(
    name: str, symbols: Sequence[str], tick_interval_ms: int, seed: int | None = None
) -> FastAPI:
    if tick_interval_ms <= 0:
        raise ValueError(f"tick_interval_ms must be positive, got {tick_interval_ms}")
    feed = MarketDataFeed(name, symbols, seed)
    interval_s = tick_interval_ms / 1000

    async def produce_ticks() -> None:
        while True:
            feed.publish_next()
            await asyncio.sleep(interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        producer = asyncio.create_task(produce_ticks(), name=f"{name}-ticks")
        try:
            yield
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    app = FastAPI(title=f"lab market-data source {name}", lifespan=lifespan)
    install_latency_chaos(app)

    @app.exception_handler(FeedError)
    async def _feed_error(_: Request, exc: FeedError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"error": exc.message})

    @app.get("/health")
    async def health() -> SourceHealth:
        return SourceHealth(source=feed.name, mode=feed.mode, time=datetime.now(UTC))

    @app.get("/tick")
    async def latest_tick(symbol: str | None = None) -> Tick:
        return feed.latest(symbol)

    @app.get("/ticks")
    async def recent_ticks(
        since_seq: int | None = None,
        limit: Annotated[int, Query(ge=1, le=RING_CAPACITY)] = 100,
    ) -> TickPage:
        return TickPage(ticks=feed.since(since_seq, limit))

    @app.get(f"{ADMIN_PREFIX}/mode")
    async def get_mode() -> ModeSetting:
        return ModeSetting(mode=feed.mode)

    @app.post(f"{ADMIN_PREFIX}/mode")
    async def set_mode(new: ModeSetting) -> ModeSetting:
        feed.mode = new.mode
        return ModeSetting(mode=feed.mode)

    return app
