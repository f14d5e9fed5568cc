"""Crypto exchanges through ccxt: ``[[venues]] adapter = "ccxt"``, ``exchange = "binance"``.

Any exchange ccxt knows, through ``ccxt.async_support`` (pinned in pyproject: its exchange
classes change often). ``api_url`` replaces the exchange's whole ``urls["api"]`` so nothing can
reach anything else (the lab's Binance face, or a testnet); a call to an API group the override
does not name fails inside ccxt rather than leaking to the real exchange.

What ccxt gives and what we add:
- Sessions: a REST exchange has none. ``connect`` proves the keys (markets + an authenticated
  account read) and never meets a reconnect cooldown, because there is no session to have
  ended uncleanly; a venue that wants us to wait says 429/418 with Retry-After, which is
  ``RateLimited``.
- Retry-After: ccxt turns 429/418 into ``DDoSProtection`` but never reads the header, and keeps
  the headers only in ``last_response_headers``, one field per instance that concurrent calls
  overwrite. So each adapter builds its exchange from a subclass whose ``handle_errors`` (called
  inside ``fetch`` with *that* response's headers) puts the delay on the exception it raises:
  the delay travels with the failure of the very request that was refused.
- Trades carry only the venue's order id: ``fills_since`` fetches the orders and maps each
  trade to its client order id (and so its epoch) itself.
- Symbols: reports name an instrument by the venue's own market id (Binance ``BTCUSDT``; the
  lab face's ``AAPL``), as every other adapter reports the venue's symbol. ``symbols`` may be
  written either as ccxt's unified names (``BTC/USDT``) or as market ids.
- Epochs: public exchanges know none (no ``EPOCH_REFUSAL``); the epoch is read from the client
  order id's prefix by the reconciliation.

ccxt is untyped: everything it returns is ``Any`` inside this module and becomes a typed report
or a typed error before it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import time
import uuid
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
from ccxt.base import errors as ccxt_errors  # type: ignore[import-untyped]
from pydantic import ValidationError

from adapters.venues import pacing
from domain.book import OrderStatus, Side
from domain.topology import CcxtVenueConfig
from domain.venues import (
    AuthRejected,
    CancelResult,
    ClientOrderId,
    FillReport,
    FillReports,
    MalformedReport,
    OrderReport,
    OrderReports,
    RateLimited,
    SessionInfo,
    VenueCapability,
    VenueConfigError,
    VenueError,
    VenueUnavailable,
)

USER_AGENT = "failover-runbooks"
# Cancels run concurrently, this many at a time: fast, without tripping the venue's limits.
CANCEL_CONCURRENCY = 8
# How far before the earliest trade to look for the orders it filled in one bulk read; an
# order older than that (a long-resting GTC) is fetched on its own.
ORDER_LOOKBACK = timedelta(days=1)
# When a venue says 429/418 without Retry-After (it should not), wait this long.
RETRY_AFTER_UNSTATED_S = 1.0

# Marks an entry ccxt could not parse (see ``parse_trade`` below).
UNPARSED = "failover_runbooks_unparsed"

_ORDER_STATUS = {
    "open": OrderStatus.OPEN,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.CANCELLED,
    "rejected": OrderStatus.CANCELLED,
}


def retry_after_s(headers: object) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), or None if absent/unreadable."""
    if not isinstance(headers, dict):
        return None
    value = next((str(v) for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _exchange_class(venue: str, exchange_id: str) -> Any:
    base = getattr(ccxt_async, exchange_id, None)
    if exchange_id not in ccxt_async.exchanges or base is None:
        raise VenueConfigError(
            venue, f"ccxt {ccxt_async.__version__} knows no exchange {exchange_id!r}"
        )

    class WithRetryAfter(base):  # type: ignore[misc, valid-type]
        """The exchange, with each 429/418's own Retry-After on the error it raises."""

        def handle_errors(
            self,
            code: int,
            reason: str,
            url: str,
            method: str,
            headers: Any,
            body: Any,
            response: Any,
            request_headers: Any,
            request_body: Any,
        ) -> Any:
            delay = retry_after_s(headers)
            refused = code in (418, 429)
            try:
                result = super().handle_errors(
                    code,
                    reason,
                    url,
                    method,
                    headers,
                    body,
                    response,
                    request_headers,
                    request_body,
                )
            except ccxt_errors.DDoSProtection as exc:
                exc.retry_after_s = delay
                exc.http_status = code
                raise
            if refused:
                # An exchange class that leaves 429/418 to the generic status mapping.
                refusal = ccxt_errors.DDoSProtection(f"{self.id} {code} {reason}")
                refusal.retry_after_s = delay
                refusal.http_status = code
                raise refusal
            return result

        # ccxt parses a whole page at once, and one entry it cannot parse (a price of "lots")
        # would fail the page; each such entry becomes a marked stand-in instead, which the
        # adapter reports as malformed. Its timestamp keeps it past ccxt's own since-filter.
        def parse_trade(self, trade: Any, market: Any = None) -> Any:
            try:
                return super().parse_trade(trade, market)
            except Exception as exc:  # any parse failure is a fault of the venue's report
                return _unparsed(trade, market, exc, "id")

        def parse_order(self, order: Any, market: Any = None) -> Any:
            try:
                return super().parse_order(order, market)
            except Exception as exc:  # any parse failure is a fault of the venue's report
                return _unparsed(order, market, exc, "orderId")

    return WithRetryAfter


def _unparsed(raw: Any, market: Any, exc: Exception, id_field: str) -> dict[str, Any]:
    entry = _dict(raw)
    stamp = entry.get("time") or entry.get("updateTime")
    return {
        "info": raw,
        "id": None if entry.get(id_field) is None else str(entry[id_field]),
        "clientOrderId": entry.get("clientOrderId"),
        "symbol": _dict(market).get("symbol") or entry.get("symbol"),
        "timestamp": stamp if isinstance(stamp, int) else int(time.time() * 1000),
        UNPARSED: f"ccxt could not parse it ({type(exc).__name__}: {exc})",
    }


class CcxtVenueAdapter:
    """The venue port through ccxt: one venue, one account, one runbook step. Its exchange
    instance is never shared between adapters (``close`` ends it)."""

    capabilities: frozenset[VenueCapability] = frozenset()

    def __init__(self, config: CcxtVenueConfig, *, user_agent: str = USER_AGENT) -> None:
        self._config = config
        credentials = {}
        for field, env in (("apiKey", config.api_key_env), ("secret", config.secret_env)):
            value = os.environ.get(env, "")
            if not value:
                # Names the variable, never a value.
                raise VenueConfigError(
                    config.name,
                    f"environment variable {env} is unset or empty; set it to the {field}",
                )
            credentials[field] = value
        api: str | None = str(config.api_url).rstrip("/") if config.api_url else None
        options: dict[str, Any] = {
            # Without these three, load_markets wanders into margin, futures and capital
            # endpoints once keys are set.
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchOpenOrders": {"warnWithoutSymbol": False},
        }
        # The one boundary to the untyped library.
        self._exchange: Any = _exchange_class(config.name, config.exchange)(
            {
                **credentials,
                "enableRateLimit": config.rate_limit,
                "timeout": int(config.timeout_s * 1000),
                "userAgent": user_agent,
                "options": options,
            }
        )
        if api is not None:
            # The whole dict, never one entry: any group not named here then fails loudly.
            self._exchange.urls["api"] = {
                "public": f"{api}/api/v3",
                "private": f"{api}/api/v3",
                "v1": f"{api}/api/v1",
            }
        self._markets_loaded = False

    @property
    def venue(self) -> str:
        return self._config.name

    # --- session ----------------------------------------------------------------------------

    async def connect(self) -> SessionInfo:
        await self._markets()
        await self._call("account read", self._exchange.fetch_balance())
        # No venue session exists; the id names this adapter's run in logs and reports.
        return SessionInfo(venue=self.venue, session_id=f"rest-{uuid.uuid4().hex}")

    async def close(self) -> None:
        # Best effort: the sockets go with the process anyway.
        with contextlib.suppress(Exception):
            await self._exchange.close()

    # --- reads ------------------------------------------------------------------------------

    async def open_orders(self) -> OrderReports:
        await self._markets()
        raw = await self._call("open orders", self._exchange.fetch_open_orders())
        orders: list[OrderReport] = []
        malformed: list[MalformedReport] = []
        for entry in _as_list(raw):
            report = self._order_report(entry)
            if isinstance(report, OrderReport):
                orders.append(report)
            else:
                malformed.append(report)
        return OrderReports(orders=orders, malformed=malformed)

    async def fills_since(self, watermark: datetime) -> FillReports:
        await self._markets()
        trades: list[Any] = []
        for symbol in self._symbols():
            trades.extend(await self._trades_of(symbol, watermark))
        client_ids = await self._client_order_ids(trades)
        fills: list[FillReport] = []
        malformed: list[MalformedReport] = []
        by_time = sorted(trades, key=lambda t: _dict(t).get("timestamp") or 0)
        for running, trade in enumerate(by_time, start=1):
            report = self._fill_report(trade, client_ids, running)
            if isinstance(report, FillReport):
                fills.append(report)
            else:
                malformed.append(report)
        return FillReports(fills=fills, malformed=malformed)

    # --- writes -----------------------------------------------------------------------------

    async def cancel(
        self, client_order_ids: Sequence[ClientOrderId]
    ) -> dict[ClientOrderId, CancelResult]:
        """Cancel each order by client order id. An order's symbol is needed for every call,
        so open orders are read first; an id not open is looked up to say whether it was
        filled, cancelled or never seen. Retried, the same batch converges."""
        await self._markets()
        open_symbols: dict[str, str] = {}
        for entry in _as_list(await self._call("open orders", self._exchange.fetch_open_orders())):
            entry = _dict(entry)
            if entry.get("clientOrderId") and entry.get("symbol"):
                open_symbols[str(entry["clientOrderId"])] = str(entry["symbol"])
        limit = asyncio.Semaphore(CANCEL_CONCURRENCY)

        async def cancel_one(client_order_id: ClientOrderId) -> CancelResult:
            async with limit:
                symbol = open_symbols.get(client_order_id)
                if symbol is not None:
                    try:
                        await self._call(
                            f"cancel {client_order_id}",
                            self._exchange.cancel_order(
                                client_order_id, symbol, {"origClientOrderId": client_order_id}
                            ),
                        )
                        return "cancelled"
                    except _OrderNotFound:
                        pass  # it closed meanwhile: say how
                return await self._closed_outcome(client_order_id)

        ids = list(dict.fromkeys(client_order_ids))
        outcomes = await asyncio.gather(*(cancel_one(i) for i in ids))
        return dict(zip(ids, outcomes, strict=True))

    async def _closed_outcome(self, client_order_id: ClientOrderId) -> CancelResult:
        for symbol in self._symbols():
            try:
                order = _dict(
                    await self._call(
                        f"order {client_order_id}",
                        self._exchange.fetch_order(
                            client_order_id, symbol, {"origClientOrderId": client_order_id}
                        ),
                    )
                )
            except _OrderNotFound:
                continue
            status = _ORDER_STATUS.get(str(order.get("status")))
            if status is OrderStatus.FILLED:
                return "already_filled"
            if status is OrderStatus.CANCELLED:
                return "already_cancelled"
            # Open after all (it was placed after our read): cancel it now.
            try:
                await self._call(
                    f"cancel {client_order_id}",
                    self._exchange.cancel_order(
                        client_order_id, symbol, {"origClientOrderId": client_order_id}
                    ),
                )
            except _OrderNotFound:
                return await self._closed_outcome(client_order_id)
            return "cancelled"
        return "unknown"

    # --- helpers ----------------------------------------------------------------------------

    async def _markets(self) -> None:
        if self._markets_loaded:
            return
        await self._call("markets", self._exchange.load_markets())
        for symbol in self._config.symbols:
            try:
                self._exchange.market(symbol)
            except ccxt_errors.BadSymbol:
                raise VenueConfigError(
                    self.venue, f"symbol {symbol!r} is not a market of {self._config.exchange}"
                ) from None
        self._markets_loaded = True

    def _symbols(self) -> list[str]:
        return [str(self._exchange.market(s)["symbol"]) for s in self._config.symbols]

    def _market_id(self, unified: object) -> str:
        market = self._exchange.markets.get(unified) if isinstance(unified, str) else None
        return str(market["id"]) if market else str(unified)

    async def _trades_of(self, symbol: str, watermark: datetime) -> list[Any]:
        """Every trade of ``symbol`` at or after ``watermark``, all pages. Numeric trade ids
        (Binance) page exactly by ``fromId``; others by time, dropping the boundary's repeats."""
        since: int | None = int(watermark.timestamp() * 1000)
        params: dict[str, Any] = {}
        seen: set[str] = set()
        trades: list[Any] = []
        while True:
            page = _as_list(
                await self._call(
                    f"trades of {symbol}",
                    self._exchange.fetch_my_trades(symbol, since, self._config.page_size, params),
                )
            )
            fresh = [t for t in page if str(_dict(t).get("id")) not in seen]
            trades.extend(fresh)
            if len(page) < self._config.page_size or not fresh:
                return trades
            seen.update(str(_dict(t).get("id")) for t in page)
            numeric = [int(i) for i in (str(_dict(t).get("id")) for t in page) if i.isdigit()]
            if numeric:
                since, params = None, {"fromId": max(numeric) + 1}
            else:
                since = max(int(_dict(t).get("timestamp") or 0) for t in page) or since

    async def _client_order_ids(self, trades: list[Any]) -> dict[str, str]:
        """venue order id -> client order id for every order the trades name."""
        wanted: dict[str, str] = {}  # venue order id -> unified symbol
        for trade in trades:
            trade = _dict(trade)
            if trade.get("order") and trade.get("symbol"):
                wanted[str(trade["order"])] = str(trade["symbol"])
        if not wanted:
            return {}
        earliest = min((int(_dict(t).get("timestamp") or 0) for t in trades), default=0)
        since = earliest - int(ORDER_LOOKBACK.total_seconds() * 1000)
        known: dict[str, str] = {}
        for symbol in sorted(set(wanted.values())):
            page_since = since
            while True:
                page = _as_list(
                    await self._call(
                        f"orders of {symbol}",
                        self._exchange.fetch_orders(symbol, page_since, self._config.page_size),
                    )
                )
                fresh = 0
                for order in page:
                    order = _dict(order)
                    if order.get("id") and order.get("clientOrderId"):
                        fresh += str(order["id"]) not in known
                        known[str(order["id"])] = str(order["clientOrderId"])
                # By time, inclusive: the boundary's orders come again and are not fresh.
                if len(page) < self._config.page_size or not fresh:
                    break
                page_since = int(_dict(page[-1]).get("timestamp") or page_since)
        limit = asyncio.Semaphore(CANCEL_CONCURRENCY)

        async def look_up(venue_order_id: str, symbol: str) -> None:
            async with limit:
                try:
                    order = _dict(
                        await self._call(
                            f"order {venue_order_id}",
                            self._exchange.fetch_order(venue_order_id, symbol),
                        )
                    )
                except _OrderNotFound:
                    return  # the trade becomes a finding naming it
                if order.get("clientOrderId"):
                    known[venue_order_id] = str(order["clientOrderId"])

        await asyncio.gather(
            *(look_up(oid, symbol) for oid, symbol in wanted.items() if oid not in known)
        )
        return known

    def _order_report(self, entry: Any) -> OrderReport | MalformedReport:
        order = _dict(entry)
        reference = str(order.get("clientOrderId") or "<unknown>")
        symbol = self._market_id(order.get("symbol") or "<unknown>")
        try:
            if UNPARSED in order:
                raise ValueError(order[UNPARSED])
            status = _ORDER_STATUS.get(str(order.get("status")))
            if status is None:
                raise ValueError(f"status {order.get('status')!r} is not an order status")
            return OrderReport(
                venue=self.venue,
                client_order_id=ClientOrderId(_text(order, "clientOrderId")),
                venue_order_id=order.get("id"),
                symbol=symbol,
                side=Side(_text(order, "side")),
                qty=_whole(order.get("amount"), "qty"),
                price=_decimal(order.get("price"), "price"),
                filled_qty=_whole(order.get("filled") or 0, "filled_qty", allow_zero=True),
                status=status,
                created_at=_time(order.get("timestamp")),
                updated_at=_time(order.get("lastUpdateTimestamp")),
            )
        except (ValidationError, ValueError, TypeError) as exc:
            return MalformedReport(
                venue=self.venue, kind="order", reference=reference, symbol=symbol,
                detail=f"invalid order report: {_describe(exc)}",
            )  # fmt: skip

    def _fill_report(
        self, entry: Any, client_ids: dict[str, str], running: int
    ) -> FillReport | MalformedReport:
        trade = _dict(entry)
        trade_id = str(trade.get("id") or "<unknown>")
        symbol = self._market_id(trade.get("symbol") or "<unknown>")
        try:
            if UNPARSED in trade:
                raise ValueError(trade[UNPARSED])
            venue_order_id = str(trade.get("order") or "")
            client_order_id = client_ids.get(venue_order_id)
            if client_order_id is None:
                raise ValueError(
                    f"trade names venue order {venue_order_id or '<none>'!r}, which the venue "
                    "does not report: its client order id (and epoch) is unknown"
                )
            return FillReport(
                venue=self.venue,
                trade_id=trade_id,
                venue_seq=int(trade_id) if trade_id.isdigit() and int(trade_id) > 0 else running,
                client_order_id=ClientOrderId(client_order_id),
                venue_order_id=venue_order_id,
                symbol=symbol,
                side=Side(_text(trade, "side")),
                qty=_whole(trade.get("amount"), "qty"),
                price=_decimal(trade.get("price"), "price"),
                ts=_time(trade.get("timestamp"), required=True),
            )
        except (ValidationError, ValueError, TypeError) as exc:
            return MalformedReport(
                venue=self.venue, kind="fill", reference=trade_id, symbol=symbol,
                detail=f"invalid fill report: {_describe(exc)}",
            )  # fmt: skip

    async def _call(self, what: str, call: Awaitable[Any]) -> Any:
        """Await one ccxt call and turn its failure into the port's typed error."""
        # Per request, not per port call: a call paging or looping over symbols must stop
        # asking as soon as any other call here has been told to wait.
        await pacing.wait_turn(self.venue)
        try:
            return await call
        except ccxt_errors.DDoSProtection as exc:
            delay = getattr(exc, "retry_after_s", None)
            pacing.hold(self.venue, RETRY_AFTER_UNSTATED_S if delay is None else delay)
            status = getattr(exc, "http_status", None)
            refused = {418: "banned us (418)", 429: "rate-limited us (429)"}.get(
                status or 0, "asked us to slow down"
            )
            stated = f"Retry-After {delay:g} s" if delay is not None else "no Retry-After"
            raise RateLimited(
                self.venue,
                f"{what}: {self._config.exchange} {refused}; {stated}",
                RETRY_AFTER_UNSTATED_S if delay is None else delay,
            ) from None
        except (ccxt_errors.AuthenticationError, ccxt_errors.PermissionDenied) as exc:
            raise AuthRejected(
                self.venue,
                f"{what}: {self._config.exchange} refused the API key from "
                f"${self._config.api_key_env} or its signature with ${self._config.secret_env} "
                f"({type(exc).__name__}: {_reason(exc)}); check both variables on this worker",
            ) from None
        except ccxt_errors.OrderNotFound as exc:
            raise _OrderNotFound(self.venue, f"{what}: {_reason(exc)}") from None
        except ccxt_errors.InvalidNonce as exc:
            raise VenueUnavailable(
                self.venue,
                f"{what}: {self._config.exchange} refused the request's timestamp "
                f"({_reason(exc)}); is this worker's clock right?",
            ) from None
        except ccxt_errors.BadSymbol as exc:
            raise VenueConfigError(self.venue, f"{what}: {_reason(exc)}") from None
        except ccxt_errors.NotSupported as exc:
            raise VenueConfigError(
                self.venue,
                f"{what}: not supported by ccxt's {self._config.exchange} ({_reason(exc)})",
            ) from None
        except (ccxt_errors.NetworkError, ccxt_errors.ExchangeError) as exc:
            # NetworkError covers ExchangeNotAvailable and RequestTimeout; an ExchangeError we
            # do not know better is treated as the venue having a bad moment.
            raise VenueUnavailable(
                self.venue, f"{what}: {type(exc).__name__}: {_reason(exc)}"
            ) from None


class _OrderNotFound(VenueError):
    """The venue does not know the order (Binance -2011 / -2013). Internal: cancel turns it into
    an outcome, fills into a finding."""


def _reason(exc: BaseException) -> str:
    # ccxt's messages carry the exchange's answer (never our key); keep them one short line.
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
    return str(exc)


def _dict(value: Any) -> dict[str, Any]:
    return cast(dict[str, Any], value) if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list from ccxt, got {type(value).__name__}")
    return value


def _text(entry: dict[str, Any], field: str) -> str:
    value = entry.get(field)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} is missing")
    return value


def _whole(value: Any, field: str, *, allow_zero: bool = False) -> int:
    """A quantity as a whole number: the book counts whole units; 0.5 is refused, not rounded."""
    if value is None:
        raise ValueError(f"{field} is missing")
    number = Decimal(str(value))
    if number != number.to_integral_value():
        raise ValueError(f"{field} {value} is not a whole number of units")
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{field} {value} must be positive")
    return int(number)


def _decimal(value: Any, field: str) -> Decimal:
    if value is None:
        raise ValueError(f"{field} is missing")
    # ccxt hands prices over as floats; str() gives the shortest text that round-trips, so
    # 100.1 stays 100.1 rather than 100.09999999999999431566.
    return Decimal(str(value))


def _time(value: Any, *, required: bool = False) -> datetime | None:
    if value is None:
        if required:
            raise ValueError("timestamp is missing")
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC)
