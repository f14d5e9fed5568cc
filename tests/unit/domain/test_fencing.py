"""Which fencing layer held each venue: decided from its declared capabilities and its
recovery report alone, and told in the report's sentence for that venue."""

from __future__ import annotations

from domain.fencing import FencingLayer, fencing_verdict
from domain.promotion import PromotionPlan, PromotionReport, VenueRecoveryReport, venue_sentence
from domain.reconciliation import DiscrepancyKind
from domain.venues import VenueCapability
from tests.unit.review.recorded import UNPLANNED, document, result_of


def recorded_report() -> PromotionReport:
    return PromotionReport.model_validate(result_of(document(UNPLANNED)))


def alpha_with(kinds: list[DiscrepancyKind], cancelled: int, stuck: int = 0) -> VenueRecoveryReport:
    """The recorded alpha recovery with findings of ``kinds``; the first ``cancelled`` were
    cancelled, the first ``stuck`` of those still open after the cancel."""
    alpha = next(v for v in recorded_report().venues if v.venue == "alpha")
    template = alpha.findings[0]
    findings = [
        template.model_copy(update={"client_order_id": f"E1-x-{i}", "kind": kind})
        for i, kind in enumerate(kinds)
    ]
    ids = [f.client_order_id for f in findings]
    return alpha.model_copy(
        update={
            "findings": findings,
            "cancelled": ids[:cancelled],
            "still_open_after_cancel": ids[:stuck],
            "fill_findings": [],
            "waited_for_cooldown": False,
            "matched": 0,
        }
    )


def test_a_gateway_that_refuses_stale_epochs_held_by_itself() -> None:
    report = alpha_with([DiscrepancyKind.GHOST], cancelled=1)
    verdict = fencing_verdict(report, [VenueCapability.EPOCH_REFUSAL])
    assert verdict.layer is FencingLayer.VENUE_EPOCH_REFUSAL and verdict.held
    assert verdict.describe().startswith(
        f"venue epoch refusal (the venue refuses orders older than epoch {report.new_epoch})"
    )


def test_a_public_venue_was_held_by_the_lease_and_reconciliation_with_counts() -> None:
    kinds = [DiscrepancyKind.GHOST, DiscrepancyKind.OLD_EPOCH, DiscrepancyKind.DRIFT]
    verdict = fencing_verdict(alpha_with(kinds, cancelled=2), [VenueCapability.MASS_STATUS])
    assert verdict.layer is FencingLayer.RECONCILIATION and verdict.held
    # The drift is not an order of the old holder: only the ghost and the old-epoch one count.
    assert (verdict.old_epoch_orders, verdict.confirmed_gone, verdict.still_open) == (2, 2, 0)
    assert verdict.describe() == (
        "lease + OMS TTL + reconciliation: 2 old-epoch orders cancelled, confirmed gone / "
        "0 still open"
    )


def test_an_old_epoch_order_still_open_after_the_cancel_means_the_fence_did_not_hold() -> None:
    report = alpha_with([DiscrepancyKind.OLD_EPOCH] * 3, cancelled=3, stuck=1)
    verdict = fencing_verdict(report, [])
    assert not verdict.held
    assert (verdict.confirmed_gone, verdict.still_open) == (2, 1)
    assert verdict.describe().endswith("NOT fenced: old-epoch orders still work at the venue")


def test_a_run_recorded_before_capabilities_says_it_was_not_recorded() -> None:
    verdict = fencing_verdict(alpha_with([DiscrepancyKind.GHOST], cancelled=1), None)
    assert verdict.layer is FencingLayer.NOT_RECORDED and not verdict.held


def test_the_venue_sentence_names_the_layer_when_capabilities_are_known() -> None:
    report = alpha_with([DiscrepancyKind.GHOST], cancelled=1)
    plain = venue_sentence(report)
    assert plain == "1 ghost order cancelled and confirmed gone; no open orders."
    told = venue_sentence(report, [])
    assert told == (
        "1 ghost order cancelled and confirmed gone; no open orders. Fencing: lease + OMS TTL + "
        "reconciliation: 1 old-epoch order cancelled, confirmed gone / 0 still open."
    )


def test_recorded_runs_without_capabilities_still_decode_and_read_as_before() -> None:
    report = recorded_report()
    assert report.venue_capabilities == {}
    assert not any("Fencing:" in line for line in report.summary_lines())
    with_caps = report.model_copy(
        update={"venue_capabilities": {"alpha": [VenueCapability.EPOCH_REFUSAL]}}
    )
    alpha_line = next(line for line in with_caps.summary_lines() if line.startswith("  alpha:"))
    assert "Fencing: venue epoch refusal" in alpha_line


def test_a_plan_recorded_before_capabilities_decodes_with_none_declared() -> None:
    plan = PromotionPlan.model_validate(
        {
            "system": "lab", "production": False, "from_region": "primary", "to_region": "dr",
            "from_oms_url": "http://p", "to_oms_url": "http://d", "venues": ["alpha"],
            "discrepancy_tolerance_notional": "0", "fill_lookback_margin_s": 5.0,
            "approval_timeout_s": 60.0, "decision_timeout_s": 60.0, "sync_timeout_s": 30.0,
            "confirmation_count": 3, "probe_interval_s": 1.0, "lease_ttl_s": 3.0,
            "ui_url": "http://ui", "dns_active": "dr",
        }
    )  # fmt: skip
    assert plan.venue_capabilities == {}
