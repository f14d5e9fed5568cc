"""The simulated venue, run as the real process the lab starts, seen through its REST API."""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.processes import ProcessSpec, free_port, start, stop, wait_ready, wait_until
from lab.venue.book import OrderBook
from lab.venue.matching import match_once
from lab.venue.models import Counters, OrderTicket
from lab.venue.rejections import VenueRejection
from lab.venue.sessions import SessionEnd, SessionTable

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "VENUE_TEST_API_KEY"
COOLDOWN_S = 1.0


@dataclass(frozen=True)
class RunningVenue:
    base_url: str
    api_key: str
    log_path: Path

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {} if api_key == "" else {"X-Api-Key": api_key or self.api_key}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=10)


@contextmanager
def running_venue(log_dir: Path, name: str) -> Iterator[RunningVenue]:
    """Start a venue process with no automatic fills and a short cooldown; always stop it."""
    port = free_port()
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
            KEY_ENV,
            "--fill-probability",
            "0",
            "--reconnect-cooldown-s",
            str(COOLDOWN_S),
        ],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"PYTHONPATH": python_path},
        log_path=log_dir / f"venue-{name}.log",
        secret_env=[KEY_ENV],
    )
    pid = start(spec, secrets={KEY_ENV: api_key})
    try:
        wait_ready(spec, pid, timeout_s=30)
        yield RunningVenue(f"http://127.0.0.1:{port}", api_key, spec.log_path)
    finally:
        stop(pid)


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningVenue]:
    with running_venue(tmp_path_factory.mktemp("venue-logs"), "alpha") as running:
        yield running


@pytest.fixture
def client(venue: RunningVenue) -> Iterator[httpx.Client]:
    with venue.client() as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def connect(client: httpx.Client, member: str) -> str:
    response = client.post("/session/connect", json={"member": member})
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


def send_order(
    client: httpx.Client,
    session_id: str,
    seq: int,
    client_order_id: str | None = None,
    epoch: int = 1,
) -> httpx.Response:
    return client.post(
        "/orders",
        json={
            "session_id": session_id,
            "seq": seq,
            "client_order_id": client_order_id or unique(f"E{epoch}-"),
            "epoch": epoch,
            "symbol": "ESZ5",
            "side": "buy",
            "qty": 10,
            "price": "5012.25",
        },
    )


