"""The venue's Binance-spot-compatible REST face, under ``/api/v3``, over the same book.

What a desk's ccxt sees when it points ``binance`` at this venue: the same orders and fills the
lab's own REST API serves, in Binance's shapes, signed and refused the way Binance signs and
refuses. Like Binance it knows nothing of epochs: an order placed here keeps whatever client
order id it was given, and the book reads its epoch from an ``E<n>-`` prefix if it has one.

Symbols: the face's symbol is the lab symbol itself (``AAPL``), with base asset ``AAPL`` and
quote asset ``USD`` (ccxt names the market ``AAPL/USD``). Keeping the venue's symbol identical
to the lab's means an adapter that reports the venue's own symbol reports what the OMS book
holds, with no translation table to drift.

Ids: Binance ids are numbers. ``orderId`` is the book's order number (``beta-O00000007`` -> 7)
and a trade's ``id`` is the fill's venue-wide sequence number, which only ever grows, so
``fromId`` paging is exact. Trades carry ``orderId``, never the client order id, as on Binance.

Not modelled: order types other than LIMIT GTC, balances (``account`` lists none), weights.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from lab.venue.config import VenueSettings
from lab.venue.exchange import SimulatedVenue
from lab.venue.faults import BINANCE_PREFIX, VenueFaults
from lab.venue.models import Fill, Order, OrderTicketWithoutEpoch
from lab.venue.rejections import VenueRejection

API_KEY_HEADER = "X-MBX-APIKEY"
QUOTE_ASSET = "USD"
TICK_SIZE = Decimal("0.01")
DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60_000
# Binance refuses a timestamp more than this far ahead of its own clock.
MAX_AHEAD_MS = 1000
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_STATUS = {"filled": "FILLED", "cancelled": "CANCELED"}


class BinanceError(Exception):
    """One refusal in Binance's shape: ``{"code": -2011, "msg": "Unknown order sent."}``."""

    def __init__(self, status_code: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status_code = status_code
        self.code = code
        self.msg = msg


def _missing(name: str) -> BinanceError:
    return BinanceError(
        400,
        -1102,
        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
    )


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _decimal_text(value: Decimal | int) -> str:
    """Binance writes 8 decimals; a value with more keeps them all rather than being rounded."""
    value = Decimal(value)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -8:
        return f"{value:.8f}"
    return str(value)


def order_number(venue_order_id: str) -> int:
    # The book numbers its orders ``<venue>-O<n>`` (OrderBook._rest); n is Binance's orderId.
    return int(venue_order_id.rpartition("-O")[2])


def _order_json(order: Order) -> dict[str, Any]:
    status = _STATUS.get(order.status) or ("PARTIALLY_FILLED" if order.filled_qty else "NEW")
    return {
        "symbol": order.symbol,
        "orderId": order_number(order.venue_order_id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": _decimal_text(order.price),
        "origQty": _decimal_text(order.qty),
        "executedQty": _decimal_text(order.filled_qty),
        "cummulativeQuoteQty": _decimal_text(order.price * order.filled_qty),
        "status": status,
        "timeInForce": "GTC",
        "type": "LIMIT",
        "side": order.side.upper(),
        "stopPrice": "0.00000000",
        "icebergQty": "0.00000000",
        "time": _ms(order.created_at),
        "updateTime": _ms(order.updated_at),
        "isWorking": True,
        "workingTime": _ms(order.created_at),
        "origQuoteOrderQty": "0.00000000",
        "selfTradePreventionMode": "NONE",
    }


def _trade_json(fill: Fill) -> dict[str, Any]:
    return {
        "symbol": fill.symbol,
        "id": fill.seq,
        "orderId": order_number(fill.venue_order_id),
        "orderListId": -1,
        "price": _decimal_text(fill.price),
        "qty": _decimal_text(fill.qty),
        "quoteQty": _decimal_text(fill.price * fill.qty),
        "commission": "0.00000000",
        "commissionAsset": QUOTE_ASSET,
        "time": _ms(fill.ts),
        "isBuyer": fill.side == "buy",
        "isMaker": True,
        "isBestMatch": True,
    }


def _symbol_json(symbol: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": symbol,
        "baseAssetPrecision": 8,
        "quoteAsset": QUOTE_ASSET,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _decimal_text(TICK_SIZE),
                "maxPrice": "1000000.00000000",
                "tickSize": _decimal_text(TICK_SIZE),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "1.00000000",
                "maxQty": "9000000.00000000",
                "stepSize": "1.00000000",
            },
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
    }


def _split_signature(raw: str) -> tuple[str, str | None]:
    """``a=1&b=2&signature=ff`` -> (``a=1&b=2``, ``ff``): what was signed, and the signature."""
    head, sep, signature = raw.rpartition("signature=")
    if not sep or (head and not head.endswith("&")):
        return raw, None
    return head.removesuffix("&"), signature


class _Params:
    """A signed request's parameters, read the way Binance reads them."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def text(self, name: str) -> str | None:
        return self._values.get(name) or None

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise _missing(name)
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.text(name)
        if value is None:
            return default
        if not value.lstrip("-").isdigit():
            raise BinanceError(
                400, -1100, f"Illegal characters found in parameter '{name}'; legal range is ''."
            )
        return int(value)

    def limit(self) -> int:
        limit = self.integer("limit", DEFAULT_LIMIT)
        assert limit is not None
        if not 1 <= limit <= MAX_LIMIT:
            raise BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return limit


def install_binance_face(app: FastAPI, venue: SimulatedVenue, settings: VenueSettings,
                         faults: VenueFaults) -> None:  # fmt: skip
    book = venue.book
    symbols = frozenset(settings.symbols)
    expected_key = settings.api_key.get_secret_value().encode()
    secret = settings.api_secret.get_secret_value().encode() if settings.api_secret else None
    router = APIRouter(prefix=BINANCE_PREFIX)

    async def signed(request: Request) -> _Params:
        presented = request.headers.get(API_KEY_HEADER)
        if not presented:
            raise BinanceError(401, -2014, "API-key format invalid.")
        # Never echo what was presented: a near-miss key in a log is still a leaked key.
        if not hmac.compare_digest(presented.encode(), expected_key):
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if secret is None:
            raise BinanceError(
                401, -2015, "this lab venue has no API secret (start it with --api-secret-env)"
            )
        query, query_signature = _split_signature(request.url.query)
        body, body_signature = _split_signature((await request.body()).decode("latin-1"))
        signature = query_signature or body_signature
        if signature is None:
            raise _missing("signature")
        # Binance signs the query string and the body concatenated, as sent.
        expected = hmac.new(secret, (query + body).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        values = dict(parse_qsl(query, keep_blank_values=True))
        values |= dict(parse_qsl(body, keep_blank_values=True))
        params = _Params(values)
        timestamp = params.integer("timestamp")
        if timestamp is None:
            raise _missing("timestamp")
        recv_window = params.integer("recvWindow", DEFAULT_RECV_WINDOW_MS)
        assert recv_window is not None
        if not 0 < recv_window <= MAX_RECV_WINDOW_MS:
            raise BinanceError(400, -1131, "recvWindow must be less than 60000")
        now = int(time.time() * 1000)
        if timestamp > now + MAX_AHEAD_MS or now - timestamp > recv_window:
            raise BinanceError(
                400, -1021, "Timestamp for this request is outside of the recvWindow."
            )
        return params

    def known_symbol(params: _Params) -> str:
        symbol = params.required("symbol")
        if symbol not in symbols:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return symbol

    def find_order(params: _Params, symbol: str) -> Order | None:
        number = params.integer("orderId")
        client_order_id = params.text("origClientOrderId")
        if number is None and client_order_id is None:
            raise BinanceError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        try:
            if number is not None:
                order = book.order(venue_order_id=f"{settings.name}-O{number:08d}")
            else:
                order = book.order(client_order_id=client_order_id)
        except VenueRejection:
            return None
        return order if order.symbol == symbol else None

    @router.get("/ping")
    async def ping() -> dict[str, Any]:
        return {}

    @router.get("/time")
    async def server_time() -> dict[str, Any]:
        return {"serverTime": int(time.time() * 1000)}

    @router.get("/exchangeInfo")
    async def exchange_info() -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": [_symbol_json(s) for s in sorted(symbols)],
        }

    @router.get("/account")
    async def account(request: Request) -> dict[str, Any]:
        await signed(request)
        return {
            "makerCommission": 0,
            "takerCommission": 0,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "updateTime": int(time.time() * 1000),
            "accountType": "SPOT",
            "balances": [],
            "permissions": ["SPOT"],
        }

    @router.post("/order")
    async def new_order(request: Request) -> dict[str, Any]:
        params = await signed(request)
        symbol = known_symbol(params)
        side = params.required("side")
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'side'.")
        if params.required("type") != "LIMIT":
            raise BinanceError(400, -1116, "Invalid orderType.")
        try:
            qty = Decimal(params.required("quantity"))
            price = Decimal(params.required("price"))
        except InvalidOperation as exc:
            raise BinanceError(400, -1100, "Illegal characters found in a parameter.") from exc
        if qty <= 0 or qty != qty.to_integral_value():
            raise BinanceError(400, -1013, "Filter failure: LOT_SIZE")
        if price <= 0 or price % TICK_SIZE != 0:
            raise BinanceError(400, -1013, "Filter failure: PRICE_FILTER")
        client_order_id = params.text("newClientOrderId") or f"lab-{uuid.uuid4().hex[:22]}"
        try:
            ticket = OrderTicketWithoutEpoch(
                client_order_id=client_order_id,
                symbol=symbol,
                side="buy" if side == "BUY" else "sell",
                qty=int(qty),
                price=price,
            )
            order = book.enter_without_epoch(ticket)
        except VenueRejection as exc:
            raise BinanceError(400, -2010, "Duplicate order sent.") from exc
        except ValueError as exc:
            raise BinanceError(
                400, -1100, f"Illegal characters found in a parameter: {exc}"
            ) from exc
        return {**_order_json(order), "transactTime": _ms(order.created_at), "fills": []}

    @router.get("/order")
    async def query_order(request: Request) -> dict[str, Any]:
        params = await signed(request)
        order = find_order(params, known_symbol(params))
        if order is None:
            raise BinanceError(400, -2013, "Order does not exist.")
        return _order_json(order)

    @router.delete("/order")
    async def cancel_order(request: Request) -> dict[str, Any]:
        params = await signed(request)
        order = find_order(params, known_symbol(params))
        if order is None:
            raise BinanceError(400, -2011, "Unknown order sent.")
        venue.counters.cancel_requests += 1
        # Through the book's cancel, so the cancel audit counts this request like any other.
        [result] = book.cancel([order.venue_order_id], by="venue_order_id")
        if result.outcome != "cancelled":
            # Binance answers a cancel of a closed order exactly as one of an unknown order.
            raise BinanceError(400, -2011, "Unknown order sent.")
        return {
            **_order_json(order),
            # The cancel's own id; the order's is origClientOrderId, as on Binance.
            "origClientOrderId": order.client_order_id,
            "clientOrderId": params.text("newClientOrderId") or f"lab-{uuid.uuid4().hex[:22]}",
        }

    @router.get("/openOrders")
    async def open_orders(request: Request) -> Response:
        params = await signed(request)
        symbol = known_symbol(params) if params.text("symbol") else None
        orders = [_order_json(o) for o in book.open_orders(symbol)]
        agent = request.headers.get("user-agent", "")
        return JSONResponse(faults.binance_open_orders(orders, symbol, agent))

    @router.delete("/openOrders")
    async def cancel_open_orders(request: Request) -> list[dict[str, Any]]:
        params = await signed(request)
        symbol = known_symbol(params)
        venue.counters.cancel_requests += 1
        cancelled = []
        for order in book.open_orders(symbol):
            [result] = book.cancel([order.venue_order_id], by="venue_order_id")
            if result.outcome == "cancelled":
                cancelled.append({**_order_json(order), "origClientOrderId": order.client_order_id})
        if not cancelled:
            raise BinanceError(400, -2011, "Unknown order sent.")
        return cancelled

    @router.get("/allOrders")
    async def all_orders(request: Request) -> list[dict[str, Any]]:
        params = await signed(request)
        symbol = known_symbol(params)
        from_number = params.integer("orderId")
        start, end = params.integer("startTime"), params.integer("endTime")
        limit = params.limit()
        orders = [
            o
            for o in book.all_orders(symbol)
            if (from_number is None or order_number(o.venue_order_id) >= from_number)
            and (start is None or _ms(o.created_at) >= start)
            and (end is None or _ms(o.created_at) <= end)
        ]
        # From a starting point: the first ``limit`` after it; otherwise the latest ``limit``.
        page = orders[:limit] if from_number is not None or start is not None else orders[-limit:]
        return [_order_json(o) for o in page]

    @router.get("/myTrades")
    async def my_trades(request: Request) -> Response:
        params = await signed(request)
        symbol = known_symbol(params)
        number = params.integer("orderId")
        from_id = params.integer("fromId")
        start, end = params.integer("startTime"), params.integer("endTime")
        limit = params.limit()
        after_seq = max((from_id or 1) - 1, 0)
        trades = [
            f
            for f in book.fills_page(after_seq, None, sys.maxsize).fills
            if f.symbol == symbol
            and (number is None or order_number(f.venue_order_id) == number)
            and (start is None or _ms(f.ts) >= start)
            and (end is None or _ms(f.ts) <= end)
        ]
        page = trades[:limit] if from_id is not None or start is not None else trades[-limit:]
        agent = request.headers.get("user-agent", "")
        body = faults.binance_trades(
            [_trade_json(f) for f in page], symbol, from_id is None, limit, agent
        )
        return JSONResponse(body)

    app.include_router(router)

    @app.exception_handler(BinanceError)
    async def _refusal(_: Request, exc: BinanceError) -> Response:
        return JSONResponse({"code": exc.code, "msg": exc.msg}, status_code=exc.status_code)
