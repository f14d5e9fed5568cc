"""HTTP client for the venue order-entry protocol (the lab venues speak it; adapters map others).

It turns the venue's answers into the domain vocabulary (``Order``, ``Fill``) and its refusals
into typed errors, so callers decide between retrying, waiting out a cooldown and giving up.
"""

from __future__ import annotations

import os
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from domain.book import Fill, Order, OrderStatus, Side
from domain.topology import VenueConfig

# How the runbooks name themselves to a venue: its logs and rate limits can tell them apart
# from the OMS sessions of the same member.
USER_AGENT = "failover-runbooks"


class VenueError(RuntimeError):
    def __init__(self, venue: str, message: str, status: int | None = None) -> None:
        super().__init__(f"venue {venue}: {message}")
        self.venue = venue
        self.status = status


class RateLimited(VenueError):
    """The venue said 429: ask again after ``retry_after_s``, not sooner."""

    def __init__(self, venue: str, message: str, retry_after_s: float) -> None:
        super().__init__(venue, message, 429)
        self.retry_after_s = retry_after_s


class ReconnectCooldown(RateLimited):
    """The venue refuses a new session until its reconnect cooldown has passed."""

    def __init__(self, venue: str, retry_after_s: float) -> None:
        super().__init__(
            venue, f"reconnect cooldown, retry after {retry_after_s:.2f} s", retry_after_s
        )


class StaleEpoch(VenueError):
    """The venue has seen a newer epoch: this sender is fenced."""

    def __init__(self, venue: str, epoch: int, highest: int) -> None:
        super().__init__(venue, f"order epoch {epoch} is stale (venue has seen {highest})", 409)
        self.epoch = epoch
        self.highest = highest


class SessionInactive(VenueError):
    pass


class VenueSession(BaseModel):
    venue: str
    session_id: str
    next_seq: int = 1


class _WireOrder(BaseModel):
    venue_order_id: str
    client_order_id: str
    epoch: int
    symbol: str
    side: Side
    qty: int
    price: Decimal
    filled_qty: int
    status: OrderStatus
    created_at: datetime | None = None
    updated_at: datetime


class _WireFill(BaseModel):
    trade_id: str
    seq: int
    venue_order_id: str | None = None
    client_order_id: str
    epoch: int
    symbol: str
    side: Side
    qty: int
    price: Decimal
    ts: datetime


