"""Stand-ins for the Promotion and Failback runbooks, for tests of the runbooks that start them.

In their own module: the workflow sandbox re-imports a workflow's module, and these must not
drag a test module's imports in with them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.drill import FailbackReport
    from domain.promotion import (
        DrKind,
        DrOutcome,
        PromotionReport,
        ReplicationGap,
        StepRecord,
    )

T0 = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)


def promotion_report(
    outcome: DrOutcome = DrOutcome.PROMOTED, rto_s: float = 4.0
) -> PromotionReport:
    released = StepRecord(
        name="release_trading",
        started_at=T0 + timedelta(seconds=rto_s - 0.1),
        ended_at=T0 + timedelta(seconds=rto_s),
        attempts=1,
        status="completed",
    )
    stopped = StepRecord(
        name="deactivate_primary",
        started_at=T0,
        ended_at=T0 + timedelta(seconds=0.1),
        attempts=1,
        status="completed",
    )
    return PromotionReport(
        workflow_id="dr-promotion/lab", system="lab", kind=DrKind.DRILL, planned=True,
        requested_by="alice", reason="", outcome=outcome, outcome_detail="scripted",
        from_region="primary", to_region="dr", epoch=2, previous_epoch=1,
        started_at=T0, finished_at=T0 + timedelta(seconds=rto_s), detected_at=T0,
        rto_s=rto_s, lease_to_dns_s=1.0,
        steps=[stopped, released] if outcome is DrOutcome.PROMOTED else [stopped],
        confirmation=None, fence=None,
        replication_gap=ReplicationGap(
            stream_last_seq=10, applied_before=9, applied_after=10, lag_before_s=0.1
        ),
        venues=[], position_discrepancies=[], discrepancy_notional=Decimal(0), actions=[],
        dns_changed=True, ui_url="",
    )  # fmt: skip


@workflow.defn(name="Promotion")
class ScriptedPromotion:
    outcome = DrOutcome.PROMOTED
    rto_s = 4.0

    @workflow.run
    async def run(self, raw: dict[str, Any]) -> PromotionReport:
        return promotion_report(ScriptedPromotion.outcome, ScriptedPromotion.rto_s)


@workflow.defn(name="Failback")
class ScriptedFailback:
    @workflow.run
    async def run(self, raw: dict[str, Any]) -> FailbackReport:
        return FailbackReport(
            workflow_id="dr-failback/lab", system="lab", from_region="dr", to_region="primary",
            outcome=DrOutcome.PROMOTED, outcome_detail="primary trading at epoch 3",
            started_at=T0, finished_at=T0, steps=[], resync=None, promotion=None,
            monitor_following="primary",
        )  # fmt: skip
