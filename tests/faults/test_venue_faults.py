"""Venues misbehaving during a promotion's recovery, each through the dialect the lab reaches it
by: alpha the lab's own gateway API, beta the Binance face through ccxt, gamma FIX 4.4.

alpha answers a burst of 503s and reports malformed fills (a negative quantity, a symbol the
system does not trade, every fill twice). beta rate-limits (429) and then bans (418), each with
Retry-After. gamma drops the connection half way through a mass-status answer, skips a MsgSeqNum,
and sends an ExecutionReport missing a required tag. The transient faults must be retried (after
exactly Retry-After where given, with no storm); the malformed data must reach the report as
findings and stop the release at the discrepancy gate until a person decides; nothing may crash
or be dropped without a word.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.venues import DEFAULT_USER_AGENT
from domain.fencing import FencingLayer, fencing_verdict
from domain.promotion import PromotionProgress, PromotionReport, VenueRecoveryReport
from domain.venues import VenueCapability
from lab.processes import wait_until
from tests.faults.conftest import (
    PROMOTION_ID,
    chaos,
    place_ghost,
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
# Every runbook request names itself so; the DR OMS polling the same venues does not.
RUNBOOKS = DEFAULT_USER_AGENT


def junk_fill(trade_id: str, **overrides: Any) -> dict[str, Any]:
    fill = {
        "trade_id": trade_id, "seq": 1, "venue_order_id": "alpha-O99999999",
        "client_order_id": "E1-junk", "epoch": 1, "symbol": "MSFT", "side": "buy", "qty": 5,
        "price": "100.00", "ts": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    return fill | overrides


# An open order with no Side(54): every field a junk order leaves out is a missing tag.
GAMMA_JUNK = {
    "junk_orders": [
        {"client_order_id": BAD_ORDER, "venue_order_id": "gamma-O99999999", "symbol": "AAPL",
         "qty": 3, "price": "10.00", "filled_qty": 0, "status": "open"},
    ],
}  # fmt: skip

# A request that reached the venue this soon after a refusal was sent before the refusal
# arrived (localhost, even on a loaded 2-core box, answers well within it).
IN_FLIGHT_S = 0.1

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
    # Two 429s, then a 418 ban (Binance's answer to a client that ignored its 429s).
    "beta": {
        "rate_limits": 2,
        "bans": 1,
        "retry_after_s": RETRY_AFTER_S,
        "paths": ["/api/v3/openOrders", "/api/v3/myTrades", "/api/v3/allOrders", "/api/v3/order"],
    },
    # First the connection dropped half way through a mass-status answer; the sequence gap is
    # armed once the drop has been served, so each fault meets its own attempt.
    "gamma": {"fix_drops": 1, **GAMMA_JUNK},
}  # fmt: skip
GAMMA_GAP = {"fix_seq_gaps": 1, **GAMMA_JUNK}


def recovery(report: PromotionReport, venue: str) -> VenueRecoveryReport:
    return next(v for v in report.venues if v.venue == venue)


def fault_plan(lab: LabRun, venue: str, plan: dict[str, Any]) -> None:
    # Aimed at the runbooks' requests: the DR OMS polls the same venues meanwhile.
    venue_call(lab, venue, "POST", "/admin/faults", json=plan | {"only_agent": RUNBOOKS})


def served(lab: LabRun, venue: str) -> list[dict[str, Any]]:
    log = venue_call(lab, venue, "GET", "/admin/faults")
    return [r for r in log["requests"] if r["agent"].startswith(RUNBOOKS)]


async def test_venue_faults_are_retried_and_bad_reports_reach_the_report(lab: LabRun) -> None:
    epoch = await wait_for_steady_primary(lab)
    client = await temporal(lab)
    chaos(lab, "kill", "primary")
    # One real fill in the window reconciliation reads, so "every fill twice" has one to repeat:
    # on an order the primary got in just before it died.
    filled = inject_order(lab, "alpha", f"E{epoch}-last-{uuid.uuid4().hex[:8]}", epoch, qty=4)
    venue_call(lab, "alpha", "POST", "/admin/fills", json={"client_order_id": filled, "qty": 1})
    # A ghost at gamma: its mass-status answer has a real order beside the junk to drop after,
    # and reconciliation has an old-epoch order to cancel through FIX.
    ghost = place_ghost(lab, "gamma", epoch)
    for venue, plan in FAULTS.items():
        fault_plan(lab, venue, plan)
    start_failover(lab)

    # gamma: once its mass status has been cut off, the next message it sends skips a number.
    assert wait_until(
        lambda: any(r["answer"] == "drop" for r in served(lab, "gamma")), 60, poll_s=0.05
    ), served(lab, "gamma")
    fault_plan(lab, "gamma", GAMMA_GAP)

    # Malformed reports hold the release at the discrepancy gate until someone decides.
    handle = client.get_workflow_handle(PROMOTION_ID)

    async def waiting_for_decision() -> bool:
        progress = await handle.query("progress", result_type=PromotionProgress)
        return "operator decision" in (progress.waiting_for or "")

    deadline = datetime.now(UTC) + timedelta(seconds=90)
    while not await waiting_for_decision():
        assert datetime.now(UTC) < deadline, await handle.query("progress")
        await asyncio.sleep(0.2)  # poll
    # The venues whose reports were bad stay held (reduce-only there) until the decision; a
    # clean venue may already trade: one venue's bad data holds only itself.
    health = lab.get("oms-dr", "/health")
    assert not {"alpha", "gamma"} & set(health["released_venues"]), health
    decided = drctl_runbook(lab, "decide", PROMOTION_ID, "accept", "--as", "bob")
    assert decided.returncode == 0, decided.stdout + decided.stderr

    report = await promotion_result(client, 120)
    assert report.outcome.value == "promoted", report.outcome_detail
    logs = {venue: venue_call(lab, venue, "GET", "/admin/faults") for venue in FAULTS}
    for venue in FAULTS:
        venue_call(lab, venue, "POST", "/admin/faults", json={})

    # Every injected transient fault was served, and the recovery still got through.
    bursts = ("errors", "rate_limits", "bans", "fix_drops", "fix_seq_gaps")
    for venue, log in logs.items():
        left = {k: log["plan"][k] for k in bursts}
        assert left == dict.fromkeys(bursts, 0), (venue, left)
    reconcile_attempts = {
        v.venue: next(s.attempts for s in v.steps if s.name == "reconcile_venue")
        for v in report.venues
    }
    assert all(reconcile_attempts[v] > 1 for v in FAULTS), reconcile_attempts

    # beta: after each 429 and the 418, nothing more on that path inside the window the venue
    # asked for (one refused request per window, no storm), but for requests that were already
    # on the wire when it answered: two runbook steps may read the venue at the same moment.
    requests = [r for r in logs["beta"]["requests"] if r["agent"].startswith(RUNBOOKS)]
    refused = [r for r in requests if r["answer"] in ("429", "418")]
    assert sorted(r["answer"] for r in refused) == ["418", "429", "429"], refused
    for refusal in refused:
        at = datetime.fromisoformat(refusal["at"])
        later = [
            (datetime.fromisoformat(r["at"]) - at).total_seconds()
            for r in requests
            if r["path"] == refusal["path"] and datetime.fromisoformat(r["at"]) > at
        ]
        assert later, f"{refusal['path']} was never asked again after its {refusal['answer']}"
        inside = [t for t in later if IN_FLIGHT_S < t < RETRY_AFTER_S - 0.05]
        assert inside == [], (refusal, later)
        assert max(later) >= RETRY_AFTER_S - 0.05, (refusal, later)  # and it was asked again

    # alpha: the malformed fills are findings that name what is wrong; duplicates are named too.
    fills = {(f.trade_id, f.kind): f.detail for f in recovery(report, "alpha").fill_findings}
    assert "qty" in fills[(NEGATIVE_QTY_TRADE, "invalid")]
    assert "unknown symbol 'ZZZZ'" in fills[(UNKNOWN_SYMBOL_TRADE, "invalid")]
    repeated = [d for (trade, kind), d in fills.items() if kind == "duplicate"]
    assert repeated and all("identical content" in d for d in repeated), fills

    # gamma: the ExecutionReport without a Side is a finding naming the tag, never cancelled,
    # and one of those the operator accepted; the ghost was cancelled through FIX.
    gamma = recovery(report, "gamma")
    orders = {f.client_order_id: f for f in gamma.findings}
    assert BAD_ORDER in orders and "tag 54" in orders[BAD_ORDER].detail, orders.get(BAD_ORDER)
    assert BAD_ORDER not in gamma.cancelled
    assert BAD_ORDER in {f.client_order_id for f in gamma.unresolved}
    assert ghost in gamma.cancelled and ghost not in gamma.still_open_after_cancel

    # Which fencing layer held: the desk gateway refuses old epochs itself; at the FIX venue
    # the lease and reconciliation did, and the old primary's ghost is confirmed gone.
    assert VenueCapability.EPOCH_REFUSAL in report.venue_capabilities["alpha"]
    verdicts = {
        v.venue: fencing_verdict(v, report.venue_capabilities[v.venue]) for v in report.venues
    }
    assert verdicts["alpha"].layer is FencingLayer.VENUE_EPOCH_REFUSAL
    assert verdicts["gamma"].layer is FencingLayer.RECONCILIATION
    assert verdicts["gamma"].held and verdicts["gamma"].confirmed_gone >= 1
    summary = "\n".join(report.summary_lines())
    assert "gamma:" in summary and "lease + OMS TTL + reconciliation" in summary, summary

    # The decision is on the record, with who made it.
    decisions = [a for a in report.actions if a.kind == "decision"]
    assert [(a.by, a.action) for a in decisions] == [("bob", "accept")]
    assert wait_until(lambda: lab.get("oms-dr", "/health")["trading_state"] == "trading", 10)
