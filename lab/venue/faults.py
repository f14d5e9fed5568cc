"""Faults a venue can be told to commit, for the fault-injection tests and for drills.

Each transient fault is a burst of a given size that heals itself, so a test states exactly what
went wrong and a retry that waits long enough always gets through. Malformed reports stay until
cleared, as a venue with a bug keeps sending the same bad data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from lab.service import ADMIN_PREFIX

# Every API path the promotion's recovery uses; a burst can be aimed at some of them.
LAB_PATHS = ("/session/connect", "/orders/open", "/fills", "/orders/cancel", "/orders")
# The Binance-compatible face's paths (lab/venue/binance_face.py); its faults answer in
# Binance's error shape.
BINANCE_PREFIX = "/api/v3"
BINANCE_PATHS = tuple(
    f"{BINANCE_PREFIX}/{p}"
    for p in ("exchangeInfo", "time", "account", "order", "openOrders", "allOrders", "myTrades")
)
API_PATHS = LAB_PATHS + BINANCE_PATHS
FaultPath = Literal[
    "/session/connect",
    "/orders/open",
    "/fills",
    "/orders/cancel",
    "/api/v3/exchangeInfo",
    "/api/v3/time",
    "/api/v3/account",
    "/api/v3/order",
    "/api/v3/openOrders",
    "/api/v3/allOrders",
    "/api/v3/myTrades",
    # The FIX face's requests by MsgType (lab/venue/fix_acceptor.py): an error burst is
    # answered by a BusinessMessageReject, a 429 by one saying "retry after N s" (on a Logon:
    # a Logout saying so), slow by answering late. Logged by record_fix, with FIX's own faults.
    "fix:A",
    "fix:F",
    "fix:AF",
    "fix:AD",
    "fix:q",
]
_DEFAULT_FAULT_PATHS: tuple[FaultPath, ...] = (
    "/session/connect",
    "/orders/open",
    "/fills",
    "/orders/cancel",
)
Burst = Annotated[int, Field(ge=0, le=10_000)]
_LOG_LIMIT = 2_000


class FaultPlan(BaseModel):
    """What the venue does wrong from now on. An empty plan is a healthy venue."""

    model_config = ConfigDict(extra="forbid")

    # The next `errors` API requests on `paths` are answered `error_status`.
    errors: Burst = 0
    error_status: Annotated[int, Field(ge=500, le=599)] = 503
    # Then the next `rate_limits` are answered 429 with Retry-After.
    rate_limits: Burst = 0
    retry_after_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Then the next `bans` are answered 418 (Binance's IP ban for ignoring 429s), with
    # Retry-After `retry_after_s`.
    bans: Burst = 0
    # Then the next `slow` are answered `slow_ms` late (longer than a client's timeout: a hang).
    slow: Burst = 0
    slow_ms: Annotated[int, Field(ge=0, le=600_000)] = 6_000
    # By default the lab API's recovery paths; the Binance face's are named explicitly.
    paths: list[FaultPath] = Field(default_factory=lambda: list(_DEFAULT_FAULT_PATHS))
    # Only requests whose User-Agent starts with this (e.g. the runbooks' "failover-runbooks",
    # leaving the OMS sessions of the same member alone); None: everyone's.
    only_agent: str | None = None
    # Malformed reports: appended to every open-order / fill answer until the plan is replaced
    # (on the Binance face: to every openOrders answer and to myTrades' first page, as given).
    junk_orders: list[dict[str, Any]] = Field(default_factory=list)
    junk_fills: list[dict[str, Any]] = Field(default_factory=list)
    # Every fill reported twice, as venues do after a gateway failover.
    duplicate_fills: bool = False
    # FIX face (lab/venue/fix_acceptor.py; junk_orders / junk_fills reach it too, each field a
    # junk report leaves out becoming a missing tag): the next `fix_drops` mass-status answers
    # stop half way, the connection dropped; the next `fix_seq_gaps` application messages the
    # venue sends each skip a MsgSeqNum.
    fix_drops: Burst = 0
    fix_seq_gaps: Burst = 0


class ServedRequest(BaseModel):
    path: str
    agent: str
    at: AwareDatetime
    # "ok", an injected status ("503", "429") or "slow".
    answer: str


class FaultLog(BaseModel):
    plan: FaultPlan
    requests: list[ServedRequest]


class VenueFaults:
    def __init__(self) -> None:
        self.plan = FaultPlan()
        self.requests: list[ServedRequest] = []

    def replace(self, plan: FaultPlan) -> FaultLog:
        self.plan = plan
        self.requests = []
        return self.log()

    def log(self) -> FaultLog:
        return FaultLog(plan=self.plan, requests=list(self.requests))

    def next_answer(self, path: str, agent: str) -> str:
        """Consume one unit of the first burst that applies to ``path`` asked by ``agent``."""
        plan = self.plan
        if path not in plan.paths or not self.targets(agent):
            answer = "ok"
        elif plan.errors:
            plan.errors -= 1
            answer = str(plan.error_status)
        elif plan.rate_limits:
            plan.rate_limits -= 1
            answer = "429"
        elif plan.bans:
            plan.bans -= 1
            answer = "418"
        elif plan.slow:
            plan.slow -= 1
            answer = "slow"
        else:
            answer = "ok"
        if path in API_PATHS and len(self.requests) < _LOG_LIMIT:
            self.requests.append(
                ServedRequest(path=path, agent=agent, at=datetime.now(UTC), answer=answer)
            )
        return answer

    def take_fix(self, burst: Literal["fix_drops", "fix_seq_gaps"], agent: str) -> bool:
        """Consume one unit of a FIX burst aimed at ``agent`` (a session's SenderSubID)."""
        if not self.targets(agent) or getattr(self.plan, burst) == 0:
            return False
        setattr(self.plan, burst, getattr(self.plan, burst) - 1)
        return True

    def record_fix(self, path: str, agent: str, answer: str) -> None:
        """Log one FIX request (``path`` is ``fix:<MsgType>``) beside the REST requests."""
        if len(self.requests) < _LOG_LIMIT:
            self.requests.append(
                ServedRequest(path=path, agent=agent, at=datetime.now(UTC), answer=answer)
            )

    def targets(self, agent: str) -> bool:
        return self.plan.only_agent is None or agent.startswith(self.plan.only_agent)

    def open_orders_body(self, orders: list[dict[str, Any]], agent: str) -> dict[str, Any]:
        junk = self.plan.junk_orders if self.targets(agent) else []
        return {"orders": [*orders, *junk]}

    def fills_body(self, page: dict[str, Any], first_page: bool, agent: str) -> dict[str, Any]:
        fills = page["fills"]
        if not self.targets(agent):
            return page
        if self.plan.duplicate_fills:
            fills = [copy for fill in fills for copy in (fill, fill)]
        if first_page:
            fills = [*fills, *self.plan.junk_fills]
        return {**page, "fills": fills}

    # The Binance face answers per symbol: junk naming another symbol stays out of the answer.

    def binance_open_orders(
        self, orders: list[dict[str, Any]], symbol: str | None, agent: str
    ) -> list[Any]:
        junk = self.plan.junk_orders if self.targets(agent) else []
        return [*orders, *(j for j in junk if symbol is None or j.get("symbol") in (None, symbol))]

    def binance_trades(
        self, trades: list[dict[str, Any]], symbol: str, first_page: bool, limit: int, agent: str
    ) -> list[Any]:
        """A myTrades page with the plan's faults. Junk takes the place of the page's last real
        trades rather than overflowing ``limit``, as a venue never answers more than asked
        (ccxt would cut the overflow off and the junk with it); paging resumes after the last
        real trade, so nothing real is lost."""
        if not self.targets(agent):
            return trades
        junk = [j for j in self.plan.junk_fills if j.get("symbol") in (None, symbol)]
        if first_page and junk:
            trades = [*junk, *trades[: max(limit - len(junk), 0)]]
        if self.plan.duplicate_fills:
            trades = [copy for trade in trades for copy in (trade, trade)]
        return trades


def install_faults(app: FastAPI) -> VenueFaults:
    """`POST /admin/faults` sets the plan (and clears the log); `GET /admin/faults` reads both."""
    faults = VenueFaults()

    @app.middleware("http")
    async def _inject(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith(ADMIN_PREFIX):
            return await call_next(request)
        answer = faults.next_answer(request.url.path, request.headers.get("user-agent", ""))
        binance = request.url.path.startswith(BINANCE_PREFIX + "/")
        if answer in ("429", "418"):
            retry_after = faults.plan.retry_after_s
            headers = {"Retry-After": f"{retry_after:g}"}
            if binance:
                # -1003 is Binance's code for both; the status says which (418: banned).
                what = "IP banned" if answer == "418" else "Too many requests"
                body: dict[str, Any] = {"code": -1003, "msg": f"{what} (injected)"}
            else:
                body = {"error": "rate limited (injected)", "retry_after_s": retry_after}
            return JSONResponse(body, status_code=int(answer), headers=headers)
        if answer.isdigit():
            return JSONResponse({"error": "injected fault"}, status_code=int(answer))
        if answer == "slow":
            # The client has given up by then; the answer still goes out, as a slow venue's does.
            await asyncio.sleep(faults.plan.slow_ms / 1000)
        return await call_next(request)

    @app.post(f"{ADMIN_PREFIX}/faults")
    async def set_faults(plan: FaultPlan) -> FaultLog:
        return faults.replace(plan)

    @app.get(f"{ADMIN_PREFIX}/faults")
    async def fault_log() -> FaultLog:
        return faults.log()

    return faults