class VenueClient:
    """One venue, one member. Not safe for concurrent order entry on the same session."""

    def __init__(
        self,
        config: VenueConfig,
        member: str,
        timeout_s: float = 5.0,
        api_key: str | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.config = config
        self.member = member
        key = api_key if api_key is not None else os.environ.get(config.api_key_env, "")
        if not key:
            raise VenueError(
                config.name, f"credential variable {config.api_key_env} is not set or empty"
            )
        self._http = httpx.AsyncClient(
            base_url=str(config.url).rstrip("/"),
            headers={"X-Api-Key": key, "User-Agent": user_agent},
            timeout=timeout_s,
        )
        self.session: VenueSession | None = None

    @property
    def name(self) -> str:
        return self.config.name

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise VenueError(self.name, f"{method} {path} failed: {type(exc).__name__}") from None

    def _fail(self, response: httpx.Response, what: str) -> VenueError:
        if response.status_code == 429:
            retry_after = _retry_after_s(response)
            return RateLimited(
                self.name, f"{what}: rate limited, retry after {retry_after:.2f} s", retry_after
            )
        try:
            detail = response.json().get("error") or response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        return VenueError(
            self.name, f"{what}: HTTP {response.status_code}: {detail}", response.status_code
        )

    async def connect(self) -> VenueSession:
        response = await self._call("POST", "/session/connect", json={"member": self.member})
        if response.status_code == 429:
            retry_after = _retry_after_s(response)
            raise ReconnectCooldown(self.name, retry_after)
        if response.status_code != 200:
            raise self._fail(response, "connect")
        body = response.json()
        self.session = VenueSession(
            venue=self.name, session_id=body["session_id"], next_seq=body["next_seq"]
        )
        return self.session

    async def logout(self) -> None:
        if self.session is None:
            return
        response = await self._call(
            "POST", "/session/logout", json={"session_id": self.session.session_id}
        )
        if response.status_code not in (200, 404):
            raise self._fail(response, "logout")
        self.session = None

    async def place_order(
        self, client_order_id: str, epoch: int, symbol: str, side: Side, qty: int, price: Decimal
    ) -> Order:
        if self.session is None:
            raise SessionInactive(self.name, "no session; connect first")
        seq = self.session.next_seq
        payload = {
            "session_id": self.session.session_id,
            "seq": seq,
            "client_order_id": client_order_id,
            "epoch": epoch,
            "symbol": symbol,
            "side": side.value,
            "qty": qty,
            "price": str(price),
        }
        response = await self._call("POST", "/orders", json=payload)
        body = _json(response)
        if response.status_code == 409 and body.get("error") == "session not active; reconnect":
            self.session = None
            raise SessionInactive(self.name, "session ended by the venue")
        # The venue consumed the sequence number whether it accepted or rejected the order.
        if response.status_code in (200, 400) or body.get("error") == "stale epoch":
            self.session.next_seq = seq + 1
        if response.status_code == 409 and body.get("error") == "stale epoch":
            raise StaleEpoch(self.name, epoch, int(body.get("highest_epoch", 0)))
        if response.status_code != 200:
            raise self._fail(response, "order entry")
        return self._order(body)

    async def open_orders(self) -> list[Order]:
        return [self._order(o) for o in await self.open_orders_raw()]

    async def open_orders_raw(self) -> list[dict[str, Any]]:
        """The venue's open-order report as sent, for callers that must survive bad entries."""
        response = await self._call("GET", "/orders/open")
        if response.status_code != 200:
            raise self._fail(response, "open orders")
        orders = _json(response).get("orders", [])
        if not isinstance(orders, list):
            raise VenueError(self.name, "malformed open-order report: 'orders' is not a list")
        return [o if isinstance(o, dict) else {"malformed": o} for o in orders]

    async def fills_raw(
        self, since_seq: int = 0, since_time: datetime | None = None, page_size: int = 500
    ) -> list[dict[str, Any]]:
        """Every fill report after ``since_seq`` / at or after ``since_time``, as sent."""
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"since_seq": since_seq, "limit": page_size}
            if since_time is not None:
                params["since_time"] = since_time.isoformat()
            if cursor is not None:
                params["cursor"] = cursor
            response = await self._call("GET", "/fills", params=params)
            if response.status_code != 200:
                raise self._fail(response, "fills")
            body = _json(response)
            page = body.get("fills", [])
            if not isinstance(page, list):
                raise VenueError(self.name, "malformed fill report: 'fills' is not a list")
            out.extend(f if isinstance(f, dict) else {"malformed": f} for f in page)
            next_cursor = body.get("next_cursor")
            if not next_cursor or next_cursor == cursor:
                return out
            cursor = str(next_cursor)

    async def fills(
        self, since_seq: int = 0, since_time: datetime | None = None, page_size: int = 500
    ) -> list[Fill]:
        """Every fill after ``since_seq`` (and at or after ``since_time``), parsed."""
        return [self._fill(raw) for raw in await self.fills_raw(since_seq, since_time, page_size)]

    async def cancel(self, client_order_ids: list[str]) -> dict[str, str]:
        """Cancel by client order id; returns each id's outcome. Idempotent at the venue."""
        if not client_order_ids:
            return {}
        response = await self._call(
            "POST", "/orders/cancel", json={"client_order_ids": client_order_ids}
        )
        if response.status_code != 200:
            raise self._fail(response, "cancel")
        return {r["id"]: r["outcome"] for r in _json(response).get("results", [])}

    def _order(self, raw: dict[str, Any]) -> Order:
        try:
            wire = _WireOrder.model_validate(raw)
        except ValidationError as exc:
            raise VenueError(
                self.name, f"malformed order report: {exc.errors()[0]['msg']}"
            ) from None
        return Order(venue=self.name, **wire.model_dump())

    def _fill(self, raw: dict[str, Any]) -> Fill:
        try:
            wire = _WireFill.model_validate(raw)
        except ValidationError as exc:
            raise VenueError(
                self.name, f"malformed fill report: {exc.errors()[0]['msg']}"
            ) from None
        data = wire.model_dump()
        data["venue_seq"] = data.pop("seq")
        return Fill(venue=self.name, **data)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after_s(response: httpx.Response) -> float:
    body = _json(response)
    if isinstance(body.get("retry_after_s"), int | float):
        return max(float(body["retry_after_s"]), 0.0)
    header = response.headers.get("Retry-After", "1")
    try:
        return max(float(header), 0.0)
    except ValueError:
        return 1.0
