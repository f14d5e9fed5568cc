"""Reconciliation after a promotion: each scenario is what the on-call person sees in the report.

DR takes over as epoch 3; the previous holder traded as epoch 2.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import pytest
from pydantic import TypeAdapter
from pydantic.fields import FieldInfo

from domain.book import Fill, Order, Side
from domain.reconciliation import (
    DiscrepancyKind,
    OrderFinding,
    VenueReconciliation,
    check_fills,
    classify_orders,
    compare_positions,
    fills_from_reports,
    last_prices,
    orders_to_cancel,
    positions_before,
    recompute_positions,
)
from domain.venues import FillReport, FillReports, MalformedReport, OrderReport, OrderReports

NEW_EPOCH = 3
TAKEOVER = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BEFORE = TAKEOVER - timedelta(seconds=5)
AFTER = TAKEOVER + timedelta(seconds=5)


def order(client_order_id: str = "E2-1", **changes: Any) -> Order:
    fields: dict[str, Any] = {
        "client_order_id": client_order_id,
        "venue": "alpha",
        "epoch": 2,
        "symbol": "ESM5",
        "side": Side.BUY,
        "qty": 10,
        "price": Decimal("100"),
        "created_at": BEFORE,
        "updated_at": BEFORE,
    }
    return Order(**(fields | changes))


def fill(trade_id: str = "T1", **changes: Any) -> Fill:
    fields: dict[str, Any] = {
        "trade_id": trade_id,
        "venue": "alpha",
        "venue_seq": 1,
        "client_order_id": "E2-1",
        "epoch": 2,
        "symbol": "ESM5",
        "side": Side.BUY,
        "qty": 2,
        "price": Decimal("100"),
        "ts": BEFORE,
    }
    return Fill(**(fields | changes))


def report(order: Order, **changes: Any) -> OrderReport:
    """What a venue reports for ``order``; ``epoch=None`` for a venue without an epoch field."""
    return OrderReport.model_validate(order.model_dump() | changes)


def fill_report(fill: Fill, **changes: Any) -> FillReport:
    return FillReport.model_validate(fill.model_dump() | changes)


def classify(
    venue_open: list[Order | OrderReport],
    dr_open: list[Order],
    malformed: list[MalformedReport] | None = None,
) -> list[OrderFinding]:
    reports = [o if isinstance(o, OrderReport) else report(o) for o in venue_open]
    return classify_orders(
        "alpha",
        OrderReports(orders=reports, malformed=malformed or []),
        dr_open,
        NEW_EPOCH,
        TAKEOVER,
    )


T = TypeVar("T")


def only(findings: list[T]) -> T:
    assert len(findings) == 1, findings
    return findings[0]


# --- orders ---------------------------------------------------------------------------------


def test_an_order_both_sides_agree_on_is_matched_at_its_open_notional() -> None:
    finding = only(classify([order(filled_qty=4)], [order(filled_qty=4)]))
    assert finding.kind is DiscrepancyKind.MATCHED
    assert finding.notional == Decimal("600")  # 6 still open at 100
    assert finding.venue_order is not None and finding.dr_order is not None


def test_a_fill_dr_missed_is_drift_naming_both_values() -> None:
    finding = only(classify([order(filled_qty=5)], [order(filled_qty=3)]))
    assert finding.kind is DiscrepancyKind.DRIFT
    assert finding.detail == "filled_qty venue 5 vs DR 3"
    assert finding.notional == Decimal("200")


def test_drift_detail_names_every_differing_field() -> None:
    venue_order = order(qty=12, price=Decimal("101.5"), filled_qty=1)
    finding = only(classify([venue_order], [order()]))
    assert (
        finding.detail
        == "qty venue 12 vs DR 10; price venue 101.5 vs DR 100; filled_qty venue 1 vs DR 0"
    )


def test_a_flipped_side_counts_both_exposures_in_the_drift_notional() -> None:
    finding = only(classify([order(side=Side.SELL)], [order()]))
    assert finding.detail == "side venue sell vs DR buy"
    assert finding.notional == Decimal("2000")


def test_an_order_open_only_in_the_dr_book_is_missing_at_venue() -> None:
    finding = only(classify([], [order()]))
    assert finding.kind is DiscrepancyKind.MISSING_AT_VENUE
    assert finding.venue_order is None
    assert finding.notional == Decimal("1000")
    assert "not open at the venue" in finding.detail


def test_an_order_missing_at_the_venue_is_cancelled_only_to_confirm_it_dead() -> None:
    missing = only(classify([], [order("E2-gone")]))
    working = only(classify([order("E2-live")], [order("E2-live")]))
    assert working.kind is DiscrepancyKind.MATCHED
    findings = [missing, working]
    # Runs recorded before the rule left it to a person; now a cancel confirms it dead, and
    # the order both sides list as working is never touched.
    assert orders_to_cancel(findings) == []
    assert orders_to_cancel(findings, confirm_missing_at_venue=True) == ["E2-gone"]


def test_a_previous_tenure_order_dr_never_saw_is_a_ghost_to_cancel() -> None:
    finding = only(classify([order("E2-7")], []))
    assert finding.kind is DiscrepancyKind.GHOST
    assert finding.epoch == 2
    assert not finding.inferred
    assert finding.notional == Decimal("1000")
    report = VenueReconciliation(
        venue="alpha", new_epoch=NEW_EPOCH, findings=[finding], fill_findings=[]
    )
    assert report.to_cancel == ["E2-7"]


def test_an_order_from_two_tenures_ago_is_old_epoch_to_cancel() -> None:
    finding = only(classify([order("E1-7", epoch=1)], []))
    assert finding.kind is DiscrepancyKind.OLD_EPOCH
    assert "epoch 1 predates the previous tenure" in finding.detail


def test_a_previous_tenure_order_created_after_takeover_came_from_a_fenced_sender() -> None:
    finding = only(classify([order(created_at=AFTER)], []))
    assert finding.kind is DiscrepancyKind.OLD_EPOCH
    assert "after takeover" in finding.detail
    assert "fenced sender" in finding.detail


@pytest.mark.parametrize("created_at", [TAKEOVER, None], ids=["at-takeover", "unknown"])
def test_a_previous_tenure_order_not_created_after_takeover_is_a_ghost(
    created_at: datetime | None,
) -> None:
    assert only(classify([order(created_at=created_at)], [])).kind is DiscrepancyKind.GHOST


def test_a_creation_time_without_timezone_is_judged_by_epoch_alone() -> None:
    finding = only(classify([order(created_at=AFTER.replace(tzinfo=None))], []))
    assert finding.kind is DiscrepancyKind.GHOST
    assert "judged by epoch alone" in finding.detail


def test_an_unknown_order_of_the_current_epoch_is_drift_and_never_cancelled() -> None:
    finding = only(classify([order("E3-1", epoch=3)], []))
    assert finding.kind is DiscrepancyKind.DRIFT
    assert finding.detail == "order of the current epoch not in the DR book"
    report = VenueReconciliation(
        venue="alpha", new_epoch=NEW_EPOCH, findings=[finding], fill_findings=[]
    )
    assert report.to_cancel == []


@pytest.mark.parametrize(
    ("client_order_id", "epoch_field"),
    [("E2-1", 3), ("E3-1", 2)],
    ids=["prefix-lower", "field-lower"],
)
def test_an_epoch_field_contradicting_the_prefix_is_judged_by_the_lower_and_flagged_inferred(
    client_order_id: str, epoch_field: int
) -> None:
    finding = only(classify([order(client_order_id, epoch=epoch_field)], []))
    assert finding.kind is DiscrepancyKind.GHOST  # not DRIFT: epoch 3 is not believed
    assert finding.epoch == 2
    assert finding.inferred
    assert "judged as 2" in finding.detail


def test_an_order_without_an_epoch_prefix_is_judged_by_its_epoch_field() -> None:
    finding = only(classify([order("manual-1", epoch=2)], []))
    assert finding.kind is DiscrepancyKind.GHOST
    assert not finding.inferred
    assert "client_order_id carries no epoch prefix" in finding.detail


def test_an_order_the_venue_reports_twice_becomes_a_drift_finding() -> None:
    first, repeat = order(filled_qty=1), order(filled_qty=3)
    findings = classify([first, repeat], [first])
    assert [f.kind for f in findings] == [DiscrepancyKind.MATCHED, DiscrepancyKind.DRIFT]
    duplicate = findings[1]
    assert duplicate.detail.startswith("duplicate client_order_id reported by venue")
    assert "filled_qty first 1 vs repeat 3" in duplicate.detail
    assert duplicate.venue_order == repeat
    assert duplicate.notional == Decimal("200")


def test_an_identical_repeat_in_the_dr_book_is_a_drift_finding_without_notional() -> None:
    findings = classify([], [order(), order()])
    duplicate = findings[1]
    assert duplicate.kind is DiscrepancyKind.DRIFT
    assert duplicate.detail == "duplicate client_order_id in the DR book; same as the first report"
    assert duplicate.notional == 0


def test_findings_are_sorted_by_client_order_id() -> None:
    findings = classify([order("E2-c"), order("E2-a")], [order("E2-b"), order("E2-a")])
    assert [f.client_order_id for f in findings] == ["E2-a", "E2-b", "E2-c"]


def test_the_venue_summary_counts_every_kind_and_sums_only_discrepancies() -> None:
    findings = classify(
        [order("E2-ok"), order("E2-ghost"), order("E1-old", epoch=1)],
        [order("E2-ok"), order("E2-gone", qty=1)],
    )
    report = VenueReconciliation(
        venue="alpha", new_epoch=NEW_EPOCH, findings=findings, fill_findings=[]
    )
    assert report.counts == {
        "matched": 1,
        "drift": 0,
        "missing_at_venue": 1,
        "ghost": 1,
        "old_epoch": 1,
        "unknown_origin": 0,
    }
    assert report.to_cancel == ["E1-old", "E2-ghost"]
    assert report.discrepancy_notional == Decimal("2100")


def test_findings_from_malformed_reports_and_classification_read_in_id_order() -> None:
    bad = MalformedReport(venue="alpha", kind="order", reference="E2-0", detail="qty: bad")
    findings = classify([order("E2-1")], [], malformed=[bad])
    report_ = VenueReconciliation(
        venue="alpha", new_epoch=NEW_EPOCH, findings=findings, fill_findings=[]
    )
    assert [f.client_order_id for f in report_.findings] == ["E2-0", "E2-1"]


# --- where a venue order's epoch comes from -------------------------------------------------


def test_a_venue_without_an_epoch_field_is_judged_by_the_prefix_and_flagged_inferred() -> None:
    finding = only(classify([report(order("E2-7"), epoch=None)], []))
    assert finding.kind is DiscrepancyKind.GHOST
    assert (finding.epoch, finding.inferred) == (2, True)
    assert "epoch read from the client_order_id prefix" in finding.detail


def test_an_old_prefix_without_an_epoch_field_is_old_epoch_to_cancel() -> None:
    finding = only(classify([report(order("E1-7"), epoch=None)], []))
    assert finding.kind is DiscrepancyKind.OLD_EPOCH
    assert orders_to_cancel([finding]) == ["E1-7"]


def test_an_order_with_neither_epoch_nor_prefix_is_of_unknown_origin_and_never_cancelled() -> None:
    foreign = report(order("manual-42", qty=4), epoch=None, venue_order_id="V9")
    finding = only(classify([foreign], []))
    assert finding.kind is DiscrepancyKind.UNKNOWN_ORIGIN
    assert (finding.epoch, finding.inferred) == (None, True)
    assert finding.notional == Decimal("400")
    assert "placed by someone else on the account" in finding.detail
    assert "venue order V9" in finding.detail
    report_ = VenueReconciliation(
        venue="alpha", new_epoch=NEW_EPOCH, findings=[finding], fill_findings=[]
    )
    assert report_.to_cancel == []
    assert report_.discrepancy_notional == Decimal("400")


def test_an_order_without_epoch_or_prefix_that_dr_knows_is_compared_not_foreign() -> None:
    ours = order("manual-1")
    finding = only(classify([report(ours, epoch=None)], [ours]))
    assert finding.kind is DiscrepancyKind.MATCHED
    assert finding.inferred and "epoch taken from the DR book" in finding.detail


# --- malformed venue reports ----------------------------------------------------------------


def test_a_malformed_order_report_becomes_a_drift_finding_naming_the_field() -> None:
    bad = MalformedReport(
        venue="alpha",
        kind="order",
        reference="E2-2",
        symbol="ESM5",
        detail="qty: Input should be greater than 0",
    )
    finding = only(classify([], [], malformed=[bad]))
    assert finding.kind is DiscrepancyKind.DRIFT
    assert finding.client_order_id == "E2-2"
    assert finding.detail == "malformed order report: qty: Input should be greater than 0"
    assert finding.notional == 0
    assert finding.epoch == 2 and finding.inferred


def test_an_order_report_without_an_id_is_reported_as_unknown() -> None:
    bad = MalformedReport(venue="alpha", kind="order", detail="client_order_id: Field required")
    finding = only(classify([], [], malformed=[bad]))
    assert finding.client_order_id == "<unknown>"
    assert finding.epoch is None and finding.inferred


# --- fills ----------------------------------------------------------------------------------


def test_fill_reports_become_fills_with_the_epoch_from_the_field_or_the_prefix() -> None:
    reports = FillReports(
        fills=[fill_report(fill("T1")), fill_report(fill("T2", epoch=1), epoch=None)]
    )
    fills, findings = fills_from_reports("alpha", reports)
    assert findings == []
    assert [(f.trade_id, f.epoch) for f in fills] == [("T1", 2), ("T2", 2)]


def test_a_fill_from_a_report_is_the_fill_a_full_validation_would_make() -> None:
    # fills_from_reports builds Fills without validating twice; it must not show.
    reported = fill_report(fill("T1", venue_order_id="V-1"), epoch=None)
    (built,), _ = fills_from_reports("alpha", FillReports(fills=[reported]))
    validated = Fill.model_validate(reported.model_dump() | {"epoch": 2})
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_copy(update={"qty": 3}).qty == 3


@pytest.mark.parametrize(("book_model", "report_model"), [(Order, OrderReport), (Fill, FillReport)])
def test_a_book_model_has_the_fields_and_constraints_of_its_report(
    book_model: type[Order | Fill], report_model: type[OrderReport | FillReport]
) -> None:
    # What lets reconciliation skip the second validation (_in_book_vocabulary): a field added
    # or constrained on one side only must be added to both, or validated on the way.
    book, reported = book_model.model_fields, report_model.model_fields
    assert set(book) == set(reported)
    for name in book.keys() - {"epoch"}:
        assert _accepts(book[name]) == _accepts(reported[name]), name
    # The epoch is the one value reconciliation supplies itself, always at least 1.
    assert book["epoch"].annotation is int
    assert [getattr(m, "ge", None) for m in book["epoch"].metadata] == [1]


def _accepts(field: FieldInfo) -> dict[str, Any]:
    """What a field accepts, as JSON schema (a NewType of str accepts what str does)."""
    accepted: Any = (
        Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    )
    schema: dict[str, Any] = TypeAdapter(accepted).json_schema()
    return schema


def test_an_e0_prefix_names_no_epoch_so_its_fill_is_of_unknown_origin() -> None:
    foreign = fill_report(fill("T9", client_order_id="E0-1"), epoch=None)
    fills, findings = fills_from_reports("alpha", FillReports(fills=[foreign]))
    assert fills == []
    assert "unknown origin" in only(findings).detail


def test_a_malformed_fill_report_is_an_invalid_finding_naming_the_field() -> None:
    bad = MalformedReport(venue="alpha", kind="fill", reference="T1", detail="qty: bad")
    fills, findings = fills_from_reports(
        "alpha", FillReports(fills=[fill_report(fill("T2"))], malformed=[bad])
    )
    assert [f.trade_id for f in fills] == ["T2"]
    finding = only(findings)
    assert (finding.kind, finding.trade_id, finding.fill) == ("invalid", "T1", None)
    assert finding.detail == "invalid fill report: qty: bad"


def test_a_fill_of_an_order_of_unknown_origin_is_invalid_not_booked() -> None:
    foreign = fill_report(fill("T9", client_order_id="manual-1"), epoch=None)
    fills, findings = fills_from_reports("alpha", FillReports(fills=[foreign]))
    assert fills == []
    finding = only(findings)
    assert finding.kind == "invalid"
    assert "unknown origin" in finding.detail


def test_a_fill_the_venue_resends_unchanged_counts_once_and_is_listed_as_duplicate() -> None:
    fills, findings = check_fills("alpha", [fill(), fill()], booked_trade_ids={"T1"})
    assert fills == [fill()]
    finding = only(findings)
    assert finding.kind == "duplicate"
    assert finding.detail == "trade_id reported again with identical content"


def test_a_fill_resent_with_different_content_keeps_the_first_and_says_what_differs() -> None:
    fills, findings = check_fills("alpha", [fill(), fill(qty=5)], booked_trade_ids={"T1"})
    assert fills == [fill()]
    finding = only(findings)
    assert finding.kind == "duplicate"
    assert (
        finding.detail == "trade_id reported again with different content: qty first 2 vs repeat 5"
    )
    assert finding.fill == fill(qty=5)


def test_a_fill_dr_never_booked_is_listed_and_still_returned_for_booking() -> None:
    fills, findings = check_fills("alpha", [fill("T1"), fill("T2")], booked_trade_ids={"T1"})
    assert [f.trade_id for f in fills] == ["T1", "T2"]
    finding = only(findings)
    assert (finding.kind, finding.trade_id) == ("unbooked", "T2")
    assert "DR books it on activation" in finding.detail


# --- positions ------------------------------------------------------------------------------


def test_positions_are_the_base_plus_signed_fills_with_flat_symbols_dropped() -> None:
    fills = [
        fill("T1", qty=3),
        fill("T2", side=Side.SELL, qty=5, symbol="NQM5"),
        fill("T3", side=Side.SELL, qty=4, symbol="CLN5"),
    ]
    assert recompute_positions({"ESM5": 2, "CLN5": 4}, fills) == {"ESM5": 5, "NQM5": -5}


def test_positions_before_booked_fills_take_each_signed_quantity_back() -> None:
    booked = [fill("T1", qty=3), fill("T2", side=Side.SELL, qty=5, symbol="NQM5")]
    assert positions_before({"ESM5": 3, "NQM5": -5, "CLN5": 1}, booked) == {"CLN5": 1}
    assert positions_before({"ESM5": 1}, booked) == {"ESM5": -2, "NQM5": 5}


def test_a_position_the_fills_disagree_with_is_a_discrepancy_priced_at_the_last_trade() -> None:
    discrepancies = compare_positions(
        book={"ESM5": 5, "NQM5": -1},
        recomputed={"ESM5": 3, "NQM5": -1, "CLN5": 2},
        prices={"ESM5": Decimal("100.25")},
    )
    assert [(d.symbol, d.book_qty, d.recomputed_qty, d.difference) for d in discrepancies] == [
        ("CLN5", 0, 2, 2),
        ("ESM5", 5, 3, -2),
    ]
    unpriced, priced = discrepancies
    assert (priced.notional, priced.inferred_price) == (Decimal("200.50"), False)
    assert (unpriced.notional, unpriced.inferred_price) == (Decimal(0), True)


def test_the_last_price_is_the_latest_trade_by_time_then_venue_sequence() -> None:
    fills = [
        fill("T1", ts=AFTER, venue_seq=1, price=Decimal("101")),
        fill("T2", ts=AFTER, venue_seq=2, price=Decimal("102")),
        fill("T3", ts=BEFORE, venue_seq=9, price=Decimal("99")),
        fill("T4", symbol="NQM5", price=Decimal("20000")),
    ]
    assert last_prices(fills) == {"ESM5": Decimal("102"), "NQM5": Decimal("20000")}
