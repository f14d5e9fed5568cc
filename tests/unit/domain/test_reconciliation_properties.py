"""Reconciliation invariants over generated books.

Alphabets are small on purpose: ids, symbols and trade ids collide often, so duplicates,
contradicting reports and epoch/prefix disagreements show up in most runs.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.book import Fill, Order, Side
from domain.reconciliation import (
    DiscrepancyKind,
    VenueReconciliation,
    check_fills,
    classify_orders,
    orders_to_cancel,
    recompute_positions,
)
from domain.venues import OrderReport, OrderReports

TAKEOVER = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TIMES = [TAKEOVER + timedelta(seconds=s) for s in (-60, -1, 0, 1, 60)]
SYMBOLS = ["ESM5", "NQM5", "CLN5"]
PRICES = [Decimal("99.5"), Decimal("100"), Decimal("100.25")]

client_order_ids = st.sampled_from(["E1-a", "E2-a", "E2-b", "E3-a", "E4-a", "manual-a"])
epochs = st.integers(min_value=1, max_value=4)

orders = st.builds(
    Order,
    client_order_id=client_order_ids,
    venue=st.just("alpha"),
    venue_order_id=st.none(),
    epoch=epochs,
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from(Side),
    qty=st.integers(min_value=1, max_value=3),
    price=st.sampled_from(PRICES),
    filled_qty=st.integers(min_value=0, max_value=3),
    created_at=st.none() | st.sampled_from(TIMES),
    updated_at=st.sampled_from(TIMES),
)
fills = st.builds(
    Fill,
    trade_id=st.sampled_from(["T1", "T2", "T3", "T4"]),
    venue=st.just("alpha"),
    venue_seq=st.integers(min_value=1, max_value=4),
    client_order_id=client_order_ids,
    venue_order_id=st.none(),
    epoch=epochs,
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from(Side),
    qty=st.integers(min_value=1, max_value=3),
    price=st.sampled_from(PRICES),
    ts=st.sampled_from(TIMES),
)
# A book holds one order per client order id; venue reports need not.
books = st.lists(orders, max_size=6, unique_by=lambda o: o.client_order_id)
reports = st.lists(orders, max_size=6)
new_epochs = st.integers(min_value=2, max_value=5)
positions = st.dictionaries(st.sampled_from(SYMBOLS), st.integers(min_value=-5, max_value=5))


def reconcile(venue_open: list[Order], dr_open: list[Order], new_epoch: int) -> VenueReconciliation:
    reported = OrderReports(orders=[OrderReport.model_validate(o.model_dump()) for o in venue_open])
    findings = classify_orders("alpha", reported, dr_open, new_epoch, TAKEOVER)
    return VenueReconciliation(
        venue="alpha", new_epoch=new_epoch, findings=findings, fill_findings=[]
    )


@given(book=books, new_epoch=new_epochs)
def test_a_book_reconciled_against_itself_is_all_matched(book: list[Order], new_epoch: int) -> None:
    report = reconcile(book, book, new_epoch)
    assert all(f.kind is DiscrepancyKind.MATCHED for f in report.findings)
    assert len(report.findings) == len(book)
    assert report.to_cancel == []
    assert report.discrepancy_notional == 0


@given(
    venue_open=reports,
    dr_open=reports,
    new_epoch=new_epochs,
    created_at=st.none() | st.sampled_from([t for t in TIMES if t <= TAKEOVER]),
    position=st.integers(min_value=0, max_value=6),
)
def test_an_injected_ghost_is_found_exactly_once_and_cancelled(
    venue_open: list[Order],
    dr_open: list[Order],
    new_epoch: int,
    created_at: datetime | None,
    position: int,
) -> None:
    ghost = Order(
        client_order_id=f"E{new_epoch - 1}-ghost",
        venue="alpha",
        epoch=new_epoch - 1,
        symbol="ESM5",
        side=Side.BUY,
        qty=1,
        price=Decimal("100"),
        created_at=created_at,
        updated_at=TAKEOVER,
    )
    venue_open.insert(position, ghost)
    report = reconcile(venue_open, dr_open, new_epoch)
    found = [f for f in report.findings if f.client_order_id == ghost.client_order_id]
    assert [f.kind for f in found] == [DiscrepancyKind.GHOST]
    assert ghost.client_order_id in report.to_cancel


@given(venue_open=reports, dr_open=reports, new_epoch=new_epochs)
def test_nothing_dr_knows_is_ever_cancelled(
    venue_open: list[Order], dr_open: list[Order], new_epoch: int
) -> None:
    report = reconcile(venue_open, dr_open, new_epoch)
    assert not set(report.to_cancel) & {o.client_order_id for o in dr_open}


@given(venue_open=reports, dr_open=reports, new_epoch=new_epochs)
def test_an_order_working_at_the_venue_that_dr_knows_is_never_cancelled(
    venue_open: list[Order], dr_open: list[Order], new_epoch: int
) -> None:
    report = reconcile(venue_open, dr_open, new_epoch)
    both = {o.client_order_id for o in venue_open} & {o.client_order_id for o in dr_open}
    confirmed = orders_to_cancel(report.findings, confirm_missing_at_venue=True)
    assert not set(confirmed) & both
    # What it adds to the cancel rule is exactly the DR book's orders the venue does not list.
    only_dr = {o.client_order_id for o in dr_open} - {o.client_order_id for o in venue_open}
    assert set(confirmed) - set(report.to_cancel) == only_dr


@given(venue_open=reports, dr_open=reports, new_epoch=new_epochs)
def test_every_reported_order_appears_in_exactly_one_finding(
    venue_open: list[Order], dr_open: list[Order], new_epoch: int
) -> None:
    reported = OrderReports(orders=[OrderReport.model_validate(o.model_dump()) for o in venue_open])
    findings = classify_orders("alpha", reported, dr_open, new_epoch, TAKEOVER)
    # As multisets: a report repeated twice must be accounted for twice.
    assert Counter(f.venue_order for f in findings if f.venue_order is not None) == Counter(
        venue_open
    )
    assert Counter(f.dr_order for f in findings if f.dr_order is not None) == Counter(dr_open)
    assert [f.client_order_id for f in findings] == sorted(f.client_order_id for f in findings)


@given(base=positions, fill_list=st.lists(fills, max_size=8), data=st.data())
def test_positions_do_not_depend_on_fill_order(
    base: dict[str, int], fill_list: list[Fill], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(fill_list))
    assert recompute_positions(base, shuffled) == recompute_positions(base, fill_list)


@given(base=positions, fill_list=st.lists(fills, max_size=8))
def test_fills_then_their_opposites_leave_the_base_position(
    base: dict[str, int], fill_list: list[Fill]
) -> None:
    opposites = [
        f.model_copy(update={"side": Side.SELL if f.side is Side.BUY else Side.BUY})
        for f in fill_list
    ]
    flat_dropped = {symbol: qty for symbol, qty in base.items() if qty != 0}
    assert recompute_positions(base, fill_list + opposites) == flat_dropped


@given(
    venue_fills=st.lists(fills, max_size=8),
    booked=st.sets(st.sampled_from(["T1", "T2", "T3", "T4"])),
)
def test_checking_fills_never_loses_a_trade(venue_fills: list[Fill], booked: set[str]) -> None:
    unique, findings = check_fills("alpha", venue_fills, booked)
    assert sorted(f.trade_id for f in unique) == sorted({f.trade_id for f in venue_fills})
    duplicates = [f for f in findings if f.kind == "duplicate"]
    assert len(duplicates) == len(venue_fills) - len(unique)
    unbooked = {f.trade_id for f in findings if f.kind == "unbooked"}
    assert unbooked == {f.trade_id for f in unique} - booked
