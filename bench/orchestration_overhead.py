"""What Temporal adds to each sequential runbook step, against calling the activity directly.

A Temporal dev server runs as the lab runs it, on free ports in a temporary directory; a worker
in this process is configured as ours are (pydantic data converter, sandboxed workflows). A
workflow awaits a no-op activity STEPS times, one after another, as the Promotion awaits its
steps. Per step = (a run with STEPS steps - a run with none) / STEPS, so starting and finishing
the workflow is not charged to the steps; the direct figure awaits the same coroutine in a loop.
The server's event times of the last run then show where a step's time goes.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench.sequential_steps import SequentialStepsWorkflow, StepsRequest, noop_step
from lab import processes, stack
from lab.stack import LabPaths

STEPS = 200
RUNS = 3
TASK_QUEUE = "bench-orchestration"
START_TIMEOUT_S = 60.0
# A direct call takes well under a microsecond: repeat the loop for a figure above timer noise.
DIRECT_LOOPS = 1_000


async def _connect(address: str) -> Client:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            # The port opens before the default namespace exists: wait until it answers.
            await client.count_workflows()
            return client
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _timed_run(client: Client, steps: int) -> tuple[float, WorkflowHandle[Any, int]]:
    started = time.perf_counter()
    handle = await client.start_workflow(
        SequentialStepsWorkflow.run,
        StepsRequest(steps=steps),
        id=f"bench-steps-{steps}-{uuid.uuid4().hex[:8]}",
        task_queue=TASK_QUEUE,
    )
    await handle.result()
    return time.perf_counter() - started, handle


async def _where_a_step_goes(handle: WorkflowHandle[Any, int]) -> dict[str, float]:
    """Median ms per step, from the server's own event times: waiting for a worker to take the
    workflow task, the worker deciding it, and the activity from scheduled to completed."""
    events = list((await handle.fetch_history()).events)
    at = {e.event_id: e.event_time.ToDatetime() for e in events}
    waits, decisions, activities = [], [], []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            scheduled = e.workflow_task_started_event_attributes.scheduled_event_id
            waits.append(at[e.event_id] - at[scheduled])
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            started = e.workflow_task_completed_event_attributes.started_event_id
            decisions.append(at[e.event_id] - at[started])
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
            activities.append(at[e.event_id] - at[scheduled])
    return {
        name: statistics.median(d.total_seconds() for d in durations) * 1000
        for name, durations in (
            ("workflow_task_wait_ms", waits),
            ("workflow_task_ms", decisions),
            ("activity_ms", activities),
        )
    }


async def _direct_per_step_s(steps: int) -> float:
    started = time.perf_counter()
    for _ in range(DIRECT_LOOPS):
        for step in range(steps):
            await noop_step(step)
    return (time.perf_counter() - started) / (DIRECT_LOOPS * steps)


async def measure(address: str, steps: int, runs: int) -> dict[str, Any]:
    client = await _connect(address)
    async with Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[SequentialStepsWorkflow],
        activities=[noop_step],
    ):
        # The first run pays for the sandbox's imports and the task queue's creation.
        await _timed_run(client, 1)
        empty = [(await _timed_run(client, 0))[0] for _ in range(runs)]
        timed = [await _timed_run(client, steps) for _ in range(runs)]
        full = [took for took, _ in timed]
        breakdown = await _where_a_step_goes(timed[-1][1])
    direct_s = await _direct_per_step_s(steps)
    per_step_s = (statistics.median(full) - statistics.median(empty)) / steps
    return {
        "steps": steps,
        "runs": runs,
        "workflow_run_median_s": statistics.median(full),
        "workflow_fixed_median_s": statistics.median(empty),
        "per_step_ms": per_step_s * 1000,
        "direct_per_step_ms": direct_s * 1000,
        "overhead_per_step_ms": (per_step_s - direct_s) * 1000,
        "step_median_ms": breakdown,
    }


def run(steps: int = STEPS, runs: int = RUNS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-temporal-") as tmp:
        paths = LabPaths(Path(tmp))
        paths.data.mkdir(parents=True)
        ports = stack.choose_ports(auto=True)
        _, temporal = stack.build_specs(paths, ports)["temporal"]
        pid = processes.start(temporal)
        try:
            processes.wait_ready(temporal, pid, START_TIMEOUT_S)
            return asyncio.run(measure(f"127.0.0.1:{ports.temporal}", steps, runs))
        finally:
            processes.stop(pid)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
