"""Each venue adapter's lab counterpart ("face"), started for the contract suite.

A face is a running lab venue (one book; the lab's REST API, and whichever dialect the adapter
speaks) plus what a scenario needs that the port does not offer: the adapter's config for an
account, the venue's admin API (inject orders and fills on the one book), and the few
dialect-specific hooks below. To add an adapter, write one ``<name>_face`` context manager here
and add one line to ``FACES`` in test_venue_contract.py.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from adapters.venues.lab import LabOrderGateway
from domain.book import Order, Side
from domain.topology import CcxtVenueConfig, Fix44VenueConfig, LabVenueConfig, VenueConfig
from lab.processes import ProcessSpec, free_port, start, stop, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
COOLDOWN_S = 1.0
# Small pages, so a scenario crosses several with few orders.
LAB_PAGE_SIZE = 25
# A page of ccxt's, set in the venue's config (Binance allows up to 1,000): small, so the
# paging case crosses pages without a thousand orders.
CCXT_PAGE_SIZE = 40


@dataclass
class LabVenueProcess:
    """A lab venue process: its REST base URL and API key (for the admin API)."""

    name: str
    base_url: str
    api_key: str
    key_env: str

    def admin(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"X-Api-Key": self.api_key}, timeout=10
        )

    async def inject_order(
        self, client_order_id: str, *, qty: int = 5, epoch: int = 2
    ) -> dict[str, Any]:
        """Rest an order on the book, kept away from random matching."""
        async with self.admin() as http:
            response = await http.post(
                "/admin/orders",
                json={
                    "client_order_id": client_order_id,
                    "epoch": epoch,
                    "symbol": "ESZ5",
                    "side": "buy",
                    "qty": qty,
                    "price": "100.25",
                    "auto_fill": False,
                },
            )
        response.raise_for_status()
        return dict(response.json())

    async def set_faults(self, plan: dict[str, Any]) -> None:
        async with self.admin() as http:
            (await http.post("/admin/faults", json=plan)).raise_for_status()


@contextmanager
def lab_venue_process(
    log_dir: Path,
    name: str,
    extra_argv: Sequence[str] = (),
    extra_secrets: dict[str, str] | None = None,
) -> Iterator[LabVenueProcess]:
    """One lab venue with no random fills and a short reconnect cooldown; always stopped.
    ``extra_argv`` adds options (another face's port); ``extra_secrets`` more variables to
    hand the process as secrets (the Binance face's signing secret)."""
    port = free_port()
    key_env = f"CONTRACT_VENUE_{name.upper()}_API_KEY"
    api_key = secrets.token_urlsafe(24)
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    spec = ProcessSpec(
        name=f"venue-{name}",
        argv=[
            sys.executable,
            "-m",
            "lab.venue",
            "--name",
            name,
            "--port",
            str(port),
            "--api-key-env",
            key_env,
            "--fill-probability",
            "0",
            "--reconnect-cooldown-s",
            str(COOLDOWN_S),
            *extra_argv,
        ],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"PYTHONPATH": python_path},
        log_path=log_dir / f"venue-{name}.log",
        secret_env=[key_env, *(extra_secrets or {})],
    )
    pid = start(spec, secrets={key_env: api_key, **(extra_secrets or {})})
    try:
        wait_ready(spec, pid, timeout_s=30)
        yield LabVenueProcess(name, f"http://127.0.0.1:{port}", api_key, key_env)
    finally:
        stop(pid)


@dataclass
class VenueFace:
    """One adapter's lab counterpart, running.

    ``config(account)``         the adapter's topology entry for ``account``; the credentials
                                it names are set in ``env``.
    ``page_size``               how many orders or fills fill one of the adapter's pages.
    ``leave_session_open``      log ``account`` on and vanish without logging out: the venue
                                sees an unclean disconnect when the next session arrives.
    ``rate_limit_next_call``    the venue answers the adapter's next call 429 + Retry-After.
    ``malformed_order`` / ``malformed_fill``  from now on the venue appends one report that
                                does not validate; returns the reference it carries.
    ``place_order``             order entry at ``epoch`` (only faces with epoch_refusal).
    ``sessions``                the dialect has logon sessions (and so reconnect cooldowns);
                                a stateless REST dialect such as Binance's has none.
    """

    venue: LabVenueProcess
    env: dict[str, str]
    config: Callable[[str], VenueConfig]
    page_size: int
    leave_session_open: Callable[[str], Awaitable[None]]
    rate_limit_next_call: Callable[[float], Awaitable[None]]
    malformed_order: Callable[[], Awaitable[str]]
    malformed_fill: Callable[[], Awaitable[str]]
    place_order: Callable[[str, int], Awaitable[Order]] | None = None
    sessions: bool = True


FaceFactory = Callable[[Path], AbstractContextManager[VenueFace]]


@contextmanager
def lab_face(log_dir: Path) -> Iterator[VenueFace]:
    """``adapter = "lab"``: the lab's own REST dialect, straight at the lab venue."""
    with lab_venue_process(log_dir, "alpha") as venue:

        def config(account: str) -> LabVenueConfig:
            return LabVenueConfig(
                name=venue.name,
                url=venue.base_url,
                api_key_env=venue.key_env,
                account=account,
                reconnect_cooldown_s=COOLDOWN_S,
                page_size=LAB_PAGE_SIZE,
            )

        async def leave_session_open(account: str) -> None:
            async with venue.admin() as http:
                response = await http.post("/session/connect", json={"member": account})
            response.raise_for_status()

        async def rate_limit_next_call(retry_after_s: float) -> None:
            await venue.set_faults(
                {"rate_limits": 1, "retry_after_s": retry_after_s, "paths": ["/orders/open"]}
            )

        async def malformed_order() -> str:
            reference = f"E2-junk-{uuid.uuid4().hex[:8]}"
            await venue.set_faults(
                {"junk_orders": [{"client_order_id": reference, "symbol": "ESZ5", "qty": -1}]}
            )
            return reference

        async def malformed_fill() -> str:
            reference = f"T-junk-{uuid.uuid4().hex[:8]}"
            await venue.set_faults({"junk_fills": [{"trade_id": reference, "price": "lots"}]})
            return reference

        async def place_order(account: str, epoch: int) -> Order:
            gateway = LabOrderGateway(config(account), account, user_agent="contract-suite")
            try:
                await gateway.connect()
                return await gateway.place_order(
                    f"E{epoch}-{uuid.uuid4().hex[:10]}", epoch, "ESZ5", Side.BUY, 1, Decimal("99")
                )
            finally:
                await gateway.logout()
                await gateway.close()

        yield VenueFace(
            venue=venue,
            env={venue.key_env: venue.api_key},
            config=config,
            page_size=LAB_PAGE_SIZE,
            leave_session_open=leave_session_open,
            rate_limit_next_call=rate_limit_next_call,
            malformed_order=malformed_order,
            malformed_fill=malformed_fill,
            place_order=place_order,
        )


@contextmanager
def fix44_face(log_dir: Path) -> Iterator[VenueFace]:
    """``adapter = "fix44"``: the lab venue's FIX 4.4 acceptor (lab/venue/fix_acceptor.py)."""
    fix_port = free_port()
    with lab_venue_process(log_dir, "gamma", ["--fix-port", str(fix_port)]) as venue:

        def config(account: str) -> Fix44VenueConfig:
            # The member is the SenderCompID; the venue's API key is the FIX Password.
            return Fix44VenueConfig(
                name=venue.name,
                adapter="fix44",
                host="127.0.0.1",
                port=fix_port,
                sender_comp_id=account,
                target_comp_id=venue.name,
                password_env=venue.key_env,
                heartbeat_s=5,
                account=account,
                reconnect_cooldown_s=COOLDOWN_S,
            )

        async def leave_session_open(account: str) -> None:
            async with venue.admin() as http:
                response = await http.post("/session/connect", json={"member": account})
            response.raise_for_status()

        async def rate_limit_next_call(retry_after_s: float) -> None:
            await venue.set_faults(
                {"rate_limits": 1, "retry_after_s": retry_after_s, "paths": ["fix:AF"]}
            )

        async def malformed_order() -> str:
            reference = f"E2-junk-{uuid.uuid4().hex[:8]}"
            junk = {"client_order_id": reference, "symbol": "ESZ5", "side": "buy", "qty": -1}
            await venue.set_faults({"junk_orders": [junk | {"price": "1"}]})
            return reference

        async def malformed_fill() -> str:
            reference = f"T-junk-{uuid.uuid4().hex[:8]}"
            await venue.set_faults({"junk_fills": [{"trade_id": reference, "price": "lots"}]})
            return reference

        yield VenueFace(
            venue=venue,
            env={venue.key_env: venue.api_key},
            config=config,
            # FIX has no pages: mass status and trade capture stream every report; this many
            # makes the answers span many TCP reads.
            page_size=300,
            leave_session_open=leave_session_open,
            rate_limit_next_call=rate_limit_next_call,
            malformed_order=malformed_order,
            malformed_fill=malformed_fill,
        )


@contextmanager
def ccxt_face(log_dir: Path) -> Iterator[VenueFace]:
    """``adapter = "ccxt"``, ``exchange = "binance"``: the real ccxt library against the lab
    venue's Binance-compatible face (lab/venue/binance_face.py), its whole API URL replaced."""
    secret_env, secret = "CONTRACT_VENUE_BETA_API_SECRET", secrets.token_hex(32)
    extra = ["--api-secret-env", secret_env, "--symbols", "ESZ5"]
    with lab_venue_process(log_dir, "beta", extra, {secret_env: secret}) as venue:

        def config(account: str) -> CcxtVenueConfig:
            return CcxtVenueConfig(
                name=venue.name,
                adapter="ccxt",
                exchange="binance",
                api_url=venue.base_url,
                api_key_env=venue.key_env,
                secret_env=secret_env,
                symbols=["ESZ5"],
                rate_limit=False,
                page_size=CCXT_PAGE_SIZE,
                account=account,
                reconnect_cooldown_s=COOLDOWN_S,
            )

        async def leave_session_open(account: str) -> None:
            # The member's lab session; Binance REST has none of its own (see the adapter).
            async with venue.admin() as http:
                response = await http.post("/session/connect", json={"member": account})
            response.raise_for_status()

        async def rate_limit_next_call(retry_after_s: float) -> None:
            await venue.set_faults(
                {"rate_limits": 1, "retry_after_s": retry_after_s, "paths": ["/api/v3/openOrders"]}
            )

        def now_ms() -> int:
            return int(datetime.now(UTC).timestamp() * 1000)

        async def malformed_order() -> str:
            reference = f"E2-junk-{uuid.uuid4().hex[:8]}"
            junk = {"symbol": "ESZ5", "orderId": 99999999, "clientOrderId": reference,
                    "price": "1.00", "origQty": "-1", "executedQty": "0", "status": "NEW",
                    "side": "BUY", "type": "LIMIT", "time": now_ms()}  # fmt: skip
            await venue.set_faults({"junk_orders": [junk]})
            return reference

        async def malformed_fill() -> str:
            reference = f"T-junk-{uuid.uuid4().hex[:8]}"
            junk = {"symbol": "ESZ5", "id": reference, "orderId": 99999999, "price": "lots",
                    "qty": "1", "time": now_ms(), "isBuyer": True}  # fmt: skip
            await venue.set_faults({"junk_fills": [junk]})
            return reference

        yield VenueFace(
            venue=venue,
            env={venue.key_env: venue.api_key, secret_env: secret},
            config=config,
            page_size=CCXT_PAGE_SIZE,
            leave_session_open=leave_session_open,
            rate_limit_next_call=rate_limit_next_call,
            malformed_order=malformed_order,
            malformed_fill=malformed_fill,
            sessions=False,
        )


async def gather_limited(calls: list[Awaitable[Any]], limit: int = 16) -> list[Any]:
    """Run ``calls`` at most ``limit`` at a time (a big page without a storm)."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> Any:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))
