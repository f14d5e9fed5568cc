"""The lab venue's FIX 4.4 face, through the real ``fix44`` adapter, against a venue process."""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.venues import open_venue
from adapters.venues.fix44 import Fix44Adapter
from adapters.venues.fix_session import FixSession, MsgType, utc_timestamp
from domain.topology import Fix44VenueConfig
from domain.venues import (
    AuthRejected,
    ClientOrderId,
    ReconnectCooldown,
    VenueConfigError,
    VenueUnavailable,
)
from lab.processes import ProcessSpec, free_port, start, stop, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "VENUE_FIX_TEST_API_KEY"
COOLDOWN_S = 1.0
VENUE = "gamma"


@dataclass(frozen=True)
class FixVenue:
    http: httpx.Client  # the REST face, for the admin API (one keep-alive connection)
    fix_port: int
    api_key: str

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def rest_order(self, client_order_id: str, qty: int = 10, **fields: Any) -> dict[str, Any]:
        ticket = {"symbol": "MSFT", "side": "buy", "qty": qty, "price": "101.25"} | fields
        body = {"client_order_id": client_order_id, "epoch": 1, "auto_fill": False, **ticket}
        return dict(self.admin("POST", "/admin/orders", json=body))

    def fill(self, client_order_id: str, qty: int) -> dict[str, Any]:
        body = {"client_order_id": client_order_id, "qty": qty}
        return dict(self.admin("POST", "/admin/fills", json=body))

    def faults(self, **plan: Any) -> dict[str, Any]:
        return dict(self.admin("POST", "/admin/faults", json=plan))

    def request_log(self) -> list[dict[str, Any]]:
        return list(self.admin("GET", "/admin/faults")["requests"])

    def config(self, member: str = "lab", **overrides: Any) -> Fix44VenueConfig:
        fields: dict[str, Any] = {
            "name": VENUE,
            "adapter": "fix44",
            "host": "127.0.0.1",
            "port": self.fix_port,
            "sender_comp_id": member,
            "target_comp_id": VENUE,
            "password_env": KEY_ENV,
            "heartbeat_s": 5,
            "timeout_s": 5.0,
            "reconnect_cooldown_s": COOLDOWN_S,
        }
        return Fix44VenueConfig.model_validate(fields | overrides)

    def adapter(self, member: str = "lab", **overrides: Any) -> Fix44Adapter:
        return Fix44Adapter(self.config(member, **overrides))


@pytest.fixture
def venue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FixVenue]:
    """A venue process with its FIX face, no random fills and a short cooldown."""
    port, fix_port = free_port(), free_port()
    api_key = secrets.token_urlsafe(24)
    monkeypatch.setenv(KEY_ENV, api_key)
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
            "--fix-port",
            str(fix_port),
            "--api-key-env",
            KEY_ENV,
            "--fill-probability",
            "0",
            "--reconnect-cooldown-s",
            str(COOLDOWN_S),
        ],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"PYTHONPATH": python_path},
        log_path=tmp_path / "venue.log",
        secret_env=[KEY_ENV],
    )
    pid = start(spec, secrets={KEY_ENV: api_key})
    try:
        wait_ready(spec, pid, timeout_s=30)
        headers = {"X-Api-Key": api_key}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10) as http:
            yield FixVenue(http, fix_port, api_key)
    finally:
        stop(pid)


async def _eventually_connected(adapter: Fix44Adapter, timeout_s: float) -> list[float]:
    """Log on, waiting out each cooldown the venue names; returns the delays it asked for."""
    asked: list[float] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await adapter.connect()
            return asked
        except ReconnectCooldown as exc:
            asked.append(exc.retry_after_s)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(exc.retry_after_s)  # poll: exactly what the venue asked for


async def test_logon_and_clean_logout_let_the_member_log_on_again_at_once(
    venue: FixVenue,
) -> None:
    adapter = open_venue(venue.config())
    assert isinstance(getattr(adapter, "unwrapped", None), Fix44Adapter)
    session = await adapter.connect()
    assert session.venue == VENUE and session.session_id
    await adapter.close()
    again = venue.adapter()
    try:
        await again.connect()  # a clean Logout leaves no cooldown behind
    finally:
        await again.close()
    counters = venue.admin("GET", "/admin/counters")
    assert counters["connect_attempts"] == 2
    assert counters["connects_refused_cooldown"] == 0
    logons = [r for r in venue.request_log() if r["path"] == "fix:A"]
    assert [r["agent"] for r in logons] == ["failover-runbooks"] * 2


