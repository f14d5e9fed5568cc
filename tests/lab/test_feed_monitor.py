"""Market-data failover on the real lab: a bad primary source is left, and taken back later.

One lab and one feed monitor for the module; each scenario starts from md-a active and healthy.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from lab.processes import wait_until
from tests.lab.conftest import (
    LabRun,
    drctl_runbook,
    replay_and_record,
    running_lab,
    weights_of,
)

# freshness_threshold_s + confirmation_count x interval_s + one interval, in the lab topology
DETECTION_BUDGET_S = 2.0 + 3 * 1.0 + 1.0
RECOVERY_S = 5 * 1.0 + 5.0  # recovery_count x interval_s + the feed's recovery window


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab(tmp_path_factory) as run:
        started = drctl_runbook(run, "monitor", "start", "--feed", "lab-md")
        assert started.returncode == 0, started.stderr
        yield run


def feed(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "monitor", "status", "--feed", "lab-md", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def settled_on_md_a(lab: LabRun) -> bool:
    status = feed(lab)
    return status["active"] == "md-a" and set(status["source_verdicts"].values()) == {"healthy"}


def dns_weights(lab: LabRun) -> dict[str, int]:
    return weights_of(lab, "md.lab.example.")


def fault_moves_the_feed_to_md_b(lab: LabRun, fault: str) -> float:
    assert wait_until(lambda: settled_on_md_a(lab), 40, poll_s=0.5)
    faulted_at = time.time()
    assert lab.drctl("chaos", fault, "md", "md-a").returncode == 0
    assert wait_until(lambda: feed(lab)["active"] == "md-b", 20, poll_s=0.2)
    assert lab.drctl("chaos", "heal", "md", "md-a").returncode == 0
    # From the fault to the switch as the monitor recorded it (not when this test noticed).
    switched_at = datetime.fromisoformat(feed(lab)["switches"][-1]["at"]).timestamp()
    return switched_at - faulted_at


def test_stale_ticks_move_the_feed_to_the_secondary_and_everything_follows(lab: LabRun) -> None:
    took = fault_moves_the_feed_to_md_b(lab, "stale")
    assert took > 0  # the switch followed the fault; how fast is a figure in bench/
    assert dns_weights(lab) == {"md-a": 0, "md-b": 100, "md-c": 0}
    assert wait_until(lambda: lab.get("md-consumer", "/health")["following"] == "md-b", 5)
    assert wait_until(lambda: lab.get("md-consumer", "/health")["last_tick_source"] == "md-b", 5)
    assert "md-a down" in feed(lab)["switches"][-1]["reason"]


def test_the_primary_source_is_taken_back_only_after_the_recovery_window(lab: LabRun) -> None:
    healed = time.monotonic()
    assert wait_until(lambda: feed(lab)["active"] == "md-a", RECOVERY_S + 15, poll_s=0.3)
    assert time.monotonic() - healed >= 5.0  # never before the recovery window
    assert "recovery window" in feed(lab)["switches"][-1]["reason"]
    assert dns_weights(lab) == {"md-a": 100, "md-b": 0, "md-c": 0}
    assert wait_until(lambda: lab.get("md-consumer", "/health")["following"] == "md-a", 5)


def test_duplicated_sequence_numbers_move_the_feed(lab: LabRun) -> None:
    assert fault_moves_the_feed_to_md_b(lab, "dup-seq") > 0
    assert "md-a down" in feed(lab)["switches"][-1]["reason"]


def test_reversed_sequence_numbers_move_the_feed(lab: LabRun) -> None:
    assert fault_moves_the_feed_to_md_b(lab, "reversed-seq") > 0


def test_a_partitioned_vantage_point_alone_moves_nothing(lab: LabRun) -> None:
    assert wait_until(lambda: settled_on_md_a(lab), 40, poll_s=0.5)
    switches = len(feed(lab)["switches"])
    assert lab.drctl("chaos", "partition", "vantage", "obs-a").returncode == 0
    try:
        assert wait_until(lambda: feed(lab)["vantage_verdicts"]["md-a"]["obs-a"] == "down", 15)
        assert not wait_until(lambda: len(feed(lab)["switches"]) != switches, DETECTION_BUDGET_S)
        assert feed(lab)["active"] == "md-a"
    finally:
        assert lab.drctl("chaos", "heal", "vantage", "obs-a").returncode == 0


def test_a_paused_feed_monitor_watches_but_never_switches(lab: LabRun) -> None:
    assert wait_until(lambda: settled_on_md_a(lab), 40, poll_s=0.5)
    paused = drctl_runbook(lab, "monitor", "pause", "--feed", "lab-md", "--as", "maint")
    assert paused.returncode == 0 and paused.stdout.strip() == "paused by maint"
    assert lab.drctl("chaos", "stale", "md", "md-a").returncode == 0
    try:
        assert wait_until(lambda: feed(lab)["source_verdicts"]["md-a"] == "down", 20)
        assert feed(lab)["active"] == "md-a"
        resumed = drctl_runbook(lab, "monitor", "resume", "--feed", "lab-md", "--as", "maint")
        assert resumed.returncode == 0
        # A standing majority DOWN switches as soon as the monitor is resumed.
        assert wait_until(lambda: feed(lab)["active"] == "md-b", 10, poll_s=0.2)
    finally:
        assert lab.drctl("chaos", "heal", "md", "md-a").returncode == 0
    refused = drctl_runbook(lab, "monitor", "ack", "--feed", "lab-md", "--as", "maint")
    assert refused.returncode == 1 and "nothing to acknowledge" in refused.stderr


def test_the_feed_monitor_history_replays_deterministically(lab: LabRun) -> None:
    # Still running: its verdicts, switches and a pause so far replay against today's code.
    replayed = asyncio.run(
        replay_and_record(lab.root / "topology.toml", ["md-monitor/lab-md"], "feed-monitor")
    )
    assert replayed == 1
