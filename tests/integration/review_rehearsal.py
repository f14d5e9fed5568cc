"""A workflow just runbook-shaped enough to be worth reviewing: a step that fails once and is
retried, and an approval. Its own module, importing nothing but Temporal, so the workflow sandbox
can load it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair


@activity.defn(name="acquire_lease")
async def acquire_lease(system: str) -> dict[str, object]:
    if activity.info().attempt == 1:
        raise RuntimeError(f"lease store for {system} unavailable")
    return {"epoch": 2, "attempt": activity.info().attempt}


@workflow.defn(name="ReviewRehearsal")
class ReviewRehearsal:
    def __init__(self) -> None:
        self.approver: str | None = None

    @workflow.run
    async def run(self, request: dict[str, str]) -> dict[str, object]:
        await workflow.wait_condition(lambda: self.approver is not None)
        grant = await workflow.execute_activity(
            "acquire_lease",
            request["system"],
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
        )
        workflow.upsert_search_attributes(
            [SearchAttributePair(SearchAttributeKey.for_keyword("DrOutcome"), "promoted")]
        )
        return {"approved_by": self.approver, "grant": grant}

    @workflow.update
    async def approve(self, approval: dict[str, str]) -> str:
        self.approver = approval["approver"]
        return f"approved by {self.approver}"
