"""The venue's REST API. Routes translate HTTP to SimulatedVenue calls and back, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from lab.service import ADMIN_PREFIX, install_latency_chaos
from lab.venue.binance_face import install_binance_face
from lab.venue.config import VenueSettings
from lab.venue.exchange import SimulatedVenue
from lab.venue.faults import BINANCE_PREFIX, install_faults
from lab.venue.fix_acceptor import serve_fix
from lab.venue.matching import match_forever
from lab.venue.models import (
    AdminFillRequest,
    CancelAudit,
    CancelReply,
    CancelRequest,
    ConnectRequest,
    Counters,
    ErrorBody,
    Fill,
    FillsPage,
    Health,
    Heartbeat,
    InjectedOrder,
    LoggedOut,
    OpenOrders,
    Order,
    OrderRequest,
    SequenceError,
    SessionOpened,
    SessionRef,
    StaleEpochError,
    ValidationFailed,
)
from lab.venue.rejections import VenueRejection

API_KEY_HEADER = "X-Api-Key"
MAX_FILLS_PER_PAGE = 5000
_UNAUTHENTICATED_PATHS = frozenset({"/health"})


def create_app(settings: VenueSettings) -> FastAPI:
    venue = SimulatedVenue(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The FIX 4.4 face, when given a port, serves the same book, sessions and fault plan.
        async with serve_fix(settings, venue, lambda: faults), _random_fills(venue, settings):
            yield

    app = FastAPI(title=f"simulated venue {settings.name}", lifespan=lifespan)
    install_latency_chaos(app)
    faults = install_faults(app)
    _install_error_bodies(app)
    # Added after the chaos middlewares, so it wraps them: a request without the key is refused
    # before anything else runs, the chaos endpoints included.
    _install_api_key_check(app, settings)
    install_binance_face(app, venue, settings, faults)

    @app.get("/health")
    async def health() -> Health:
        return Health(venue=settings.name, time=datetime.now(UTC))

    @app.post("/session/connect", responses={429: {"model": ErrorBody}})
    async def connect(request: ConnectRequest) -> SessionOpened:
        session = venue.connect(request.member)
        return SessionOpened(
            session_id=session.session_id, member=session.member, next_seq=session.expected_seq
        )

    @app.post("/session/logout", responses={404: {"model": ErrorBody}})
    async def logout(request: SessionRef) -> LoggedOut:
        return LoggedOut(session_id=venue.logout(request.session_id).session_id)

    @app.post("/session/heartbeat", responses={409: {"model": ErrorBody}})
    async def heartbeat(request: SessionRef) -> Heartbeat:
        session = venue.heartbeat(request.session_id)
        return Heartbeat(session_id=session.session_id, next_seq=session.expected_seq)

    @app.post(
        "/orders",
        response_model=Order,
        responses={
            400: {"model": ErrorBody},
            409: {"model": SequenceError | StaleEpochError | ErrorBody},
        },
    )
    async def submit_order(request: OrderRequest) -> Response:
        # Always answered from the recorded reply, so a resend is byte-for-byte the original.
        reply = venue.submit_order(request)
        return JSONResponse(reply.body, status_code=reply.status_code)

    @app.get("/orders/open", response_model=OpenOrders)
    async def open_orders(http: Request, symbol: str | None = None) -> Response:
        orders = OpenOrders(orders=venue.book.open_orders(symbol)).model_dump(mode="json")
        agent = http.headers.get("user-agent", "")
        return JSONResponse(faults.open_orders_body(orders["orders"], agent))

    @app.get("/orders/{venue_order_id}", responses={404: {"model": ErrorBody}})
    async def get_order(venue_order_id: str) -> Order:
        return venue.book.order(venue_order_id=venue_order_id)

    @app.post("/orders/cancel")
    async def cancel_orders(request: CancelRequest) -> CancelReply:
        venue.counters.cancel_requests += 1
        if request.venue_order_ids is not None:
            results = venue.book.cancel(request.venue_order_ids, by="venue_order_id")
        else:
            assert request.client_order_ids is not None  # CancelRequest demands exactly one
            results = venue.book.cancel(request.client_order_ids, by="client_order_id")
        return CancelReply(results=results)

    @app.get("/fills", response_model=FillsPage, responses={400: {"model": ErrorBody}})
    async def fills(
        http: Request,
        since_seq: Annotated[int, Query(ge=0)] = 0,
        since_time: AwareDatetime | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_FILLS_PER_PAGE)] = 500,
        cursor: str | None = None,
    ) -> Response:
        page = venue.book.fills_page(max(since_seq, _cursor_seq(cursor)), since_time, limit)
        agent = http.headers.get("user-agent", "")
        body = faults.fills_body(page.model_dump(mode="json"), cursor is None, agent)
        return JSONResponse(body)

    @app.post(f"{ADMIN_PREFIX}/orders", responses={409: {"model": ErrorBody}})
    async def inject_order(ticket: InjectedOrder) -> Order:
        order = venue.book.rest(ticket)
        if not ticket.auto_fill:
            venue.book.hold_from_matching(order)
        return order

    @app.post(f"{ADMIN_PREFIX}/fills", responses={404: {"model": ErrorBody}})
    async def inject_fill(request: AdminFillRequest) -> Fill:
        order = venue.book.order(request.venue_order_id, request.client_order_id)
        return venue.book.fill(order, request.qty, request.price)

    @app.get(f"{ADMIN_PREFIX}/orders")
    async def orders_of_epoch(epoch: Annotated[int, Query(ge=1)]) -> OpenOrders:
        return OpenOrders(orders=venue.book.orders_of_epoch(epoch))

    @app.get(f"{ADMIN_PREFIX}/counters")
    async def counters() -> Counters:
        return venue.counters

    @app.get(f"{ADMIN_PREFIX}/cancels")
    async def cancels(client_order_id: Annotated[list[str], Query()]) -> CancelAudit:
        return venue.book.cancel_audit(client_order_id)

    return app


@contextlib.asynccontextmanager
async def _random_fills(venue: SimulatedVenue, settings: VenueSettings) -> AsyncIterator[None]:
    if settings.fill_probability == 0:
        yield
        return
    rng = random.Random(settings.seed)
    matching = asyncio.create_task(
        match_forever(venue.book, settings.fill_interval_s, settings.fill_probability, rng)
    )
    try:
        yield
    finally:
        matching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await matching


def _cursor_seq(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()):
        raise VenueRejection(
            400, ErrorBody(error="invalid cursor; pass next_cursor back exactly as returned")
        )
    return int(cursor)


def _install_error_bodies(app: FastAPI) -> None:
    @app.exception_handler(VenueRejection)
    async def _rejection(_: Request, exc: VenueRejection) -> Response:
        return JSONResponse(exc.body_json(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        detail = jsonable_encoder(exc.errors())
        body = ValidationFailed(error=f"invalid request: {_describe(exc)}", detail=detail)
        return JSONResponse(body.model_dump(mode="json"), status_code=422)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def _install_api_key_check(app: FastAPI, settings: VenueSettings) -> None:
    expected = settings.api_key.get_secret_value().encode()

    @app.middleware("http")
    async def _require_api_key(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # The Binance face checks its own key and signature, in Binance's shapes.
        path = request.url.path
        if path in _UNAUTHENTICATED_PATHS or path.startswith(BINANCE_PREFIX + "/"):
            return await call_next(request)
        presented = request.headers.get(API_KEY_HEADER)
        if presented is None:
            problem = f"missing {API_KEY_HEADER} header; send the venue's API key"
        elif not hmac.compare_digest(presented.encode(), expected):
            # Never echo what was presented: a near-miss key in a log is still a leaked key.
            problem = f"wrong {API_KEY_HEADER}; send the key from this venue's api_key_env"
        else:
            return await call_next(request)
        return JSONResponse(ErrorBody(error=problem).model_dump(), status_code=401)
