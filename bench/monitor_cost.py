"""What the health monitor costs while nothing happens, and how fast it reacts when it does.

Starts a lab and a monitor (three vantage points), lets it watch a healthy system for a while,
counts the history events and billable actions (workflow and activity starts, timers, updates)
that the healthy period added, then kills the primary and times detection: from the kill to the
start of the promotion the monitor launches. Target: <= 60 actions per target-hour while still
detecting within confirmation_count x interval_s + one interval.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from domain.monitoring import SYSTEM_MONITOR_WORKFLOW, SystemMonitorRequest, monitor_workflow_id
from domain.promotion import promotion_workflow_id
from domain.topology import load_topology
from lab import stack
from lab.stack import LabPaths

HEALTHY_WINDOW_S = 60.0
# What Temporal bills as actions among the events a monitor's history can hold.
ACTION_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
}


async def measure(root: Path) -> dict[str, Any]:
    topology = load_topology(LabPaths(root).topology)
    client = await Client.connect(topology.temporal.address, data_converter=pydantic_data_converter)
    handle = await client.start_workflow(
        SYSTEM_MONITOR_WORKFLOW,
        SystemMonitorRequest(system="lab"),
        id=monitor_workflow_id("lab"),
        task_queue="region-dr",
    )
    await asyncio.sleep(5)  # let the first verdicts settle before the healthy window opens
    before = await _counts(client, handle.id)
    await asyncio.sleep(HEALTHY_WINDOW_S)
    after = await _counts(client, handle.id)
    events = after[0] - before[0]
    actions = after[1] - before[1]
    # A healthy watch reports once per lifetime: that is the steady state, per vantage point.
    lifetime_s = 600.0
    steady_actions_per_hour = len(topology.vantage_points) * 3600 / lifetime_s
    stack.chaos(root, "kill", "primary", None, 0)
    killed = time.time()
    promotion = client.get_workflow_handle(promotion_workflow_id("lab"))
    while True:
        try:
            started = (await promotion.describe()).start_time.timestamp()
            break
        except RPCError:  # not started yet
            await asyncio.sleep(0.05)
    await handle.terminate("benchmark over")
    health = topology.health
    return {
        "vantage_points": len(topology.vantage_points),
        "healthy_window_s": HEALTHY_WINDOW_S,
        "healthy_events": events,
        "healthy_actions": actions,
        "events_per_hour_measured": events * 3600 / HEALTHY_WINDOW_S,
        "actions_per_hour_measured": actions * 3600 / HEALTHY_WINDOW_S,
        "actions_per_hour_steady_state": steady_actions_per_hour,
        "naive_loop_actions_per_hour": 2 * 3600 / health.interval_s,
        "detection_s": started - killed,
        "detection_budget_s": health.detection_window_s + health.interval_s,
    }


async def _counts(client: Client, workflow_id: str) -> tuple[int, int]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    events = list(history.events)
    return len(events), sum(1 for e in events if e.event_type in ACTION_EVENTS)


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        root = Path(tmp)
        stack.up(root, stack.choose_ports(auto=True))
        try:
            return asyncio.run(measure(root))
        finally:
            stack.down(root)


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
