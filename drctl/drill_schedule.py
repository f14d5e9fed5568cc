"""A system's monthly drill as a Temporal Schedule, built from its topology.

Overlap SKIP: a drill still running when the next one is due means something is wrong; a second
drill on top of it would only make it worse. A short catch-up window: after a Temporal outage a
missed drill is dropped rather than fired late, perhaps into market hours. Blackout windows
(``[systems.drill] blackouts``) become the schedule's skip calendar, in the drill timezone; the
Drill workflow checks them again when it starts, so a manual run cannot slip into one either.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)

from domain.drill import DRILL_WORKFLOW, DrillRequest, drill_workflow_id
from domain.promotion import DrKind, region_task_queue
from domain.topology import WEEKDAYS, BlackoutWindow, SystemConfig
from drctl.runbook_commands import start_attributes

SCHEDULE_IDENTITY = "drill-schedule"
# Temporal counts weekdays from Sunday = 0.
_TEMPORAL_DAY = {day: (i + 1) % 7 for i, day in enumerate(WEEKDAYS)}
_EVERY_SECOND = (ScheduleRange(0, 59),)
_EVERY_MINUTE = (ScheduleRange(0, 59),)


def drill_schedule(
    system: SystemConfig, cron: str, timezone: str, request: DrillRequest
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            DRILL_WORKFLOW,
            request,
            # Temporal appends the scheduled time, so every run keeps its own history.
            id=drill_workflow_id(system.name),
            task_queue=region_task_queue(system.dr_region),
            typed_search_attributes=start_attributes(system.name, DrKind.DRILL),
        ),
        spec=ScheduleSpec(
            cron_expressions=[cron],
            skip=blackout_calendars(system.drill.blackouts),
            time_zone_name=timezone,
        ),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            catchup_window=timedelta(seconds=system.drill.catchup_window_s),
        ),
        state=ScheduleState(note=f"drill of {system.name}: {cron} ({timezone})"),
    )


def blackout_calendars(windows: list[BlackoutWindow]) -> list[ScheduleCalendarSpec]:
    """Calendar specs matching every second of each window.

    A calendar matches a set of hours and of minutes independently, so 08:30-16:15 is three
    specs: 08:30-08:59, 09:00-15:59, 16:00-16:14.
    """
    specs: list[ScheduleCalendarSpec] = []
    for window in windows:
        days = tuple(ScheduleRange(_TEMPORAL_DAY[d]) for d in window.days)
        start = window.start.hour * 60 + window.start.minute
        end = window.end.hour * 60 + window.end.minute  # exclusive
        for first, last in _hour_aligned_pieces(start, end):
            specs.append(
                ScheduleCalendarSpec(
                    second=_EVERY_SECOND,
                    minute=(ScheduleRange(first % 60, last % 60),)
                    if first // 60 == last // 60
                    else _EVERY_MINUTE,
                    hour=(ScheduleRange(first // 60, last // 60),),
                    day_of_week=days,
                    comment=f"blackout {window.describe()}",
                )
            )
    return specs


def _hour_aligned_pieces(start: int, end: int) -> list[tuple[int, int]]:
    """Split minutes [start, end) into pieces that are either inside one hour or whole hours,
    each as (first minute, last minute) inclusive."""
    pieces: list[tuple[int, int]] = []
    cursor = start
    if cursor % 60:
        stop = min(end, cursor - cursor % 60 + 60)
        pieces.append((cursor, stop - 1))
        cursor = stop
    whole_end = end - end % 60
    if cursor < whole_end:
        pieces.append((cursor, whole_end - 1))
        cursor = whole_end
    if cursor < end:
        pieces.append((cursor, end - 1))
    return pieces