def inject_order(client: httpx.Client, qty: int = 10) -> dict[str, Any]:
    response = client.post(
        "/admin/orders",
        json={
            "client_order_id": unique("E1-"),
            "epoch": 1,
            "symbol": "NQZ5",
            "side": "sell",
            "qty": qty,
            "price": "18001.50",
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def inject_fills(client: httpx.Client, venue_order_id: str, count: int) -> list[int]:
    seqs = []
    for _ in range(count):
        response = client.post("/admin/fills", json={"venue_order_id": venue_order_id, "qty": 1})
        assert response.status_code == 200, response.text
        seqs.append(response.json()["seq"])
    return seqs


def counters(client: httpx.Client) -> dict[str, int]:
    return dict(client.get("/admin/counters").json())


def test_a_new_session_starts_its_sequence_at_1(client: httpx.Client) -> None:
    member = unique("member-")
    first = connect(client, member)
    assert send_order(client, first, seq=1).status_code == 200
    assert send_order(client, first, seq=2).status_code == 200
    assert client.post("/session/logout", json={"session_id": first}).status_code == 200

    response = client.post("/session/connect", json={"member": member})

    assert response.json()["next_seq"] == 1
    assert send_order(client, response.json()["session_id"], seq=1).status_code == 200


def test_reconnecting_while_a_session_is_open_is_refused_until_the_cooldown_ends(
    client: httpx.Client,
) -> None:
    member = unique("member-")
    connect(client, member)

    refused = client.post("/session/connect", json={"member": member})
    refused_at = time.monotonic()

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "reconnect cooldown"
    assert 0 < refused.json()["retry_after_s"] <= COOLDOWN_S
    accepted = wait_until(
        lambda: client.post("/session/connect", json={"member": member}).status_code == 200,
        timeout_s=10,
        poll_s=0.1,
    )
    assert accepted
    # The cooldown was actually enforced, not just announced.
    assert time.monotonic() - refused_at >= refused.json()["retry_after_s"] - 0.1


def test_after_a_clean_logout_the_member_reconnects_at_once(client: httpx.Client) -> None:
    member = unique("member-")
    session_id = connect(client, member)

    first = client.post("/session/logout", json={"session_id": session_id})
    again = client.post("/session/logout", json={"session_id": session_id})

    assert first.json() == {"session_id": session_id, "status": "logged_out"}
    assert again.status_code == 200
    assert client.post("/session/connect", json={"member": member}).status_code == 200


def test_resending_an_order_under_its_seq_returns_the_original_order(
    client: httpx.Client,
) -> None:
    session_id = connect(client, unique("member-"))
    client_order_id = unique("E1-")
    original = send_order(client, session_id, seq=1, client_order_id=client_order_id)

    resent = send_order(client, session_id, seq=1, client_order_id=client_order_id)

    assert original.status_code == resent.status_code == 200
    assert resent.json() == original.json()
    open_ids = [o["client_order_id"] for o in client.get("/orders/open").json()["orders"]]
    assert open_ids.count(client_order_id) == 1


def test_a_different_order_under_a_used_seq_is_refused(client: httpx.Client) -> None:
    session_id = connect(client, unique("member-"))
    assert send_order(client, session_id, seq=1).status_code == 200

    response = send_order(client, session_id, seq=1)

    assert response.status_code == 409
    assert response.json() == {"error": "sequence already used", "expected_seq": 2}


def test_an_order_that_skips_a_seq_is_refused_without_using_it_up(
    client: httpx.Client,
) -> None:
    session_id = connect(client, unique("member-"))

    gap = send_order(client, session_id, seq=2)

    assert gap.status_code == 409
    assert gap.json() == {"error": "sequence gap", "expected_seq": 1}
    assert send_order(client, session_id, seq=1).status_code == 200


def test_an_order_from_an_older_epoch_is_refused_and_counted(tmp_path: Path) -> None:
    # Its own venue: the highest epoch is venue-wide and would fence the other tests' orders.
    with running_venue(tmp_path, "beta") as venue, venue.client() as client:
        session_id = connect(client, "dr-oms")
        assert send_order(client, session_id, seq=1, epoch=2).status_code == 200

        stale = send_order(client, session_id, seq=2, epoch=1)
        newer = send_order(client, session_id, seq=3, epoch=3)

        assert stale.status_code == 409
        assert stale.json() == {"error": "stale epoch", "epoch": 1, "highest_epoch": 2}
        assert newer.status_code == 200
        assert newer.json()["epoch"] == 3
        seen = counters(client)
        assert seen["stale_epoch_rejections"] == 1
        assert seen["highest_epoch"] == 3


def test_cancelling_twice_cancels_once_and_counts_one_state_change(
    client: httpx.Client,
) -> None:
    order = inject_order(client)
    before = counters(client)

    first = client.post("/orders/cancel", json={"venue_order_ids": [order["venue_order_id"]]})
    second = client.post("/orders/cancel", json={"client_order_ids": [order["client_order_id"]]})

    assert first.json()["results"] == [{"id": order["venue_order_id"], "outcome": "cancelled"}]
    assert second.json()["results"] == [
        {"id": order["client_order_id"], "outcome": "already_cancelled"}
    ]
    after = counters(client)
    assert after["state_changing_cancels"] - before["state_changing_cancels"] == 1
    assert after["cancel_requests"] - before["cancel_requests"] == 2
    assert client.get(f"/orders/{order['venue_order_id']}").json()["status"] == "cancelled"


def test_paging_through_fills_returns_each_fill_exactly_once(client: httpx.Client) -> None:
    order = inject_order(client, qty=100)
    early = inject_fills(client, order["venue_order_id"], 5)
    query: dict[str, Any] = {"since_seq": early[0] - 1, "limit": 2}
    first_page = client.get("/fills", params=query).json()
    # Fills that arrive while a reader is paging must still be read, once.
    late = inject_fills(client, order["venue_order_id"], 3)

    seen = [fill["seq"] for fill in first_page["fills"]]
    cursor = first_page["next_cursor"]
    while cursor is not None:
        page = client.get("/fills", params={**query, "cursor": cursor}).json()
        seen += [fill["seq"] for fill in page["fills"]]
        cursor = page["next_cursor"]

    assert seen == early + late


def test_fills_filtered_by_seq_and_time_return_only_matching_fills(
    client: httpx.Client,
) -> None:
    order = inject_order(client, qty=100)
    seqs = inject_fills(client, order["venue_order_id"], 6)
    ours = client.get("/fills", params={"since_seq": seqs[0] - 1}).json()["fills"]
    since_time = ours[3]["ts"]

    response = client.get("/fills", params={"since_seq": seqs[1], "since_time": since_time})

    expected = [
        f["seq"]
        for f in ours
        if f["seq"] > seqs[1]
        and datetime.fromisoformat(f["ts"]) >= datetime.fromisoformat(since_time)
    ]
    assert [f["seq"] for f in response.json()["fills"]] == expected
    assert response.json()["next_cursor"] is None


def test_a_request_without_the_api_key_is_refused(venue: RunningVenue) -> None:
    with venue.client(api_key="") as anonymous, venue.client(api_key="wrong") as wrong:
        missing = anonymous.get("/orders/open")
        mistaken = wrong.get("/admin/counters")
        health = anonymous.get("/health")

    assert missing.status_code == 401
    assert "X-Api-Key" in missing.json()["error"]
    assert mistaken.status_code == 401
    assert health.json()["status"] == "ok"


def test_the_api_key_never_appears_in_the_venue_log(
    venue: RunningVenue, client: httpx.Client
) -> None:
    session_id = connect(client, unique("member-"))
    send_order(client, session_id, seq=1)
    client.post("/orders", json={"session_id": session_id})  # error paths log too
    with venue.client(api_key=venue.api_key[:-1]) as near_miss:
        near_miss.get("/orders/open")

    log = venue.log_path.read_text()

    assert KEY_ENV in log  # the start-up line names the variable, so the log is not empty
    assert venue.api_key not in log


def test_without_its_key_variable_the_venue_exits_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    argv = [sys.executable, "-m", "lab.venue", "--name", "gamma", "--port", str(free_port())]

    result = subprocess.run(
        [*argv, "--api-key-env", KEY_ENV],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert KEY_ENV in result.stderr


def test_a_silent_session_times_out_and_the_cooldown_runs_from_that_moment() -> None:
    table = SessionTable(reconnect_cooldown_s=3, session_timeout_s=10)
    session = table.connect("oms", now=100)

    # Timed out at 110, so the cooldown ends at 113 however late the timeout is noticed.
    with pytest.raises(VenueRejection) as refused:
        table.connect("oms", now=111)

    assert refused.value.status_code == 429
    assert refused.value.body_json()["retry_after_s"] == pytest.approx(2)
    assert refused.value.headers["Retry-After"] == "2"
    assert session.end is SessionEnd.TIMED_OUT
    assert table.connect("oms", now=113).expected_seq == 1


def test_with_no_cooldown_a_reconnect_replaces_the_open_session_at_once() -> None:
    table = SessionTable(reconnect_cooldown_s=0, session_timeout_s=10)
    first = table.connect("oms", now=100)

    second = table.connect("oms", now=101)

    assert first.end is SessionEnd.REPLACED
    assert second.session_id != first.session_id


def test_random_matching_fills_open_orders_at_their_limit_price_until_filled() -> None:
    book = OrderBook("delta", Counters())
    order = book.rest(
        OrderTicket(
            client_order_id="E1-a", epoch=1, symbol="ESZ5", side="buy", qty=7, price=Decimal("5")
        )
    )
    rng = random.Random(42)

    fills = [fill for _ in range(20) for fill in match_once(book, probability=1.0, rng=rng)]

    assert order.status == "filled"
    assert sum(fill.qty for fill in fills) == 7
    assert {fill.price for fill in fills} == {Decimal("5")}
    assert [fill.seq for fill in fills] == list(range(1, len(fills) + 1))