async def test_wrong_password_is_refused_for_good_and_an_unset_one_is_a_config_error(
    venue: FixVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIX_WRONG_PASSWORD", "not-the-key")
    adapter = venue.adapter(password_env="FIX_WRONG_PASSWORD")
    with pytest.raises(AuthRejected, match=r"Password\(554\)"):
        await adapter.connect()
    await adapter.close()
    monkeypatch.delenv("FIX_WRONG_PASSWORD")
    with pytest.raises(VenueConfigError, match="FIX_WRONG_PASSWORD"):
        venue.adapter(password_env="FIX_WRONG_PASSWORD")


async def test_a_logon_during_the_cooldown_gets_reconnect_cooldown_then_logs_on(
    venue: FixVenue,
) -> None:
    # The member's REST session is still open: a second logon replaces it uncleanly, and the
    # venue's one-session-per-member rule makes this very logon wait out the cooldown.
    venue.admin("POST", "/session/connect", json={"member": "lab"})
    adapter = venue.adapter()
    try:
        asked = await _eventually_connected(adapter, timeout_s=10 * COOLDOWN_S)
        orders = await adapter.open_orders()
    finally:
        await adapter.close()
    assert asked, "the first logon should have met the cooldown"
    assert 0 < asked[0] <= COOLDOWN_S
    assert orders.orders == []
    assert venue.admin("GET", "/admin/counters")["connects_refused_cooldown"] >= 1


async def test_mass_status_reports_every_open_order_and_only_open_ones(venue: FixVenue) -> None:
    count = 300
    for i in range(count):
        venue.rest_order(f"E1-many-{i:04d}", qty=10 + i % 5, side="sell" if i % 2 else "buy")
    venue.fill("E1-many-0000", 4)  # partly filled: still open
    venue.fill("E1-many-0001", 11)  # filled: gone
    venue.admin("POST", "/orders/cancel", json={"client_order_ids": ["E1-many-0002"]})
    adapter = venue.adapter()
    try:
        reports = await adapter.open_orders()
    finally:
        await adapter.close()
    assert reports.malformed == []
    by_id = {o.client_order_id: o for o in reports.orders}
    assert len(reports.orders) == len(by_id) == count - 2
    assert "E1-many-0001" not in by_id and "E1-many-0002" not in by_id
    partly = by_id[ClientOrderId("E1-many-0000")]
    assert (partly.qty, partly.filled_qty, partly.side, str(partly.price)) == (
        10,
        4,
        "buy",
        "101.25",
    )
    assert by_id[ClientOrderId("E1-many-0003")].side == "sell"
    assert partly.epoch_from_prefix == 1


async def test_cancel_is_idempotent_and_mass_cancel_clears_the_account(venue: FixVenue) -> None:
    for name in ("a", "b", "c", "d", "done"):
        venue.rest_order(f"E2-{name}")
    venue.fill("E2-done", 10)
    ids = [ClientOrderId(i) for i in ("E2-a", "E2-b", "E2-done", "E2-nobody")]
    adapter = venue.adapter()
    try:
        first = await adapter.cancel(ids)
        second = await adapter.cancel(ids)
        affected = await adapter.mass_cancel()
        left = await adapter.open_orders()
        empty = await adapter.mass_cancel()
    finally:
        await adapter.close()
    assert first == {
        "E2-a": "cancelled",
        "E2-b": "cancelled",
        "E2-done": "already_filled",
        "E2-nobody": "unknown",
    }
    assert second == first | {"E2-a": "already_cancelled", "E2-b": "already_cancelled"}
    assert (affected, left.orders, empty) == (2, [], 0)
    audit = venue.admin("GET", "/admin/cancels", params={"client_order_id": ["E2-a"]})
    assert audit["orders"]["E2-a"] == {"requests": 2, "state_changing": 1}


async def test_fills_since_a_watermark_come_from_a_trade_capture_request(venue: FixVenue) -> None:
    venue.rest_order("E3-old", qty=5)
    venue.rest_order("E3-new", qty=8, side="sell")
    old = venue.fill("E3-old", 5)
    watermark = datetime.fromisoformat(old["ts"])
    later = [venue.fill("E3-new", 3), venue.fill("E3-new", 5)]
    adapter = venue.adapter()
    try:
        fills = await adapter.fills_since(watermark)
        none = await adapter.fills_since(datetime.now(UTC))
    finally:
        await adapter.close()
    assert fills.malformed == [] and none.fills == [] and none.malformed == []
    assert [f.trade_id for f in fills.fills] == [old["trade_id"], *(f["trade_id"] for f in later)]
    newest = fills.fills[-1]
    assert (newest.client_order_id, newest.side, newest.qty, str(newest.price)) == (
        "E3-new",
        "sell",
        5,
        "101.25",
    )
    assert newest.ts == datetime.fromisoformat(later[-1]["ts"])
    assert [f.venue_seq for f in fills.fills] == [1, 2, 3]


async def test_a_connection_dropped_mid_mass_status_is_retryable_and_the_retry_succeeds(
    venue: FixVenue,
) -> None:
    for i in range(20):
        venue.rest_order(f"E4-drop-{i:02d}")
    venue.faults(fix_drops=1)
    adapter = venue.adapter()
    try:
        with pytest.raises(VenueUnavailable, match="connection closed"):
            await adapter.open_orders()
        # The same adapter opens a fresh session: the venue's own drop costs no cooldown.
        reports = await adapter.open_orders()
    finally:
        await adapter.close()
    assert len(reports.orders) == 20
    answers = [r["answer"] for r in venue.request_log() if r["path"] == "fix:AF"]
    assert answers == ["drop", "ok"]


async def test_a_sequence_gap_drops_the_session_and_a_fresh_one_works(venue: FixVenue) -> None:
    venue.rest_order("E5-gap")
    venue.faults(fix_seq_gaps=1)
    adapter = venue.adapter()
    try:
        with pytest.raises(VenueUnavailable, match=r"expected 2 received 3"):
            await adapter.open_orders()
    finally:
        await adapter.close()
    fresh = venue.adapter()
    try:
        reports = await fresh.open_orders()  # our Logout was clean: no cooldown
    finally:
        await fresh.close()
    assert [o.client_order_id for o in reports.orders] == ["E5-gap"]


async def test_reports_missing_a_required_tag_become_findings_naming_the_tag(
    venue: FixVenue,
) -> None:
    venue.rest_order("E6-good")
    venue.rest_order("E6-filled", qty=4)
    venue.fill("E6-filled", 4)
    venue.faults(
        junk_orders=[{"client_order_id": "E6-junk", "symbol": "MSFT", "qty": 5, "price": "10"}],
        junk_fills=[{"trade_id": "gamma-Tjunk", "symbol": "MSFT", "side": "buy", "price": "10"}],
    )
    adapter = venue.adapter()
    try:
        orders = await adapter.open_orders()
        fills = await adapter.fills_since(datetime(2000, 1, 1, tzinfo=UTC))
    finally:
        await adapter.close()
    assert [o.client_order_id for o in orders.orders] == ["E6-good"]
    [bad_order] = orders.malformed
    assert (bad_order.kind, bad_order.reference, bad_order.detail) == (
        "order",
        "E6-junk",
        "tag 54 (Side) missing",
    )
    assert [f.client_order_id for f in fills.fills] == ["E6-filled"]
    [bad_fill] = fills.malformed
    assert (bad_fill.kind, bad_fill.reference) == ("fill", "gamma-Tjunk")
    assert bad_fill.detail in ("tag 32 (LastQty) missing", "tag 11 (ClOrdID) missing")


async def _raw_session(venue: FixVenue, member: str) -> FixSession:
    session = FixSession(
        venue=VENUE,
        host="127.0.0.1",
        port=venue.fix_port,
        sender_comp_id=member,
        target_comp_id=VENUE,
        password=venue.api_key,
        heartbeat_s=5,
        timeout_s=5.0,
        sender_sub_id="test-oms",
    )
    await session.logon()
    return session


async def test_new_order_single_rests_an_order_and_a_duplicate_is_rejected(
    venue: FixVenue,
) -> None:
    session = await _raw_session(venue, "desk")
    try:
        answers = []
        for _ in range(2):
            session.send(
                MsgType.NEW_ORDER_SINGLE,
                [
                    (11, "E7-fix-1"),
                    (55, "AAPL"),
                    (54, "2"),
                    (38, 3),
                    (40, 2),
                    (44, "187.5"),
                    (60, utc_timestamp()),
                ],
            )
            answers.append(await session.receive())
    finally:
        await session.logout()
    accepted, duplicate = answers
    assert (accepted.get(150), accepted.get(39), accepted.get(11)) == ("0", "0", "E7-fix-1")
    assert (duplicate.get(150), duplicate.get(39)) == ("8", "8")
    assert "duplicate" in (duplicate.get(58) or "")
    order = venue.admin("GET", f"/orders/{accepted.get(37)}")
    assert (order["symbol"], order["side"], order["qty"], order["epoch"]) == ("AAPL", "sell", 3, 7)


async def test_the_acceptor_logs_out_a_member_that_skips_a_sequence_number(
    venue: FixVenue,
) -> None:
    session = await _raw_session(venue, "skipper")
    try:
        session._out_seq += 1  # the member's own bug: MsgSeqNum 3 where 2 is due
        session.send(MsgType.ORDER_MASS_STATUS_REQUEST, [(584, "r1"), (585, 7)])
        with pytest.raises(VenueUnavailable, match=r"expected 2 received 3"):
            await session.receive()
    finally:
        await session.logout()


async def test_measured_round_trip_of_a_mass_status(venue: FixVenue) -> None:
    venue.rest_order("E8-rtt")
    adapter = venue.adapter()
    try:
        await adapter.connect()
        samples = []
        for _ in range(50):
            started = time.perf_counter()
            reports = await adapter.open_orders()
            samples.append((time.perf_counter() - started) * 1000)
            assert len(reports.orders) == 1
    finally:
        await adapter.close()
    print(
        f"\nFIX mass status round trip (1 order, loopback, TCP_NODELAY): "
        f"median {statistics.median(samples):.2f} ms, max {max(samples):.2f} ms"
    )
