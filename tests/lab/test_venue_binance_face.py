"""The venue's Binance-compatible face, through the real ccxt library and the ccxt adapter.

A real venue process (no automatic fills) with a secret for its face; ccxt's whole
``urls["api"]`` points at it, so nothing here can reach the internet.
"""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async  # type: ignore[import-untyped]
import httpx
import pytest

from adapters.venues.ccxt import CcxtVenueAdapter
from domain.topology import CcxtVenueConfig
from domain.venues import AuthRejected, ClientOrderId, RateLimited, VenueConfigError
from lab.processes import ProcessSpec, free_port, start, stop, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "BINANCE_FACE_TEST_API_KEY"
SECRET_ENV = "BINANCE_FACE_TEST_API_SECRET"
VENUE = "beta"
SYMBOL = "AAPL"


@dataclass(frozen=True)
class FaceVenue:
    base_url: str
    api_key: str
    secret: str

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(
            method, self.base_url + path, headers={"X-Api-Key": self.api_key}, timeout=10, **kwargs
        )
        assert response.status_code == 200, response.text
        return response.json()


@contextmanager
def running_face_venue(log_dir: Path) -> Iterator[FaceVenue]:
    port = free_port()
    api_key, secret = secrets.token_urlsafe(24), secrets.token_hex(32)
    python_path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    spec = ProcessSpec(
        name=f"venue-{VENUE}",
        argv=[
            sys.executable,
            "-m",
            "lab.venue",
            "--name",
            VENUE,
            "--port",
            str(port),
            "--api-key-env",
            KEY_ENV,
            "--api-secret-env",
            SECRET_ENV,
            "--fill-probability",
            "0",
        ],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"PYTHONPATH": python_path},
        log_path=log_dir / f"venue-{VENUE}.log",
        secret_env=[KEY_ENV, SECRET_ENV],
    )
    pid = start(spec, secrets={KEY_ENV: api_key, SECRET_ENV: secret})
    try:
        wait_ready(spec, pid, timeout_s=30)
        yield FaceVenue(f"http://127.0.0.1:{port}", api_key, secret)
    finally:
        stop(pid)


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceVenue]:
    with running_face_venue(tmp_path_factory.mktemp("binance-face")) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy(face: FaceVenue) -> Iterator[None]:
    face.admin("POST", "/admin/faults", json={})
    yield
    face.admin("POST", "/admin/faults", json={})


@pytest.fixture
def credentials(face: FaceVenue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, face.api_key)
    monkeypatch.setenv(SECRET_ENV, face.secret)


def config(face: FaceVenue, **overrides: Any) -> CcxtVenueConfig:
    values: dict[str, Any] = {
        "name": VENUE,
        "adapter": "ccxt",
        "exchange": "binance",
        "api_url": face.base_url,
        "api_key_env": KEY_ENV,
        "secret_env": SECRET_ENV,
        "symbols": [SYMBOL, "MSFT"],
        "rate_limit": False,
        "timeout_s": 5.0,
    }
    return CcxtVenueConfig.model_validate(values | overrides)


@pytest.fixture
async def adapter(face: FaceVenue, credentials: None) -> AsyncIterator[CcxtVenueAdapter]:
    venue = CcxtVenueAdapter(config(face))
    try:
        yield venue
    finally:
        await venue.close()


@pytest.fixture
async def exchange(face: FaceVenue) -> AsyncIterator[Any]:
    """Plain ccxt, as a desk's OMS would use it: places the orders the tests reconcile."""
    client = ccxt_async.binance(
        {
            "apiKey": face.api_key,
            "secret": face.secret,
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},
                "fetchCurrencies": False,
                "fetchMargins": False,
                "fetchOpenOrders": {"warnWithoutSymbol": False},
            },
        }
    )
    api = face.base_url + "/api/v3"
    client.urls["api"] = {"public": api, "private": api, "v1": face.base_url + "/api/v1"}
    try:
        yield client
    finally:
        await client.close()


