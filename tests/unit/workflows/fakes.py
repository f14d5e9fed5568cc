"""Fake activities for workflow-logic tests: same names as the real ones, scripted answers.

Only the workflow's decisions are under test here; the real activities are tested against real
components in tests/integration and tests/lab.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.alerts import Alert, NotifyResult
from activities.database import DbEpochRequest, DbReplicaCheck, DbStepRequest
from activities.dns import DnsChangeResult, DnsUpdateRequest
from activities.lease_activities import AcquireLeaseRequest
from activities.oms import (
    ActivateRequest,
    BookRequest,
    FenceRequest,
    ProbeRequest,
    ReleaseRequest,
    SyncRequest,
)
from activities.plan import PlanRequest, PositionsRequest
from activities.reconcile import ReconcileRequest, StillOpen, StillOpenRequest, VenueDiff
from activities.venues import CancelRequest, LogoutRequest, SessionRequest
from domain.book import BookSnapshot, Order, Side, Watermark
from domain.database import DbFence, DbPromotion, ReplicaLag
from domain.lease import LeaseRecord
from domain.promotion import (
    CancelOutcome,
    ControlOutcome,
    FenceOutcome,
    LeaseGrant,
    PositionCheck,
    PrimaryConfirmation,
    ProbeObservation,
    PromotionPlan,
    ReplicationGap,
    VenueSessionGrant,
)
from domain.reconciliation import DiscrepancyKind, classify_orders
from domain.venues import OrderReport, OrderReports

T0 = datetime(2026, 11, 2, 10, 2, tzinfo=UTC)


def order(cid: str, venue: str = "alpha", epoch: int = 1, qty: int = 5) -> Order:
    return Order(
        client_order_id=cid, venue=venue, venue_order_id=f"v-{cid}", epoch=epoch,
        symbol="AAPL", side=Side.BUY, qty=qty, price=Decimal("100"),
        created_at=T0 - timedelta(minutes=5), updated_at=T0 - timedelta(minutes=5),
    )  # fmt: skip


class FakeLab:
    """Scripted answers; ``calls`` records every activity invocation by name."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.alerts: list[Alert] = []
        self.primary_down = True
        self.tolerance = Decimal(0)
        self.decision_timeout_s = 60.0
        self.dr_orders: list[Order] = [order("E1-a")]
        self.venue_orders: list[Order] = [order("E1-a")]
        self.fail_release_times = 0
        self.venues = ["alpha"]
        # The venues of each release call, in order (None: every venue, the old protocol).
        self.releases: list[list[str] | None] = []
        # Venue -> seconds its first logon is refused for (a Retry-After / reconnect cooldown).
        self.cooldowns: dict[str, float] = {}
        self.has_database = False
        self.db_lag_bytes = 0
        self.db_unreachable = False

    def activities(self) -> list[Any]:
        lab = self

        @activity.defn(name="load_promotion_plan")
        async def load_promotion_plan(request: PlanRequest) -> PromotionPlan:
            lab.calls.append("load_promotion_plan")
            if request.system != "lab":
                raise ApplicationError(f"no system named {request.system!r}", non_retryable=True)
            return PromotionPlan(
                system="lab", production=False, from_region="primary", to_region="dr",
                from_oms_url="http://primary", to_oms_url="http://dr", venues=lab.venues,
                accounts={v: "lab" for v in lab.venues},
                discrepancy_tolerance_notional=lab.tolerance,
                fill_lookback_margin_s=5, approval_timeout_s=600,
                decision_timeout_s=lab.decision_timeout_s, sync_timeout_s=10,
                confirmation_count=3, probe_interval_s=1, lease_ttl_s=3,
                ui_url="http://ui", dns_active="dr", has_database=lab.has_database,
                loaded_on=activity.info().task_queue,
            )  # fmt: skip

        @activity.defn(name="confirm_primary_down")
        async def confirm_primary_down(request: ProbeRequest) -> PrimaryConfirmation:
            lab.calls.append("confirm_primary_down")
            seen = ProbeObservation(at=T0, ok=not lab.primary_down, latency_ms=3, detail="x")
            return PrimaryConfirmation(down=lab.primary_down, observations=[seen] * 3)

        @activity.defn(name="read_lease")
        async def read_lease(system: str) -> LeaseRecord | None:
            lab.calls.append("read_lease")
            return LeaseRecord(
                system=system, region="primary", epoch=1, holder="oms", renewed_at=T0, ttl_s=3
            )

        @activity.defn(name="acquire_lease")
        async def acquire_lease(request: AcquireLeaseRequest) -> LeaseGrant:
            lab.calls.append("acquire_lease")
            return LeaseGrant(
                epoch=2, region="dr", previous_region="primary", previous_expires_at=None
            )

        @activity.defn(name="fence_primary")
        async def fence_primary(request: FenceRequest) -> FenceOutcome:
            lab.calls.append("fence_primary")
            return FenceOutcome(confirmed=False, detail="unreachable")

        @activity.defn(name="sync_dr_state")
        async def sync_dr_state(request: SyncRequest) -> ReplicationGap:
            lab.calls.append("sync_dr_state")
            return ReplicationGap(
                stream_last_seq=10, applied_before=9, applied_after=10, lag_before_s=0.1
            )

        @activity.defn(name="fetch_dr_book")
        async def fetch_dr_book(request: BookRequest) -> BookSnapshot:
            lab.calls.append("fetch_dr_book")
            return BookSnapshot(
                open_orders=lab.dr_orders,
                positions={},
                watermark=Watermark(seq=10, published_at=T0),
            )

        @activity.defn(name="activate_dr")
        async def activate_dr(request: ActivateRequest) -> ControlOutcome:
            lab.calls.append("activate_dr")
            return ControlOutcome(trading_state="reduce_only", epoch=request.epoch)

        @activity.defn(name="release_trading")
        async def release_trading(request: ReleaseRequest) -> ControlOutcome:
            lab.calls.append("release_trading")
            lab.releases.append(request.venues)
            if lab.fail_release_times > 0:
                lab.fail_release_times -= 1
                raise ApplicationError("OMS refused /control/release", non_retryable=True)
            return ControlOutcome(trading_state="trading", epoch=request.epoch)

        @activity.defn(name="verify_positions")
        async def verify_positions(request: PositionsRequest) -> PositionCheck:
            lab.calls.append("verify_positions")
            return PositionCheck(discrepancies=[], positions={}, rounds=1)

        @activity.defn(name="update_dns")
        async def update_dns(request: DnsUpdateRequest) -> DnsChangeResult:
            lab.calls.append("update_dns")
            return DnsChangeResult(
                record="oms.lab.example.", changed=True, change_id="c1", status="INSYNC",
                weights={"dr": 100, "primary": 0},
            )  # fmt: skip

        @activity.defn(name="notify")
        async def notify(alert: Alert) -> NotifyResult:
            lab.alerts.append(alert)
            return NotifyResult(delivered=["oncall"], skipped=[])

        @activity.defn(name="connect_session")
        async def connect_session(request: SessionRequest) -> VenueSessionGrant:
            lab.calls.append("connect_session")
            cooldown = lab.cooldowns.pop(request.venue, None)
            if cooldown is not None:
                raise ApplicationError(
                    "reconnect cooldown", type="ReconnectCooldown",
                    next_retry_delay=timedelta(seconds=cooldown),
                )  # fmt: skip
            return VenueSessionGrant(
                venue=request.venue, session_id="s1", waited_for_cooldown=False
            )

        @activity.defn(name="logout_session")
        async def logout_session(request: LogoutRequest) -> None:
            lab.calls.append("logout_session")

        @activity.defn(name="reconcile_venue")
        async def reconcile_venue(request: ReconcileRequest) -> VenueDiff:
            lab.calls.append("reconcile_venue")
            at_venue = [o for o in lab.venue_orders if o.venue == request.venue]
            reports = OrderReports(
                orders=[OrderReport.model_validate(o.model_dump()) for o in at_venue]
            )
            in_book = [o for o in lab.dr_orders if o.venue == request.venue]
            findings = classify_orders(
                request.venue, reports, in_book, request.new_epoch, request.takeover_at,
            )  # fmt: skip
            matched = [f for f in findings if f.kind is DiscrepancyKind.MATCHED]
            return VenueDiff(
                venue=request.venue, matched=len(matched),
                findings=[f for f in findings if f.kind is not DiscrepancyKind.MATCHED],
                fill_findings=[], rounds=1,
            )  # fmt: skip

        @activity.defn(name="still_open")
        async def still_open(request: StillOpenRequest) -> StillOpen:
            lab.calls.append("still_open")
            open_ids = {o.client_order_id for o in lab.venue_orders}
            return StillOpen(
                venue=request.venue,
                client_order_ids=[c for c in request.client_order_ids if c in open_ids],
            )

        @activity.defn(name="cancel_orders")
        async def cancel_orders(request: CancelRequest) -> CancelOutcome:
            lab.calls.append("cancel_orders")
            cancelled = set(request.client_order_ids)
            lab.venue_orders = [o for o in lab.venue_orders if o.client_order_id not in cancelled]
            return CancelOutcome(
                venue=request.venue, outcomes={c: "cancelled" for c in request.client_order_ids}
            )

        @activity.defn(name="check_db_replica")
        async def check_db_replica(request: DbStepRequest) -> DbReplicaCheck:
            lab.calls.append("check_db_replica")
            if lab.db_unreachable:
                raise ApplicationError("replica at DR_DB_DSN refused the connection")
            lag = ReplicaLag(
                bytes=lab.db_lag_bytes, seconds=0.0, replica_in_recovery=True,
                primary_reachable=False,
            )  # fmt: skip
            beyond = (
                f"{lab.db_lag_bytes} bytes not yet replayed" if lab.db_lag_bytes > 100 else None
            )
            return DbReplicaCheck(lag=lag, max_lag_bytes=100, max_lag_s=5, beyond_maximum=beyond)

        @activity.defn(name="fence_db_primary")
        async def fence_db_primary(request: DbEpochRequest) -> DbFence:
            lab.calls.append("fence_db_primary")
            return DbFence(epoch=request.epoch, fenced_at_primary=False, detail="primary down")

        @activity.defn(name="promote_db_replica")
        async def promote_db_replica(request: DbEpochRequest) -> DbPromotion:
            lab.calls.append("promote_db_replica")
            return DbPromotion(
                promoted=True, already_primary=False, timeline=2, epoch=request.epoch
            )

        return [
            check_db_replica, fence_db_primary, promote_db_replica,
            load_promotion_plan, confirm_primary_down, read_lease, acquire_lease, fence_primary,
            sync_dr_state, fetch_dr_book, activate_dr, release_trading, verify_positions,
            update_dns, notify, connect_session, logout_session, reconcile_venue, still_open,
            cancel_orders,
        ]  # fmt: skip
