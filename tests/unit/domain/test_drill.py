"""How a drill is asked for, measured and judged, and when its blackout windows apply."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from pydantic import ValidationError
from temporalio.client import ScheduleRange

from domain.drill import (
    DrillObjectives,
    DrillPlan,
    DrillRequest,
    DrillScenario,
    FaultRecord,
    blackout_at,
    judge,
    measure,
)
from domain.promotion import DrOutcome
from domain.topology import BlackoutWindow, DrillConfig, TopologyError, parse_topology
from drctl.drill_schedule import blackout_calendars
from lab.topology_gen import LabPorts, lab_topology_toml
from tests.unit.workflows.scripted_runbooks import T0, promotion_report

MARKET_HOURS = BlackoutWindow(start=time(8, 0), end=time(16, 30), reason="market hours")


def plan(lab_control: bool) -> DrillPlan:
    return DrillPlan(
        system="lab", production=False, primary_region="primary", dr_region="dr",
        primary_oms_url="http://p", dr_oms_url="http://d", lab_control=lab_control,
        blackout=None, approval_timeout_s=60, ui_url="",
    )  # fmt: skip


def test_the_ui_minimum_is_a_complete_request_and_picks_the_scenario_from_the_system() -> None:
    request = DrillRequest.model_validate({"system": "lab"})
    assert request.failback and not request.allow_production
    assert request.objectives == DrillObjectives()
    assert plan(lab_control=True).scenario_for(request) is DrillScenario.KILL_PRIMARY
    assert plan(lab_control=False).scenario_for(request) is DrillScenario.PLANNED_SWITCHOVER


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({"system": "lab", "scenario": "pull-the-plug"}, "scenario"),
        ({"system": "lab", "objectives": {"max_rto_s": 0}}, "objectives.max_rto_s"),
        ({"system": "lab", "objetives": {}}, "objetives"),
        ({"system": "lab", "approver": "Temporal-UI"}, "second, named identity"),
        ({"system": "Lab System"}, "system"),
    ],
)
def test_a_bad_request_names_what_is_wrong(raw: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError) as error:
        DrillRequest.model_validate(raw)
    assert complaint in str(error.value)


def test_kill_primary_measures_from_the_fault() -> None:
    fault = FaultRecord(action="kill", target="primary", at=T0 - timedelta(seconds=3), detail="")
    report = promotion_report(rto_s=4.0)
    measured = measure(DrillScenario.KILL_PRIMARY, fault, report)
    # The monitor detected at T0 (3 s after the kill); trading resumed at T0 + 4 s.
    assert (measured.detection_s, measured.rto_s) == (3.0, 7.0)
    assert measured.replication_gap_events == 0 and measured.behind_before_events == 1


def test_a_planned_switchover_measures_from_trading_stopping_and_has_no_detection() -> None:
    measured = measure(DrillScenario.PLANNED_SWITCHOVER, None, promotion_report(rto_s=2.5))
    assert (measured.detection_s, measured.rto_s) == (None, 2.5)


def test_every_missed_objective_is_a_reason() -> None:
    fault = FaultRecord(action="kill", target="primary", at=T0 - timedelta(seconds=40), detail="")
    report = promotion_report(rto_s=4.0)
    assert report.replication_gap is not None
    report.replication_gap = report.replication_gap.model_copy(update={"applied_after": 7})
    measured = measure(DrillScenario.KILL_PRIMARY, fault, report)
    objectives = DrillObjectives(max_rto_s=10)
    reasons = judge(DrillScenario.KILL_PRIMARY, objectives, measured, report, None, True)
    assert reasons == [
        "detection took 40.00 s, objective 30 s",
        "RTO 44.00 s exceeds objective 10 s",
        "replication gap of 3 event(s) exceeds objective 0",
        "failback did not run",
    ]
    assert judge(DrillScenario.KILL_PRIMARY, objectives, measured, report, None, False)[-1] == (
        "replication gap of 3 event(s) exceeds objective 0"
    )


def test_a_promotion_that_did_not_promote_fails_the_drill_with_its_detail() -> None:
    report = promotion_report(DrOutcome.HELD_REDUCE_ONLY)
    measured = measure(DrillScenario.PLANNED_SWITCHOVER, None, report)
    reasons = judge(
        DrillScenario.PLANNED_SWITCHOVER, DrillObjectives(), measured, report, None, False
    )
    assert reasons == ["promotion ended held_reduce_only: scripted"]


def test_blackouts_apply_in_the_drill_timezone() -> None:
    config = DrillConfig(timezone="America/New_York", blackouts=[MARKET_HOURS])
    # Monday 2026-11-02 at 14:00 UTC is 09:00 in New York: market hours.
    monday_0900_ny = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
    assert blackout_at(monday_0900_ny, config) == MARKET_HOURS
    assert blackout_at(monday_0900_ny - timedelta(hours=2), config) is None
    assert blackout_at(monday_0900_ny + timedelta(days=5), config) is None, "a Saturday"
    # 16:30 is the end, exclusive.
    assert blackout_at(datetime(2026, 11, 2, 21, 30, tzinfo=UTC), config) is None


def test_a_blackout_becomes_skip_calendars_covering_exactly_its_minutes() -> None:
    specs = blackout_calendars([MARKET_HOURS])
    # 08:00-16:29 on weekdays: whole hours 8-15, then 16:00-16:29.
    assert [(s.hour, s.minute) for s in specs] == [
        ((ScheduleRange(8, 15),), (ScheduleRange(0, 59),)),
        ((ScheduleRange(16, 16),), (ScheduleRange(0, 29),)),
    ]
    assert all(s.day_of_week == tuple(ScheduleRange(d) for d in (1, 2, 3, 4, 5)) for s in specs)
    assert specs[0].second == (ScheduleRange(0, 59),)
    ragged = blackout_calendars([BlackoutWindow(start=time(9, 45), end=time(10, 15))])
    assert [(s.hour, s.minute) for s in ragged] == [
        ((ScheduleRange(9, 9),), (ScheduleRange(45, 59),)),
        ((ScheduleRange(10, 10),), (ScheduleRange(0, 14),)),
    ]


@pytest.mark.parametrize(
    ("drill_toml", "complaint"),
    [
        ('timezone = "Mars/Olympus"', "systems[0].drill.timezone: unknown timezone"),
        (
            'blackouts = [{start = "22:00", end = "02:00"}]',
            "a window that crosses midnight is written as two windows",
        ),
        ('blackouts = [{start = "08:00", end = "17:00", days = ["monday"]}]', "days[0]"),
    ],
)
def test_bad_drill_config_names_the_field(drill_toml: str, complaint: str) -> None:
    text = lab_topology_toml(LabPorts()).replace(
        "\n[systems.dns]", f"\n[systems.drill]\n{drill_toml}\n\n[systems.dns]", 1
    )
    with pytest.raises(TopologyError) as error:
        parse_topology(text, "topology.toml")
    assert "topology.toml: " in str(error.value) and complaint in str(error.value)


def test_the_lab_topology_names_its_control_api_by_variable_not_value() -> None:
    topology = parse_topology(lab_topology_toml(LabPorts()))
    assert topology.lab is not None
    assert topology.lab.api_key_env == "LAB_CONTROL_API_KEY"
    assert topology.systems[0].drill == DrillConfig()
