"""What a person reads at the end of a runbook: sentences, never a Python repr."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from domain.drill import FailbackReport
from domain.promotion import DrOutcome, PromotionReport, VenueRecoveryReport, venue_sentence
from domain.reconciliation import DiscrepancyKind, PositionDiscrepancy
from tests.unit.review.recorded import UNPLANNED, document, result_of

# A dict or list repr, a quoted string, or "None" where a figure belongs.
REPR_ARTEFACTS = re.compile(r"[{}\[\]']|\bNone\b")


def recorded_report() -> PromotionReport:
    return PromotionReport.model_validate(result_of(document(UNPLANNED)))


def venue(report: PromotionReport, name: str) -> VenueRecoveryReport:
    return next(v for v in report.venues if v.venue == name)


def with_findings(base: VenueRecoveryReport, kinds: list[DiscrepancyKind]) -> VenueRecoveryReport:
    template = next(iter(base.findings))
    findings = [
        template.model_copy(update={"client_order_id": f"E2-x-{i}", "kind": kind})
        for i, kind in enumerate(kinds)
    ]
    return base.model_copy(update={"findings": findings, "cancelled": [], "fill_findings": []})


def test_every_line_of_a_real_promotions_summary_reads_without_repr_artefacts() -> None:
    lines = recorded_report().summary_lines()
    assert lines[0] == "promotion of lab: promoted (dr trading at epoch 2)"
    for line in lines:
        assert not REPR_ARTEFACTS.search(line), line


def test_a_venue_whose_ghosts_were_cancelled_says_so_in_a_sentence() -> None:
    alpha = venue(recorded_report(), "alpha").model_copy(
        update={"matched": 1000, "waited_for_cooldown": False}
    )
    assert venue_sentence(alpha) == "1 ghost order cancelled and confirmed gone; 1,000 matched."


def test_a_venue_with_drift_and_nothing_to_cancel_points_at_the_report() -> None:
    beta = with_findings(venue(recorded_report(), "alpha"), [DiscrepancyKind.DRIFT] * 2)
    beta = beta.model_copy(update={"matched": 998, "waited_for_cooldown": False})
    assert venue_sentence(beta) == "nothing to cancel; 998 matched, 2 drift (see report)."


def test_a_cancel_that_did_not_take_is_told_with_what_stays_open() -> None:
    alpha = venue(recorded_report(), "alpha")
    stuck = alpha.model_copy(
        update={"still_open_after_cancel": list(alpha.cancelled), "waited_for_cooldown": False}
    )
    sentence = venue_sentence(stuck)
    assert sentence == (
        "no cancel confirmed, but 1 order still open after cancelling; 1 matched, 1 ghost "
        "(see report)."
    )


def test_a_venue_with_no_open_orders_at_all_says_so() -> None:
    empty = with_findings(venue(recorded_report(), "alpha"), [])
    empty = empty.model_copy(update={"matched": 0, "waited_for_cooldown": True})
    assert venue_sentence(empty) == (
        "nothing to cancel; no open orders; waited out a reconnect cooldown."
    )


@pytest.mark.parametrize(
    "kinds",
    [
        [DiscrepancyKind.MISSING_AT_VENUE, DiscrepancyKind.OLD_EPOCH],
        [DiscrepancyKind.GHOST, DiscrepancyKind.DRIFT, DiscrepancyKind.MISSING_AT_VENUE],
    ],
)
def test_every_finding_kind_reads_as_words(kinds: list[DiscrepancyKind]) -> None:
    sentence = venue_sentence(with_findings(venue(recorded_report(), "alpha"), kinds))
    assert not REPR_ARTEFACTS.search(sentence), sentence
    assert "_" not in sentence, sentence
    assert sentence.endswith(".")


def test_a_promotion_that_never_took_the_lease_says_the_lease_did_not_move() -> None:
    refused = recorded_report().model_copy(
        update={
            "outcome": DrOutcome.REFUSED,
            "epoch": None,
            "previous_epoch": None,
            "rto_s": None,
            "lease_to_dns_s": None,
            "replication_gap": None,
            "venues": [],
        }
    )
    lines = refused.summary_lines()
    assert lines[1] == "  primary to dr; the lease did not move."
    for line in lines:
        assert not REPR_ARTEFACTS.search(line), line


def test_positions_that_differ_are_counted_in_words() -> None:
    differs = PositionDiscrepancy(
        symbol="MSFT",
        book_qty=10,
        recomputed_qty=7,
        difference=-3,
        notional=Decimal("304.50"),
        inferred_price=False,
    )
    report = recorded_report().model_copy(
        update={"position_discrepancies": [differs], "discrepancy_notional": Decimal("304.50")}
    )
    assert (
        "  positions: 1 symbol differs from the venues' fills (notional 304.50; see report)."
        in (report.summary_lines())
    )


def test_a_failback_summary_reads_as_sentences() -> None:
    promotion = recorded_report()
    failback = FailbackReport(
        workflow_id="dr-failback/lab",
        system="lab",
        from_region="dr",
        to_region="primary",
        outcome=promotion.outcome,
        outcome_detail="primary trading at epoch 3",
        started_at=promotion.started_at,
        finished_at=promotion.finished_at,
        steps=promotion.steps[:3],
        resync=promotion.replication_gap,
        promotion=promotion,
        monitor_following="primary",
    )
    lines = failback.summary_lines()
    assert lines[:3] == [
        "failback of lab: promoted (primary trading at epoch 3)",
        "  dr to primary.",
        "  resync of primary: DR was in step; nothing missing after sync.",
    ]
    for line in lines:
        assert not REPR_ARTEFACTS.search(line), line
