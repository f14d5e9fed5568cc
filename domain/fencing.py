"""Which fencing layer held each venue after a takeover (DESIGN: "Fencing, in layers — the
report says which held at each venue").

A desk-owned gateway that knows epochs (capability ``epoch_refusal``) refuses every order of
the old holder itself. A public venue (Binance, a FIX venue) knows no epochs: there the old
holder is stopped by the lease (it cannot renew, and its OMS stops trading on its own clock
after the TTL), and what it left working is cancelled by the reconciliation, whose cancels are
confirmed by reading the venue again. Pure: decided from the venue's declared capabilities and
its VenueRecoveryReport, nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from domain.reconciliation import DiscrepancyKind
from domain.venues import VenueCapability

if TYPE_CHECKING:  # domain.promotion imports this module for its sentences
    from domain.promotion import VenueRecoveryReport

# What the reconciliation cancels without a person: orders of an earlier holder.
_OLD_HOLDER_KINDS = frozenset({DiscrepancyKind.GHOST, DiscrepancyKind.OLD_EPOCH})


class FencingLayer(StrEnum):
    VENUE_EPOCH_REFUSAL = "venue epoch refusal"
    RECONCILIATION = "lease + OMS TTL + reconciliation"
    # A run recorded before plans carried the venues' capabilities.
    NOT_RECORDED = "not recorded"


class FencingVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    venue: str
    layer: FencingLayer
    new_epoch: int
    # Orders of an earlier holder the reconciliation found working at the venue...
    old_epoch_orders: int
    # ...of which cancelled and confirmed gone by a second read...
    confirmed_gone: int
    # ...and still working after the runbook's cancels (or never cancelled).
    still_open: int

    @property
    def held(self) -> bool:
        """No order of an earlier holder is left working at the venue."""
        return self.layer is not FencingLayer.NOT_RECORDED and self.still_open == 0

    def describe(self) -> str:
        """``lease + OMS TTL + reconciliation: 2 old-epoch orders cancelled, confirmed gone /
        0 still open``."""
        cancelled = (
            f"{_orders(self.confirmed_gone)} cancelled, confirmed gone / "
            f"{self.still_open:,} still open"
        )
        if self.layer is FencingLayer.NOT_RECORDED:
            return (
                f"fencing layer not recorded (this run predates declared capabilities); {cancelled}"
            )
        if self.layer is FencingLayer.VENUE_EPOCH_REFUSAL:
            text = (
                f"venue epoch refusal (the venue refuses orders older than epoch {self.new_epoch})"
            )
            if self.old_epoch_orders:
                text += f"; orders resting from before: {cancelled}"
        else:
            text = f"{self.layer.value}: {cancelled}"
        if self.still_open:
            text += " — NOT fenced: old-epoch orders still work at the venue"
        return text


def fencing_verdict(
    report: VenueRecoveryReport, capabilities: Collection[VenueCapability] | None
) -> FencingVerdict:
    """Which layer held ``report.venue``. ``capabilities`` None: not recorded for this run."""
    old = {f.client_order_id for f in report.findings if f.kind in _OLD_HOLDER_KINDS}
    gone = (old & set(report.cancelled)) - set(report.still_open_after_cancel)
    if capabilities is None:
        layer = FencingLayer.NOT_RECORDED
    elif VenueCapability.EPOCH_REFUSAL in capabilities:
        layer = FencingLayer.VENUE_EPOCH_REFUSAL
    else:
        layer = FencingLayer.RECONCILIATION
    return FencingVerdict(
        venue=report.venue,
        layer=layer,
        new_epoch=report.new_epoch,
        old_epoch_orders=len(old),
        confirmed_gone=len(gone),
        still_open=len(old - gone),
    )


def _orders(count: int) -> str:
    return f"{count:,} old-epoch order" + ("" if count == 1 else "s")
