"""Drills on the real lab, as a desk runs them: started from the Temporal UI's JSON box, by hand
with impossible objectives, and by their monthly schedule; then reviewed from their histories.

One lab for the module, in order: each drill must leave the lab whole for the next one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.drill import DrillReport
from domain.topology import load_topology
from lab.processes import find_binary, wait_until
from lab.stack import LabPaths, read_secrets
from tests.lab.conftest import LabRun, drctl_runbook, replay_and_record, running_lab

DRILL_ID = "dr-drill/lab"
RECORD = "DRCTL_RECORD_HISTORIES"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab(tmp_path_factory) as run:
        started = drctl_runbook(run, "monitor", "start", "--system", "lab")
        assert started.returncode == 0, started.stderr
        assert wait_until(lambda: _all_vantages_healthy(run), 60, poll_s=0.5)
        yield run


def _monitor(lab: LabRun) -> dict[str, Any]:
    result = drctl_runbook(lab, "monitor", "status", "--system", "lab", "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def _all_vantages_healthy(lab: LabRun) -> bool:
    status = _monitor(lab)
    return status["phase"] == "nominal" and set(status["verdicts"].values()) == {"healthy"}


def _drill_result(lab: LabRun, workflow_id: str, timeout_s: float = 240) -> DrillReport:
    async def result() -> DrillReport:
        topology = load_topology(lab.root / "topology.toml")
        client = await Client.connect(
            topology.temporal.address, data_converter=pydantic_data_converter
        )
        handle = client.get_workflow_handle(workflow_id, result_type=DrillReport)
        try:
            async with asyncio.timeout(timeout_s):
                report: DrillReport = await handle.result()
        except TimeoutError:
            # Say where it stuck: the drill's step, and the promotion's.
            progress = await handle.query("progress")
            promotion = drctl_runbook(lab, "status", "--system", "lab").stdout
            raise AssertionError(
                f"{workflow_id} did not finish in {timeout_s:g} s: {progress}\n{promotion}"
            ) from None
        return report

    return asyncio.run(result())


def _secret_values(lab: LabRun) -> list[str]:
    return [v for v in read_secrets(LabPaths(lab.root)).values() if len(v) >= 6]


def _assert_lab_back_on_primary(lab: LabRun) -> None:
    primary = lab.get("oms-primary", "/health")
    assert primary["trading_state"] == "trading"
    # DR is a mirroring standby again, not left fenced with a stale book.
    assert wait_until(lambda: lab.get("oms-dr", "/health")["trading_state"] == "standby", 20)
    assert wait_until(lambda: _monitor(lab)["active_region"] == "primary", 20)
    monitor = _monitor(lab)
    assert not monitor["paused"] and not monitor["needs_ack"]


def test_a_drill_started_as_the_temporal_ui_does_passes_end_to_end(lab: LabRun) -> None:
    topology = load_topology(lab.root / "topology.toml")
    # Exactly what the UI's "Start Workflow" form sends: a type, a queue and one JSON payload.
    started = subprocess.run(
        [
            find_binary("temporal"), "workflow", "start",
            "--address", topology.temporal.address,
            "--type", "Drill", "--task-queue", "region-dr",
            "--workflow-id", DRILL_ID,
            "--input", '{"system":"lab"}',
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr

    report = _drill_result(lab, DRILL_ID)

    assert report.passed, report.reasons
    assert report.scenario.value == "kill-primary"
    assert report.fault is not None and report.fault.detail.startswith("killed oms-primary")
    promotion = report.promotion
    assert promotion is not None
    # The monitor, not the drill, started this promotion: that is what was drilled.
    assert (promotion.requested_by, promotion.kind.value) == ("health-monitor", "incident")
    # Figures, not limits: the drill's own objectives judged them (report.passed above).
    assert report.measured.detection_s is not None and report.measured.rto_s is not None
    assert report.measured.rto_s > report.measured.detection_s
    assert report.measured.replication_gap_events == 0
    failback = report.failback
    assert failback is not None and failback.outcome.value == "promoted"
    assert failback.promotion is not None and failback.promotion.to_region == "primary"
    assert failback.promotion.dns_changed
    assert [a.by for a in failback.promotion.actions] == ["drill-approver"]
    _assert_lab_back_on_primary(lab)
    assert lab.get("oms-primary", "/health")["epoch"] == 3


def test_the_drill_histories_replay_deterministically(lab: LabRun) -> None:
    ids = [DRILL_ID, "dr-failback/lab"]
    assert asyncio.run(replay_and_record(lab.root / "topology.toml", ids, "drill-kill")) == 2


def test_the_drill_report_is_the_same_live_and_from_an_export(lab: LabRun, tmp_path: Path) -> None:
    export = tmp_path / "drill-history.json"
    exported = drctl_runbook(lab, "history", "export", DRILL_ID, "-o", str(export))
    assert exported.returncode == 0, exported.stderr
    outputs: dict[str, str] = {}
    for fmt in ("md", "html", "json"):
        live = drctl_runbook(lab, "report", DRILL_ID, "--format", fmt)
        from_file = drctl_runbook(lab, "report", "--from-file", str(export), "--format", fmt)
        assert live.returncode == 0, live.stderr
        assert from_file.returncode == 0, from_file.stderr
        assert live.stdout == from_file.stdout, fmt
        outputs[fmt] = live.stdout
    review = json.loads(outputs["json"])
    names = [entry["name"] for entry in review["timeline"]]
    assert "await_promotion" in " ".join(names) and "Failback" in " ".join(names)
    assert "PASSED" in outputs["md"] and '<svg class="gantt"' in outputs["html"]
    for secret in _secret_values(lab):
        for text in (*outputs.values(), export.read_text()):
            assert secret not in text


def test_a_second_kill_primary_drill_inside_the_cooldown_is_refused(lab: LabRun) -> None:
    monitor = _monitor(lab)
    last = datetime.fromisoformat(monitor["last_action_at"])
    left = 60 - (datetime.now(UTC) - last).total_seconds()
    assert left > 5, f"the lab's 60 s monitor cooldown has all but run out ({left:.0f} s)"
    result = drctl_runbook(lab, "drill", "run", "--system", "lab", "--wait", "--json")
    assert result.returncode == 1
    report = DrillReport.model_validate_json(result.stdout)
    assert report.outcome.value == "refused"
    assert "cooldown" in report.reasons[0]
    assert report.fault is None, "nothing may be broken when a drill is refused"


def test_a_drill_with_an_impossible_rto_fails_with_the_reason(lab: LabRun) -> None:
    result = drctl_runbook(
        lab, "drill", "run", "--system", "lab", "--scenario", "planned-switchover",
        "--max-rto", "0.001", "--as", "carol", "--wait", "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = DrillReport.model_validate_json(result.stdout)
    assert report.outcome.value == "failed"
    assert len(report.reasons) == 1 and report.reasons[0].startswith("RTO ")
    assert report.reasons[0].endswith("exceeds objective 0.001 s")
    # It failed its objective, yet the switchover and failback themselves worked.
    assert report.promotion is not None and report.promotion.outcome.value == "promoted"
    assert report.failback is not None and report.failback.outcome.value == "promoted"
    _assert_lab_back_on_primary(lab)
    ids = [DRILL_ID, "dr-failback/lab"]
    assert asyncio.run(replay_and_record(lab.root / "topology.toml", ids, "drill-planned")) == 2


def test_a_scheduled_drill_fires_and_passes(lab: LabRun) -> None:
    created = drctl_runbook(
        lab, "drill", "schedule", "--system", "lab", "--cron", "0 7 1 * *",
        "--scenario", "planned-switchover",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "overlap skip" in created.stdout and "next drills: " in created.stdout
    triggered = drctl_runbook(lab, "drill", "schedule", "--system", "lab", "--trigger")
    assert triggered.returncode == 0, triggered.stderr

    def fired() -> list[dict[str, Any]]:
        listed = drctl_runbook(lab, "drill", "schedule", "--list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        return list(rows[0]["recent"]) if rows else []

    assert wait_until(lambda: bool(fired()), 30, poll_s=0.5)
    workflow_id = fired()[0]["workflow_id"]
    assert workflow_id.startswith(f"{DRILL_ID}-")
    report = _drill_result(lab, workflow_id)
    assert report.passed, report.reasons
    assert report.requested_by == "drill-schedule"
    _assert_lab_back_on_primary(lab)

    paused = drctl_runbook(lab, "drill", "schedule", "--system", "lab", "--pause")
    assert paused.returncode == 0, paused.stderr
    listed = json.loads(drctl_runbook(lab, "drill", "schedule", "--list", "--json").stdout)
    assert listed[0]["paused"] is True
    deleted = drctl_runbook(lab, "drill", "schedule", "--system", "lab", "--delete")
    assert deleted.returncode == 0, deleted.stderr
    gone = drctl_runbook(lab, "drill", "schedule", "--system", "lab")
    assert gone.returncode == 1 and "no drill schedule for lab" in gone.stderr


def test_incidents_list_every_drill_without_a_credential(lab: LabRun) -> None:
    result = drctl_runbook(lab, "incidents", "--system", "lab", "--kind", "drill", "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    drills = [r for r in runs if r["workflow_type"] == "Drill"]
    assert sorted(r["outcome"] for r in drills) == ["failed", "passed", "passed", "refused"]
    # Their failbacks and planned promotions are drills too; the monitor's promotion is not.
    assert {r["workflow_type"] for r in runs} == {"Drill", "Failback", "Promotion"}
    assert all(r["kind"] == "drill" for r in runs)
    for secret in _secret_values(lab):
        assert secret not in result.stdout
