"""One venue in a long Retry-After holds only itself: an unplanned promotion on the real lab.

gamma (reached over FIX) answers the runbook's first logon with "retry after 30 s". alpha and
beta must not wait for it: each trades at DR as soon as its own recovery and position check are
done, gamma is released when its own are, and the promotion completes. The venues' reconnect
cooldown is 0, so gamma's Retry-After is the only wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest

from adapters.venues.lab import USER_AGENT
from domain.promotion import PromotionReport
from lab.processes import wait_until
from lab.topology_gen import VENUES
from tests.lab.conftest import LabRun, drctl_runbook, replay_and_record, running_lab, venue_call

COOLING = "gamma"
RETRY_AFTER_S = 30
DR_OMS_AGENT = "lab-oms-dr"  # how the DR OMS names itself to the venues (lab/oms/node.py)
TRADING_PATHS = ("/orders", "/orders/cancel")


@dataclass
class Scenario:
    lab: LabRun
    report: PromotionReport
    first_trade: dict[str, datetime]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    with running_lab(tmp_path_factory, "--venue-cooldown-s", "0") as lab:
        assert wait_until(lambda: len(lab.get("oms-primary", "/book")["open_orders"]) >= 6, 60)
        for venue in VENUES:  # an empty plan, and an empty request log from here on
            venue_call(lab, venue, "POST", "/admin/faults", json={})
        venue_call(
            lab, COOLING, "POST", "/admin/faults",
            json={
                "rate_limits": 1, "retry_after_s": RETRY_AFTER_S, "paths": ["fix:A"],
                "only_agent": USER_AGENT,
            },
        )  # fmt: skip
        assert lab.drctl("chaos", "kill", "primary").returncode == 0
        result = drctl_runbook(
            lab, "failover", "--system", "lab", "--wait", "--json", "--as", "oncall"
        )
        assert result.returncode == 0, result.stderr + result.stdout
        report = PromotionReport.model_validate_json(result.stdout)
        # Every venue trades at DR by now; its first order or cancel from the DR OMS is logged.
        first: dict[str, datetime] = {}

        def traded() -> bool:
            for venue in VENUES:
                at = _first_trade(venue_call(lab, venue, "GET", "/admin/faults")["requests"])
                if at is not None:
                    first[venue] = at
            return set(first) == set(VENUES)

        assert wait_until(traded, 20, poll_s=0.3), first
        yield Scenario(lab, report, first)


def _first_trade(requests: list[dict[str, Any]]) -> datetime | None:
    times = [
        datetime.fromisoformat(r["at"])
        for r in requests
        if r["agent"].startswith(DR_OMS_AGENT) and r["path"] in TRADING_PATHS
    ]
    return min(times, default=None)


def test_the_promotion_completes_with_every_venue_released(scenario: Scenario) -> None:
    report = scenario.report
    assert report.outcome.value == "promoted", report.outcome_detail
    assert set(report.venue_rto_s) == set(VENUES) and report.held_venues == []
    health = scenario.lab.get("oms-dr", "/health")
    assert (health["trading_state"], sorted(health["released_venues"])) == (
        "trading", sorted(VENUES),
    )  # fmt: skip


def test_the_cooling_venue_waited_out_its_retry_after_and_holds_only_itself(
    scenario: Scenario,
) -> None:
    report = scenario.report
    rto = report.venue_rto_s
    others = [v for v in VENUES if v != COOLING]
    gamma = next(v for v in report.venues if v.venue == COOLING)
    assert gamma.waited_for_cooldown
    # The others were released long before gamma, which waited its 30 s.
    assert rto[COOLING] - max(rto[v] for v in others) >= RETRY_AFTER_S - 5, rto
    assert report.first_venue_rto_s == min(rto[v] for v in others)
    assert report.last_venue_rto_s == rto[COOLING]
    for venue in others:
        assert scenario.first_trade[venue] < _step(report, f"release_trading/{COOLING}").started_at


def test_each_venue_trades_within_a_second_of_its_own_reconciliation(scenario: Scenario) -> None:
    report = scenario.report
    for venue in VENUES:
        reconciled = _step(report, f"venue_recovery/{venue}").ended_at
        released = _step(report, f"release_trading/{venue}").ended_at
        assert reconciled is not None and released is not None
        assert scenario.first_trade[venue] >= released, venue  # nothing before its release
        waited = (scenario.first_trade[venue] - reconciled).total_seconds()
        assert waited < 1.0, (venue, waited)


def test_dns_moved_once_every_venue_was_released(scenario: Scenario) -> None:
    report = scenario.report
    dns = _step(report, "update_dns")
    last = _step(report, f"release_trading/{COOLING}")
    assert last.ended_at is not None and dns.started_at >= last.ended_at
    assert report.dns_changed is True


def test_release_is_idempotent_refuses_a_stale_epoch_and_accepts_old_callers(
    scenario: Scenario,
) -> None:
    url = scenario.lab.url("oms-dr") + "/control/release"
    again = httpx.post(url, json={"epoch": 2, "venues": ["alpha"]}, timeout=5)
    assert (again.status_code, again.json()["epoch"]) == (200, 2)
    stale = httpx.post(url, json={"epoch": 1, "venues": ["alpha"]}, timeout=5)
    assert stale.status_code == 409 and "active at epoch 2" in stale.json()["detail"]
    unknown = httpx.post(url, json={"epoch": 2, "venues": ["nowhere"]}, timeout=5)
    assert unknown.status_code == 422 and "nowhere" in unknown.json()["detail"]
    bodyless = httpx.post(url, timeout=5)  # a caller from before per-venue release
    assert bodyless.status_code == 200 and bodyless.json()["trading_state"] == "trading"
    assert sorted(scenario.lab.get("oms-dr", "/health")["released_venues"]) == sorted(VENUES)


def test_the_recorded_histories_replay_deterministically(scenario: Scenario) -> None:
    ids = ["dr-promotion/lab"] + [f"dr-promotion/lab/venue/{v}/epoch-2/try-1" for v in VENUES]
    replayed = asyncio.run(
        replay_and_record(scenario.lab.root / "topology.toml", ids, "per-venue-release")
    )
    assert replayed == 4


def _step(report: PromotionReport, name: str) -> Any:
    return next(s for s in report.steps if s.name == name and s.status == "completed")