def unique(prefix: str = "E3-") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


async def place(exchange: Any, client_order_id: str, qty: int = 5, symbol: str = SYMBOL) -> Any:
    return await exchange.create_order(
        symbol, "limit", "buy", qty, 101.25, {"clientOrderId": client_order_id}
    )


def fill(face: FaceVenue, client_order_id: str, qty: int) -> dict[str, Any]:
    body = {"client_order_id": client_order_id, "qty": qty}
    return dict(face.admin("POST", "/admin/fills", json=body))


async def test_an_order_placed_through_ccxt_is_on_the_same_book_as_the_lab_api(
    face: FaceVenue, exchange: Any
) -> None:
    client_order_id = unique()
    placed = await place(exchange, client_order_id)
    assert placed["clientOrderId"] == client_order_id and placed["status"] == "open"
    # The lab API sees it, with the epoch read from the prefix (the face knows none).
    [lab_view] = [o for o in face.admin("GET", "/admin/orders", params={"epoch": 3})["orders"]
                  if o["client_order_id"] == client_order_id]  # fmt: skip
    assert (lab_view["qty"], Decimal(lab_view["price"])) == (5, Decimal("101.25"))
    assert str(int(lab_view["venue_order_id"].rpartition("-O")[2])) == placed["id"]


async def test_the_adapter_reports_open_orders_in_the_domain_vocabulary(
    exchange: Any, adapter: CcxtVenueAdapter
) -> None:
    client_order_id = unique()
    await place(exchange, client_order_id, qty=7)
    session = await adapter.connect()
    assert session.venue == VENUE
    reports = await adapter.open_orders()
    [mine] = [o for o in reports.orders if o.client_order_id == client_order_id]
    assert (mine.symbol, mine.side, mine.qty, mine.price) == (SYMBOL, "buy", 7, Decimal("101.25"))
    assert mine.epoch_from_prefix == 3 and mine.epoch is None
    assert not reports.malformed


async def test_a_bad_signature_is_refused_as_auth_rejected(
    face: FaceVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, face.api_key)
    monkeypatch.setenv(SECRET_ENV, secrets.token_hex(32))  # the wrong secret
    venue = CcxtVenueAdapter(config(face))
    try:
        with pytest.raises(AuthRejected) as refused:
            await venue.connect()
    finally:
        await venue.close()
    assert SECRET_ENV in str(refused.value) and "-1022" in str(refused.value)
    assert face.secret not in str(refused.value)


