"""The runbook shape reduced to its orchestration: N activity steps, one after another.

Used by bench/orchestration_overhead.py. Apart from the other benchmark code so the workflow
sandbox imports only this.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

STEP_TIMEOUT = timedelta(seconds=30)


class StepsRequest(BaseModel):
    steps: int


@activity.defn(name="bench_noop_step")
async def noop_step(step: int) -> int:
    """Does nothing, so that what a step costs is all orchestration."""
    return step


@workflow.defn(name="BenchSequentialSteps")
class SequentialStepsWorkflow:
    @workflow.run
    async def run(self, request: StepsRequest) -> int:
        done = 0
        for step in range(request.steps):
            done = await workflow.execute_activity(
                noop_step, step, start_to_close_timeout=STEP_TIMEOUT
            )
        return done
