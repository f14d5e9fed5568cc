"""The lab market-data source, run as a real process and observed over HTTP as a probe would."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from lab.processes import ProcessSpec, free_port, start, stop, wait_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run from a checkout, not an install: the child process finds `lab` through the repo root.
CHILD_PYTHONPATH = os.pathsep.join(filter(None, [str(REPO_ROOT), os.getenv("PYTHONPATH")]))
SYMBOLS = ("AAPL", "MSFT", "ESZ6")
# Fast ticks keep the tests short; three symbols round-robin, so each moves every 60 ms.
TICK_INTERVAL_MS = 20
DEADLINE_S = 5.0

T = TypeVar("T")
Json = dict[str, Any]


@pytest.fixture(scope="module")
def feed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    options = (
        f"--name md-test --port {port} --symbols {','.join(SYMBOLS)} "
        f"--tick-interval-ms {TICK_INTERVAL_MS} --seed 7"
    )
    spec = ProcessSpec(
        name="md-test",
        argv=[sys.executable, "-m", "lab.marketdata", *options.split()],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        env={"PYTHONPATH": CHILD_PYTHONPATH},
        log_path=tmp_path_factory.mktemp("marketdata") / "md-test.log",
    )
    pid = start(spec)
    try:
        wait_ready(spec, pid, timeout_s=20)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(pid)


@pytest.fixture
def client(feed_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=feed_url, timeout=2.0) as http:
        yield http
        # Leave the shared process healthy for the next scenario whatever this one did.
        set_mode(http, "normal")


def set_mode(client: httpx.Client, mode: str) -> None:
    response = client.post("/admin/mode", json={"mode": mode})
    response.raise_for_status()
    assert response.json() == {"mode": mode}


def get_json(client: httpx.Client, path: str, **params: Any) -> Json:
    response = client.get(path, params=params)
    response.raise_for_status()
    body: Json = response.json()
    return body


def recent_seqs(client: httpx.Client, limit: int = 20) -> list[int]:
    return [tick["seq"] for tick in get_json(client, "/ticks", limit=limit)["ticks"]]


def poll_until(read: Callable[[], T], accept: Callable[[T], bool], what: str) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = read()
        if accept(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} within {DEADLINE_S:g} s; last seen: {value!r}")
        time.sleep(0.01)  # poll


def has_repeat(seqs: list[int]) -> bool:
    return any(b == a for a, b in pairwise(seqs))


def has_decrease(seqs: list[int]) -> bool:
    return any(b < a for a, b in pairwise(seqs))


def strictly_increasing(seqs: list[int]) -> bool:
    return len(seqs) > 1 and all(b > a for a, b in pairwise(seqs))


def test_ticks_advance_with_increasing_seq_and_fresh_timestamps(client: httpx.Client) -> None:
    first = get_json(client, "/tick", symbol="AAPL")
    later = poll_until(
        lambda: get_json(client, "/tick", symbol="AAPL"),
        lambda tick: tick["seq"] > first["seq"],
        "a newer AAPL tick",
    )
    first_ts = datetime.fromisoformat(first["exchange_ts"])
    later_ts = datetime.fromisoformat(later["exchange_ts"])
    assert later_ts.utcoffset() == timedelta(0)
    assert later_ts > first_ts
    assert datetime.now(UTC) - later_ts < timedelta(seconds=10)  # stamped now, not replayed
    assert isinstance(later["price"], str)
    assert Decimal(later["price"]) > 0
    assert later["source"] == "md-test"

    page = get_json(client, "/ticks", since_seq=first["seq"], limit=50)["ticks"]
    assert page[0]["seq"] == first["seq"] + 1
    assert strictly_increasing([tick["seq"] for tick in page])


def test_stale_mode_freezes_exchange_ts_while_endpoint_still_answers(
    client: httpx.Client,
) -> None:
    set_mode(client, "stale")
    frozen = get_json(client, "/tick", symbol="MSFT")
    served_later = poll_until(
        lambda: get_json(client, "/tick", symbol="MSFT"),
        lambda tick: tick["seq"] > frozen["seq"] + 2 * len(SYMBOLS),
        "MSFT ticks still being served in stale mode",
    )
    assert served_later["exchange_ts"] == frozen["exchange_ts"]
    assert served_later["price"] == frozen["price"]
    health = get_json(client, "/health")
    assert (health["status"], health["mode"]) == ("ok", "stale")


def test_dup_seq_mode_repeats_a_sequence_number(client: httpx.Client) -> None:
    set_mode(client, "dup-seq")
    seqs = poll_until(lambda: recent_seqs(client), has_repeat, "a repeated seq")
    assert has_repeat(seqs)


def test_reversed_seq_mode_makes_seq_go_backwards(client: httpx.Client) -> None:
    set_mode(client, "reversed-seq")
    seqs = poll_until(lambda: recent_seqs(client), has_decrease, "a decreasing seq")
    assert has_decrease(seqs)


def test_normal_mode_restores_increasing_seq_past_the_highest_seen(
    client: httpx.Client,
) -> None:
    set_mode(client, "reversed-seq")
    poll_until(lambda: recent_seqs(client), has_decrease, "a decreasing seq")
    set_mode(client, "normal")
    assert get_json(client, "/admin/mode") == {"mode": "normal"}
    highest_before = max(recent_seqs(client, limit=1000))

    seqs = poll_until(
        lambda: [s for s in recent_seqs(client, limit=1000) if s > highest_before],
        lambda fresh: len(fresh) >= 5,
        "new ticks above the highest seq seen",
    )
    assert strictly_increasing(seqs)


def test_unknown_symbol_is_404_naming_the_known_symbols(client: httpx.Client) -> None:
    response = client.get("/tick", params={"symbol": "NOPE"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert "NOPE" in error
    for symbol in SYMBOLS:
        assert symbol in error
