"""One venue's "ask again after" shared by every adapter for it in this process.

A venue's Retry-After speaks to the client, not to one call: Binance limits by API key and IP,
a FIX venue by session and firm. Two runbook steps reading the same venue at once (a
reconciliation and a position check) must both wait after either is told to, or the venue
sees a second request inside the window it asked for: the start of a storm. The activity's own
retry already waits ``retry_after_s`` (next_retry_delay); this gate makes the *other* callers
in the same worker wait too. Workers in other processes learn it from their own refusal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

from domain.venues import (
    CancelResult,
    ClientOrderId,
    FillReports,
    OrderReports,
    RateLimited,
    ReconnectCooldown,
    SessionInfo,
    VenueAdapter,
    VenueCapability,
)

T = TypeVar("T")

# venue name -> monotonic time before which nobody in this process calls it.
_not_before: dict[str, float] = {}


async def wait_turn(venue: str) -> None:
    """Before each request to ``venue``: wait out the last Retry-After anyone here was given.

    Adapters whose one call is several requests (REST pages, one request per symbol) call this
    per request, so a call already under way stops asking the moment another is refused."""
    wait = _not_before.get(venue, 0.0) - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


def hold(venue: str, retry_after_s: float) -> None:
    """``venue`` said to ask again after ``retry_after_s``: nobody here asks sooner."""
    until = time.monotonic() + retry_after_s
    _not_before[venue] = max(_not_before.get(venue, 0.0), until)


class PacedVenue:
    """A ``VenueAdapter`` that waits out the venue's last Retry-After before each call and
    records every new one. A reconnect cooldown is about one account's sessions, not the
    venue's rate: it does not pace the other calls."""

    def __init__(self, inner: VenueAdapter) -> None:
        self._inner = inner

    @property
    def venue(self) -> str:
        return self._inner.venue

    @property
    def capabilities(self) -> frozenset[VenueCapability]:
        return self._inner.capabilities

    async def _paced(self, call: Callable[[], Awaitable[T]]) -> T:
        await wait_turn(self.venue)
        try:
            return await call()
        except RateLimited as limited:
            if not isinstance(limited, ReconnectCooldown):
                hold(self.venue, limited.retry_after_s)
            raise

    async def connect(self) -> SessionInfo:
        return await self._paced(self._inner.connect)

    async def open_orders(self) -> OrderReports:
        return await self._paced(self._inner.open_orders)

    async def fills_since(self, watermark: datetime) -> FillReports:
        return await self._paced(lambda: self._inner.fills_since(watermark))

    async def cancel(
        self, client_order_ids: Sequence[ClientOrderId]
    ) -> dict[ClientOrderId, CancelResult]:
        return await self._paced(lambda: self._inner.cancel(client_order_ids))

    async def close(self) -> None:
        await self._inner.close()

    def __getattr__(self, name: str) -> object:
        # Dialect-specific extras (FIX mass cancel) pass through unpaced.
        return getattr(self._inner, name)

    @property
    def unwrapped(self) -> VenueAdapter:
        """The adapter itself, for dialect-specific calls (a lab logout by session id)."""
        return self._inner