async def test_an_unknown_api_key_is_refused_as_auth_rejected(
    face: FaceVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-key")
    monkeypatch.setenv(SECRET_ENV, face.secret)
    venue = CcxtVenueAdapter(config(face))
    try:
        with pytest.raises(AuthRejected, match="-2015"):
            await venue.connect()
    finally:
        await venue.close()


def test_an_unset_credential_names_its_variable(
    face: FaceVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, face.api_key)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    with pytest.raises(VenueConfigError, match=SECRET_ENV):
        CcxtVenueAdapter(config(face))


async def test_429_raises_rate_limited_with_the_servers_retry_after(
    face: FaceVenue, adapter: CcxtVenueAdapter
) -> None:
    await adapter.connect()
    plan = {"rate_limits": 1, "retry_after_s": 2.5, "paths": ["/api/v3/openOrders"]}
    face.admin("POST", "/admin/faults", json=plan)
    with pytest.raises(RateLimited) as limited:
        await adapter.open_orders()
    assert limited.value.retry_after_s == 2.5 and "429" in str(limited.value)
    log = face.admin("GET", "/admin/faults")
    assert [(r["path"], r["answer"]) for r in log["requests"]] == [("/api/v3/openOrders", "429")]
    assert log["requests"][0]["agent"].startswith("failover-runbooks")
    await adapter.open_orders()  # the burst is spent


async def test_418_ban_raises_rate_limited_with_its_retry_after(
    face: FaceVenue, adapter: CcxtVenueAdapter
) -> None:
    plan = {"bans": 1, "retry_after_s": 7, "paths": ["/api/v3/exchangeInfo"]}
    face.admin("POST", "/admin/faults", json=plan)
    with pytest.raises(RateLimited) as banned:
        await adapter.connect()
    assert banned.value.retry_after_s == 7 and "418" in str(banned.value)


async def test_concurrent_refusals_each_carry_their_own_retry_after(
    face: FaceVenue, credentials: None
) -> None:
    """Retry-After is read per response, never from ccxt's shared last_response_headers."""
    import asyncio

    venue = CcxtVenueAdapter(config(face))
    try:
        await venue.connect()
        face.admin("POST", "/admin/faults", json={"rate_limits": 1, "retry_after_s": 3,
                                                  "paths": ["/api/v3/openOrders"]})  # fmt: skip
        results = await asyncio.gather(
            venue.open_orders(), venue.fills_since(datetime.now(UTC)), return_exceptions=True
        )
    finally:
        await venue.close()
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert len(limited) == 1 and limited[0].retry_after_s == 3, results


async def test_fills_page_through_my_trades_and_map_to_client_order_ids(
    face: FaceVenue, exchange: Any, credentials: None
) -> None:
    adapter = CcxtVenueAdapter(config(face, page_size=2))
    try:
        await _fills_page_through(face, exchange, adapter)
    finally:
        await adapter.close()


async def _fills_page_through(face: FaceVenue, exchange: Any, adapter: CcxtVenueAdapter) -> None:
    watermark = datetime.now(UTC) - timedelta(milliseconds=5)
    first, second, third = unique(), unique("no-epoch-"), unique()
    await place(exchange, first, qty=5)
    await place(exchange, second, qty=3, symbol="MSFT")
    await place(exchange, third, qty=1)
    trade_ids = [fill(face, first, 1)["trade_id"] for _ in range(3)]
    trade_ids.append(fill(face, second, 3)["trade_id"])
    trade_ids.append(fill(face, third, 1)["trade_id"])
    reports = await adapter.fills_since(watermark)
    assert not reports.malformed
    assert [f.trade_id for f in reports.fills] == [
        t.rpartition("-T")[2].lstrip("0") for t in trade_ids
    ]
    assert [f.client_order_id for f in reports.fills] == [first] * 3 + [second, third]
    assert [f.venue_seq for f in reports.fills] == [int(f.trade_id) for f in reports.fills]
    assert [f.epoch_from_prefix for f in reports.fills] == [3, 3, 3, None, 3]
    assert {(f.symbol, f.qty) for f in reports.fills} == {(SYMBOL, 1), ("MSFT", 3)}
    # The watermark bounds them: nothing before it comes back.
    later = await adapter.fills_since(datetime.now(UTC) + timedelta(seconds=1))
    assert later.fills == []


async def test_a_trade_of_an_order_the_venue_does_not_report_is_a_finding(
    face: FaceVenue, exchange: Any, adapter: CcxtVenueAdapter
) -> None:
    watermark = datetime.now(UTC) - timedelta(milliseconds=5)
    junk_trade = {"symbol": SYMBOL, "id": 999999, "orderId": 888888, "orderListId": -1,
                  "price": "10.00", "qty": "2.00000000", "quoteQty": "20", "commission": "0",
                  "commissionAsset": "USD", "time": int(datetime.now(UTC).timestamp() * 1000),
                  "isBuyer": True, "isMaker": True, "isBestMatch": True}  # fmt: skip
    face.admin("POST", "/admin/faults", json={"junk_fills": [junk_trade]})
    reports = await adapter.fills_since(watermark)
    [finding] = [m for m in reports.malformed if m.reference == "999999"]
    assert finding.kind == "fill" and "888888" in finding.detail


async def test_a_malformed_open_order_is_a_malformed_report(
    face: FaceVenue, exchange: Any, adapter: CcxtVenueAdapter
) -> None:
    good = unique()
    await place(exchange, good)
    junk = {"symbol": SYMBOL, "orderId": 77777, "clientOrderId": "E1-bad-qty", "price": "10.00",
            "origQty": "-3.00000000", "executedQty": "0", "status": "NEW", "timeInForce": "GTC",
            "type": "LIMIT", "side": "SELL", "time": 1, "updateTime": 1}  # fmt: skip
    face.admin("POST", "/admin/faults", json={"junk_orders": [junk]})
    reports = await adapter.open_orders()
    assert good in {o.client_order_id for o in reports.orders}
    [finding] = reports.malformed
    assert (finding.kind, finding.reference) == ("order", "E1-bad-qty")
    assert "qty" in finding.detail


async def test_duplicate_fills_are_reported_twice_for_the_reconciliation_to_judge(
    face: FaceVenue, exchange: Any, adapter: CcxtVenueAdapter
) -> None:
    watermark = datetime.now(UTC) - timedelta(milliseconds=5)
    client_order_id = unique()
    await place(exchange, client_order_id)
    fill(face, client_order_id, 2)
    face.admin("POST", "/admin/faults", json={"duplicate_fills": True})
    reports = await adapter.fills_since(watermark)
    assert [f.client_order_id for f in reports.fills] == [client_order_id] * 2
    assert reports.fills[0] == reports.fills[1]


async def test_cancel_tells_cancelled_from_filled_from_cancelled_from_unknown(
    face: FaceVenue, exchange: Any, adapter: CcxtVenueAdapter
) -> None:
    resting, filled, gone = unique(), unique(), unique()
    for client_order_id in (resting, filled, gone):
        await place(exchange, client_order_id, qty=2)
    fill(face, filled, 2)
    await exchange.cancel_order(None, SYMBOL, {"origClientOrderId": gone})
    nobody = ClientOrderId(unique())
    ids = [ClientOrderId(i) for i in (resting, filled, gone)] + [nobody]
    outcomes = await adapter.cancel(ids)
    assert outcomes == {
        resting: "cancelled",
        filled: "already_filled",
        gone: "already_cancelled",
        nobody: "unknown",
    }
    # Retried, the batch converges; the venue changed the resting order's state exactly once.
    again = await adapter.cancel(ids)
    assert again == outcomes | {resting: "already_cancelled"}
    audit = face.admin("GET", "/admin/cancels", params={"client_order_id": [resting]})
    assert audit["orders"][resting]["state_changing"] == 1


async def test_a_stale_timestamp_is_refused_by_the_face(face: FaceVenue, exchange: Any) -> None:
    exchange.options["recvWindow"] = 5000
    # ccxt signs whatever clock it is given; one a minute behind is outside any recvWindow.
    exchange.milliseconds = lambda: int(datetime.now(UTC).timestamp() * 1000) - 60_000
    with pytest.raises(ccxt_async.InvalidNonce):
        await exchange.fetch_balance()


async def test_a_trade_ccxt_cannot_parse_is_a_finding_not_a_failed_read(
    face: FaceVenue, exchange: Any, adapter: CcxtVenueAdapter
) -> None:
    watermark = datetime.now(UTC) - timedelta(milliseconds=5)
    client_order_id = unique()
    await place(exchange, client_order_id)
    fill(face, client_order_id, 1)
    junk = {"symbol": SYMBOL, "id": "T-junk-1", "orderId": 1, "price": "lots", "qty": "1",
            "time": int(datetime.now(UTC).timestamp() * 1000), "isBuyer": True}  # fmt: skip
    face.admin("POST", "/admin/faults", json={"junk_fills": [junk]})
    reports = await adapter.fills_since(watermark)
    assert [f.client_order_id for f in reports.fills] == [client_order_id]
    [finding] = reports.malformed
    assert finding.reference == "T-junk-1" and "could not parse" in finding.detail
