"""Drills and failbacks reviewed: pass or fail with the reasons, objectives beside what was
measured, and the promotion and failback they ran. No lab drill is recorded yet, so the results
are built from the domain's own report models around the recorded promotion's report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from domain.drill import (
    DrillMeasurements,
    DrillObjectives,
    DrillReport,
    DrillScenario,
    FailbackReport,
    FaultRecord,
)
from domain.promotion import DrOutcome, PromotionReport, StepRecord
from domain.review import summarize_drill
from drctl.history_reader import read_history
from drctl.report_render import render
from tests.unit.review.recorded import UNPLANNED, Document, document, history, result_of, set_result

PROMOTION = PromotionReport.model_validate(result_of(document(UNPLANNED)))


def drill_report(passed: bool) -> DrillReport:
    at = PROMOTION.started_at
    failback = FailbackReport(
        workflow_id="dr-failback/lab",
        system="lab",
        from_region="dr",
        to_region="primary",
        outcome=DrOutcome.PROMOTED,
        outcome_detail="primary trading at epoch 3",
        started_at=at + timedelta(seconds=20),
        finished_at=at + timedelta(seconds=31),
        steps=[
            StepRecord(
                name="resync_primary",
                started_at=at + timedelta(seconds=20),
                ended_at=at + timedelta(seconds=23),
                attempts=1,
                status="completed",
            )
        ],
        resync=PROMOTION.replication_gap,
        promotion=PROMOTION.model_copy(update={"rto_s": 4.25, "epoch": 3, "previous_epoch": 2}),
        monitor_following="primary",
    )
    return DrillReport(
        workflow_id="dr-drill/lab",
        system="lab",
        scenario=DrillScenario.KILL_PRIMARY,
        requested_by="temporal-ui",
        reason="monthly",
        outcome=DrOutcome.PASSED if passed else DrOutcome.FAILED,
        passed=passed,
        reasons=[] if passed else ["RTO 61.20 s exceeds objective 60 s"],
        objectives=DrillObjectives(),
        measured=DrillMeasurements(
            detection_s=3.1, rto_s=9.4 if passed else 61.2, replication_gap_events=0
        ),
        fault=FaultRecord(action="kill", target="primary", at=at, detail="SIGKILL oms-primary"),
        started_at=at,
        finished_at=at + timedelta(seconds=32),
        steps=[
            StepRecord(
                name="inject_fault",
                started_at=at,
                ended_at=at + timedelta(seconds=0.2),
                attempts=1,
                status="completed",
            )
        ],
        promotion=PROMOTION,
        failback=failback,
        actions=[],
        ui_url="http://127.0.0.1:8233/",
    )


def run_of(workflow_type: str, result: DrillReport | FailbackReport) -> Callable[[Document], None]:
    """An edit making the recorded promotion's history a run of ``workflow_type``."""

    def edit(doc: Document) -> None:
        start = doc["events"][0]["workflowExecutionStartedEventAttributes"]
        start["workflowType"]["name"] = workflow_type
        set_result(doc, result.model_dump(mode="json"))

    return edit


def test_a_failed_drill_shows_why_and_each_objective_beside_its_measurement() -> None:
    report = drill_report(passed=False)
    review = read_history(history(UNPLANNED, run_of("Drill", report)))
    drill = review.drill
    assert drill is not None and review.promotion is None
    assert drill.passed is False and drill.reasons == ["RTO 61.20 s exceeds objective 60 s"]
    assert [(c.name, c.objective, c.measured, c.met) for c in drill.objectives] == [
        ("detection", 30.0, 3.1, True),
        ("RTO", 60.0, 61.2, False),
        ("replication gap", 0.0, 0.0, True),
    ]
    assert drill.promotion is not None and drill.promotion.rto_s == PROMOTION.rto_s
    assert drill.failback is not None and drill.failback.promotion is not None
    assert drill.failback.promotion.epoch == 3 and drill.failback.resync is not None
    markdown = render(review, "md")
    assert "| verdict | FAILED |" in markdown
    assert "| RTO | 60 s | 61.2 s | no |" in markdown
    for section in (
        "Drill promotion: RTO breakdown",
        "Drill Failback steps",
        "Drill Failback promotion: Venues",
    ):
        assert f"\n## {section}\n" in markdown
    assert "drill FAILED" in render(review, "html")


def test_a_passing_drill_says_so_and_gives_no_reasons() -> None:
    review = read_history(history(UNPLANNED, run_of("Drill", drill_report(True))))
    assert review.drill is not None and review.drill.passed is True
    markdown = render(review, "md")
    assert "| verdict | PASSED |" in markdown
    assert "_nothing: every objective was met_" in markdown


def test_a_planned_switchover_drill_is_not_judged_on_detection() -> None:
    raw = drill_report(True).model_dump(mode="json") | {"scenario": "planned-switchover"}
    drill = summarize_drill(raw, [])
    assert drill is not None
    assert [c.name for c in drill.objectives] == ["RTO", "replication gap"]


def test_a_failback_run_is_reviewed_from_its_own_report() -> None:
    failback = drill_report(True).failback
    assert failback is not None

    review = read_history(history(UNPLANNED, run_of("Failback", failback)))
    assert review.failback is not None and review.failback.to_region == "primary"
    assert review.outcome == "promoted"
    markdown = render(review, "md")
    assert "\n## Failback\n" in markdown and "\n## Failback promotion: RTO breakdown\n" in markdown
