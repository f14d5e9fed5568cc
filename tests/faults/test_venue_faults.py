"""Venues misbehaving during a promotion's recovery.

alpha answers a burst of 503s and then reports malformed fills (a negative quantity, a symbol
the system does not trade, every fill twice); beta rate-limits with Retry-After; gamma answers
slower than the client's timeout and reports a malformed open order. The transient faults must
be retried (after exactly Retry-After where given); the malformed data must reach the report as
findings and stop the release at the discrepancy gate until a person decides, and nothing may
crash or be dropped without a word.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from activities.venue_client import USER_AGENT
from domain.promotion import PromotionProgress, PromotionReport, VenueRecoveryReport
from lab.processes import wait_until
from tests.faults.conftest import (
    PROMOTION_ID,
    chaos,
    promotion_result,
    start_failover,
    temporal,
    wait_for_steady_primary,
)
from tests.lab.conftest import LabRun, drctl_runbook, inject_order, venue_call

NEGATIVE_QTY_TRADE = "alpha-T-negative"
UNKNOWN_SYMBOL_TRADE = "alpha-T-unknown"
BAD_ORDER = "E1-malformed-gamma"
RETRY_AFTER_S = 1.5


def junk_fill(trade_id: str, **overrides: Any) -> dict[str, Any]:
    fill = {
        "trade_id": trade_id, "seq": 1, "venue_order_id": "alpha-O99999999",
        "client_order_id": "E1-junk", "epoch": 1, "symbol": "MSFT", "side": "buy", "qty": 5,
        "price": "100.00", "ts": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    return fill | overrides


FAULTS: dict[str, dict[str, Any]] = {
    "alpha": {
        "errors": 4,
        "error_status": 503,
        "paths": ["/orders/open", "/fills"],
        "duplicate_fills": True,
        "junk_fills": [
            junk_fill(NEGATIVE_QTY_TRADE, qty=-5),
            junk_fill(UNKNOWN_SYMBOL_TRADE, symbol="ZZZZ"),
        ],
    },
    "beta": {
        "rate_limits": 3,
        "retry_after_s": RETRY_AFTER_S,
        "paths": ["/orders/open", "/fills", "/orders/cancel"],
    },
    "gamma": {
        "slow": 1,
        "slow_ms": 6_000,  # the venue client gives up after 5 s
        "paths": ["/orders/open"],
        "junk_orders": [
            {"client_order_id": BAD_ORDER, "venue_order_id": "gamma-O99999999", "epoch": 1,
             "symbol": "AAPL", "side": "sell", "qty": -3, "price": "10.00", "filled_qty": 0,
             "status": "open", "updated_at": datetime.now(UTC).isoformat()},
        ],
    },
}  # fmt: skip


def recovery(report: PromotionReport, venue: str) -> VenueRecoveryReport:
    return next(v for v in report.venues if v.venue == venue)


async def test_venue_faults_are_retried_and_bad_reports_reach_the_report(lab: LabRun) -> None:
    epoch = await wait_for_steady_primary(lab)
    client = await temporal(lab)
    chaos(lab, "kill", "primary")
    # One real fill in the window reconciliation reads, so "every fill twice" has one to repeat:
    # on an order the primary got in just before it died.
    filled = inject_order(lab, "alpha", f"E{epoch}-last-{uuid.uuid4().hex[:8]}", epoch, qty=4)
    venue_call(lab, "alpha", "POST", "/admin/fills", json={"client_order_id": filled, "qty": 1})
    for venue, plan in FAULTS.items():
        # Aimed at the runbooks' requests: the DR OMS polls the same venues meanwhile.
        venue_call(lab, venue, "POST", "/admin/faults", json=plan | {"only_agent": USER_AGENT})
    start_failover(lab)

    # Malformed fills hold the release at the discrepancy gate until someone decides.
    handle = client.get_workflow_handle(PROMOTION_ID)

    async def waiting_for_decision() -> bool:
        progress = await handle.query("progress", result_type=PromotionProgress)
        return "operator decision" in (progress.waiting_for or "")

    deadline = datetime.now(UTC) + timedelta(seconds=90)
    while not await waiting_for_decision():
        assert datetime.now(UTC) < deadline, await handle.query("progress")
        await asyncio.sleep(0.2)  # poll
    assert lab.get("oms-dr", "/health")["trading_state"] == "reduce_only"
    decided = drctl_runbook(lab, "decide", PROMOTION_ID, "accept", "--as", "bob")
    assert decided.returncode == 0, decided.stdout + decided.stderr

    report = await promotion_result(client, 120)
    assert report.outcome.value == "promoted", report.outcome_detail
    logs = {venue: venue_call(lab, venue, "GET", "/admin/faults") for venue in FAULTS}
    for venue in FAULTS:
        venue_call(lab, venue, "POST", "/admin/faults", json={})

    # Every injected transient fault was served, and the recovery still got through.
    for venue, log in logs.items():
        left = {k: log["plan"][k] for k in ("errors", "rate_limits", "slow")}
        assert left == {"errors": 0, "rate_limits": 0, "slow": 0}, (venue, left)
    reconcile_attempts = {
        v.venue: next(s.attempts for s in v.steps if s.name == "reconcile_venue")
        for v in report.venues
    }
    assert reconcile_attempts["alpha"] > 1 and reconcile_attempts["gamma"] > 1, reconcile_attempts

    # beta: after each 429, the next request on that path came no sooner than Retry-After.
    served = [r for r in logs["beta"]["requests"] if r["agent"].startswith(USER_AGENT)]
    limited = [r for r in served if r["answer"] == "429"]
    assert len(limited) == 3
    for refusal in limited:
        at = datetime.fromisoformat(refusal["at"])
        later = [
            datetime.fromisoformat(r["at"])
            for r in served
            if r["path"] == refusal["path"] and datetime.fromisoformat(r["at"]) > at
        ]
        assert later, f"{refusal['path']} was never asked again after its 429"
        assert (min(later) - at).total_seconds() >= RETRY_AFTER_S - 0.05, (refusal, min(later))

    # alpha: the malformed fills are findings that name what is wrong; duplicates are named too.
    fills = {(f.trade_id, f.kind): f.detail for f in recovery(report, "alpha").fill_findings}
    assert "qty" in fills[(NEGATIVE_QTY_TRADE, "invalid")]
    assert "unknown symbol 'ZZZZ'" in fills[(UNKNOWN_SYMBOL_TRADE, "invalid")]
    repeated = [d for (trade, kind), d in fills.items() if kind == "duplicate"]
    assert repeated and all("identical content" in d for d in repeated), fills
    # gamma: the malformed open order is a finding naming the field, not a crash.
    orders = {f.client_order_id: f for f in recovery(report, "gamma").findings}
    assert BAD_ORDER in orders and "qty" in orders[BAD_ORDER].detail
    assert BAD_ORDER not in recovery(report, "gamma").cancelled

    # The decision is on the record, with who made it.
    decisions = [a for a in report.actions if a.kind == "decision"]
    assert [(a.by, a.action) for a in decisions] == [("bob", "accept")]
    assert wait_until(lambda: lab.get("oms-dr", "/health")["trading_state"] == "trading", 10)
