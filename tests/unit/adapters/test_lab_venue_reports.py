"""The lab dialect's reports: a payload is validated whole, and a bad report in it still
becomes a finding naming its field, with every good report kept in the venue's order."""

from __future__ import annotations

from typing import Any

from adapters.venues.lab import fill_reports, order_reports


def order_json(client_order_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "client_order_id": client_order_id, "epoch": 2, "symbol": "ESM5", "side": "buy",
        "qty": 10, "price": "99.50", "filled_qty": 0, "status": "open",
    } | changes  # fmt: skip


def fill_json(trade_id: str, seq: int, **changes: Any) -> dict[str, Any]:
    return {
        "trade_id": trade_id, "seq": seq, "client_order_id": "E2-1", "epoch": 2,
        "symbol": "ESM5", "side": "sell", "qty": 2, "price": "99.50",
        "ts": "2026-11-02T10:00:00+00:00",
    } | changes  # fmt: skip


def test_a_clean_payload_becomes_reports_in_the_venues_order() -> None:
    reports = order_reports("alpha", [order_json("E2-2"), order_json("E2-1")])
    assert [o.client_order_id for o in reports.orders] == ["E2-2", "E2-1"]
    assert {o.venue for o in reports.orders} == {"alpha"} and reports.malformed == []


def test_one_bad_order_among_good_ones_is_malformed_naming_the_field() -> None:
    raw = [order_json("E2-1"), order_json("E2-2", qty=0), "not an order", order_json("E2-3")]
    reports = order_reports("alpha", raw)
    assert [o.client_order_id for o in reports.orders] == ["E2-1", "E2-3"]
    bad_qty, not_an_object = reports.malformed
    assert (bad_qty.reference, bad_qty.detail) == ("E2-2", "qty: Input should be greater than 0")
    assert not_an_object.reference == "<unknown>"


def test_one_bad_fill_among_good_ones_is_malformed_naming_the_field() -> None:
    raw = [fill_json("T1", 1), fill_json("T2", 2, price="abc"), fill_json("T3", 3)]
    reports = fill_reports("alpha", raw)
    assert [(f.trade_id, f.venue_seq) for f in reports.fills] == [("T1", 1), ("T3", 3)]
    (bad,) = reports.malformed
    assert bad.reference == "T2" and bad.detail.startswith("price: ")
