"""Split brain: the primary is frozen (SIGSTOP, not dead) while DR is promoted, then thaws.

A frozen process is the dangerous case: its sockets stay open, its memory still says "trading at
epoch N", and when it thaws it may pick up exactly where it stopped. Three layers must hold:
the thawed OMS sends nothing (its lease's TTL ran out on its own clock) and fences itself on
finding the lease taken; the venues refuse anything of the old epoch; and an order it got out
while the promotion ran is classified ``old_epoch`` and cancelled by the reconciliation.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import httpx

from domain.promotion import PromotionReport
from domain.reconciliation import DiscrepancyKind
from lab.processes import wait_until
from lab.topology_gen import VENUES
from tests.faults.conftest import (
    after_activity,
    chaos,
    promotion_result,
    start_failover,
    temporal,
    wait_for_history,
    wait_for_steady_primary,
)
from tests.lab.conftest import LabRun, inject_order, venue_call

LATE_VENUE = "beta"


def send_as_frozen_primary(lab: LabRun, epoch: int) -> str:
    """An order of the old epoch reaching the venue after the takeover, as a primary that was
    mid-send when it froze gets out. Injected at the venue: a live sender would be refused."""
    client_order_id = f"E{epoch}-late-{uuid.uuid4().hex[:10]}"
    return inject_order(lab, LATE_VENUE, client_order_id, epoch, symbol="NVDA", side="sell")


def takeover_at(report: PromotionReport) -> datetime:
    lease_step = next(s for s in report.steps if s.name == "acquire_lease")
    assert lease_step.started_at is not None
    return lease_step.started_at


async def test_a_frozen_primary_that_thaws_after_the_promotion_sends_nothing(
    lab: LabRun,
) -> None:
    epoch = await wait_for_steady_primary(lab)
    client = await temporal(lab)
    chaos(lab, "hang", "primary")
    start_failover(lab)
    await wait_for_history(client, after_activity("acquire_lease"), 60)
    late = send_as_frozen_primary(lab, epoch)

    report = await promotion_result(client, 120)
    assert report.outcome.value == "promoted", report.outcome_detail
    assert report.epoch == epoch + 1
    # The frozen primary could not confirm its fencing, so the old lease was waited out.
    assert report.fence is not None and not report.fence.confirmed

    # Its late order was found, classified as sent by a fenced sender, and cancelled once.
    recovery = next(v for v in report.venues if v.venue == LATE_VENUE)
    kinds = {f.client_order_id: f.kind for f in recovery.findings}
    assert kinds[late] is DiscrepancyKind.OLD_EPOCH
    assert late in recovery.cancelled and late not in recovery.still_open_after_cancel
    audit = venue_call(
        lab, LATE_VENUE, "GET", "/admin/cancels", params={"client_order_id": [late]}
    )["orders"]
    assert audit[late]["state_changing"] == 1

    # The DR OMS trades at the new epoch; wait until every venue has seen it.
    assert wait_until(
        lambda: all(
            venue_call(lab, v, "GET", "/admin/counters")["highest_epoch"] == epoch + 1
            for v in VENUES
        ),
        30,
        poll_s=0.3,
    )
    chaos(lab, "heal", "primary")  # SIGCONT: the primary thaws where it stopped

    def fenced() -> bool:
        return str(lab.get("oms-primary", "/health")["trading_state"]) == "fenced"

    assert wait_until(fenced, 30, poll_s=0.2), lab.get("oms-primary", "/health")
    reason = str(lab.get("oms-primary", "/health")["fenced_reason"])
    assert f"epoch {epoch + 1}" in reason or "TTL" in reason, reason

    # Nothing of the old epoch got in after the takeover, other than the one order injected.
    for venue in VENUES:
        orders = venue_call(lab, venue, "GET", "/admin/orders", params={"epoch": epoch})["orders"]
        after = [
            o["client_order_id"]
            for o in orders
            if datetime.fromisoformat(o["created_at"]) >= takeover_at(report)
            and o["client_order_id"] != late
        ]
        assert after == [], f"{venue} accepted old-epoch orders after the takeover: {after}"

    # And if it tried anyway, every venue refuses the old epoch.
    for venue in VENUES:
        before = venue_call(lab, venue, "GET", "/admin/counters")["stale_epoch_rejections"]
        async with httpx.AsyncClient(timeout=15) as http:
            response = await http.post(
                lab.url("oms-primary") + "/admin/force-order", json={"venue": venue}
            )
        response.raise_for_status()
        forced = response.json()
        assert forced["accepted"] is False and forced["epoch"] == epoch, forced
        after_count = venue_call(lab, venue, "GET", "/admin/counters")["stale_epoch_rejections"]
        assert after_count == before + 1
