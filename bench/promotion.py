"""Promotion RTO on the lab, through Temporal and as a plain script: 3 venues x 1,000 open
orders, 50 of them ghosts.

Each run starts a fresh lab (venue reconnect cooldown 0, so the figure is our overhead rather
than a venue's imposed wait), seeds 1,000 replicated open orders per venue (published on the
position stream and resting at the venue) plus 50 ghosts (at the venues only), and kills the
primary. Through Temporal, a running SystemMonitor detects it and starts the promotion with its
quorum evidence: the RTO runs from the monitor's decision to trading released. As a plain
script (bench/plain_promotion.py), the same activities run in order in this process. Runs
alternate between the two. Targets (issue 14): decision -> released p50 <= 0.5 s, lease -> DNS
p50 <= 0.5 s, and the durable promotion within 1.5x the plain one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import nats
from temporalio.client import Client
from temporalio.service import RPCError

from bench.plain_promotion import PlainPromotion
from domain.book import BookEnvelope, Order, OrderEvent, Side
from domain.monitoring import SYSTEM_MONITOR_WORKFLOW, SystemMonitorRequest, monitor_workflow_id
from domain.promotion import PromotionReport, promotion_workflow_id
from domain.topology import load_topology
from lab import stack
from lab.processes import wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import VENUES, venue_key_env
from workflows.data_converter import DATA_CONVERTER

ORDERS_PER_VENUE = 1_000
GHOSTS = 50
DATABASE_STEPS = ("check_db_replica", "fence_db_primary", "promote_db_replica")
MONITOR_SETTLE_S = 5.0
PROMOTION_TIMEOUT_S = 300.0


async def seed(root: Path) -> None:
    topology = load_topology(LabPaths(root).topology)
    secrets = read_secrets(LabPaths(root))
    nc = await nats.connect(topology.replication.nats_url)
    js = nc.jetstream()
    now = datetime.now(UTC)
    async with httpx.AsyncClient(timeout=10) as http:
        limit = asyncio.Semaphore(32)

        components = stack.require_state(root).components

        async def rest(venue: str, body: dict[str, Any]) -> None:
            # The venue's own REST port (its admin API), whatever dialect the topology uses.
            port = components[f"venue-{venue}"].spec.port
            async with limit:
                response = await http.post(
                    f"http://127.0.0.1:{port}/admin/orders",
                    json=body,
                    headers={"X-Api-Key": secrets[venue_key_env(venue)]},
                )
                response.raise_for_status()

        jobs = []
        for venue in VENUES:
            for i in range(ORDERS_PER_VENUE):
                order = Order(
                    client_order_id=f"E1-bench-{venue}-{i:05d}", venue=venue, epoch=1,
                    symbol="AAPL", side=Side.BUY, qty=10, price=Decimal("99.50"), updated_at=now,
                )  # fmt: skip
                envelope = BookEnvelope(
                    system="lab", epoch=1, published_at=now, event=OrderEvent(order=order)
                )
                await js.publish("book.lab.order", envelope.model_dump_json().encode())
                jobs.append(rest(venue, _ticket(order.client_order_id)))
        for i in range(GHOSTS):
            venue = VENUES[i % len(VENUES)]
            jobs.append(rest(venue, _ticket(f"E1-ghost-{uuid.uuid4().hex[:10]}")))
        await asyncio.gather(*jobs)
    await nc.close()


def _ticket(client_order_id: str) -> dict[str, Any]:
    return {
        "client_order_id": client_order_id, "epoch": 1, "symbol": "AAPL", "side": "buy",
        "qty": 10, "price": "99.50", "auto_fill": False,
    }  # fmt: skip


def _seeded_lab(root: Path) -> None:
    """A fresh lab, seeded, with DR in step with the primary."""
    stack.up(root, stack.choose_ports(auto=True), venue_cooldown_s=0)
    asyncio.run(seed(root))
    ports = stack.require_state(root).ports
    dr = f"http://127.0.0.1:{ports.oms_dr}/health"
    primary = f"http://127.0.0.1:{ports.oms_primary}/health"
    target = httpx.get(primary, timeout=5).json()["last_published_seq"]
    wait_until(lambda: httpx.get(dr, timeout=5).json()["last_applied_seq"] >= target, 30)


async def _promoted_by_the_monitor(root: Path) -> tuple[PromotionReport, datetime]:
    """The primary killed under a running SystemMonitor; the promotion it starts, to the end.

    The monitor hands its quorum evidence to the promotion, so the report's RTO runs from the
    monitor's decision (``detected_at``) to trading released."""
    topology = load_topology(LabPaths(root).topology)
    client = await Client.connect(topology.temporal.address, data_converter=DATA_CONVERTER)
    monitor = await client.start_workflow(
        SYSTEM_MONITOR_WORKFLOW,
        SystemMonitorRequest(system="lab"),
        id=monitor_workflow_id("lab"),
        task_queue="region-dr",
    )
    await asyncio.sleep(MONITOR_SETTLE_S)  # its first verdicts, before the fault
    stack.chaos(root, "kill", "primary", None, 0)
    killed_at = datetime.now(UTC)
    promotion = client.get_workflow_handle(
        promotion_workflow_id("lab"), result_type=PromotionReport
    )
    deadline = time.monotonic() + PROMOTION_TIMEOUT_S
    while True:
        try:
            await promotion.describe()
            break
        except RPCError:  # not started yet
            if time.monotonic() > deadline:
                raise RuntimeError("the monitor did not start a promotion") from None
            await asyncio.sleep(0.05)
    report: PromotionReport = await asyncio.wait_for(promotion.result(), PROMOTION_TIMEOUT_S)
    await monitor.terminate("benchmark over")
    return report, killed_at


def temporal_run() -> tuple[PromotionReport, datetime]:
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        root = Path(tmp)
        try:
            _seeded_lab(root)
            return asyncio.run(_promoted_by_the_monitor(root))
        finally:
            stack.down(root)


def plain_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        root = Path(tmp)
        try:
            _seeded_lab(root)
            stack.chaos(root, "kill", "primary", None, 0)
            # Started where the monitor decides: after its confirmation window. Sooner, the old
            # primary's lease (unconfirmed fence) would still have to run out, on this side only.
            time.sleep(load_topology(LabPaths(root).topology).health.detection_window_s)
            return asyncio.run(PlainPromotion(root).run())
        finally:
            stack.down(root)


def run(runs: int = 3) -> dict[str, Any]:
    # Alternated, so a change in the machine's load falls on both sides alike.
    reports: list[PromotionReport] = []
    kill_to_released: list[float | None] = []
    plain: list[dict[str, float]] = []
    for _ in range(runs):
        report, killed_at = temporal_run()
        reports.append(report)
        released = _released_at(report)
        kill_to_released.append((released - killed_at).total_seconds() if released else None)
        plain.append(plain_run())
    steps: dict[str, list[float]] = {}
    for report in reports:
        for step in report.steps:
            if step.duration_s is not None:
                steps.setdefault(step.name, []).append(step.duration_s)
    lease_to_dns = [r.lease_to_dns_s for r in reports if r.lease_to_dns_s is not None]
    # The same span on both sides: first step (the plan) to DNS in sync.
    durable_to_dns = [
        (dns.ended_at - r.started_at).total_seconds()
        for r in reports
        for dns in r.steps
        if dns.name == "update_dns" and dns.status == "completed" and dns.ended_at
    ]
    plain_to_dns = statistics.median(p["start_to_dns_s"] for p in plain)
    database = [_database_s(r) for r in reports]
    sync = [_step_s(r, "sync_dr_state") if _database_s(r) else None for r in reports]
    return {
        "runs": runs,
        "orders_per_venue": ORDERS_PER_VENUE,
        "ghosts": GHOSTS,
        "outcomes": [r.outcome.value for r in reports],
        "ghosts_cancelled": [sum(r.orders_cancelled.values()) for r in reports],
        "kill_to_released_p50_s": _median(kill_to_released),
        "decision_to_released_p50_s": _median([r.rto_s for r in reports]),
        "decision_to_first_venue_p50_s": _median([r.first_venue_rto_s for r in reports]),
        "lease_to_dns_p50_s": statistics.median(lease_to_dns) if lease_to_dns else None,
        "durable_start_to_dns_p50_s": _median(list(durable_to_dns)),
        "plain_start_to_dns_p50_s": plain_to_dns,
        "plain_start_to_released_p50_s": statistics.median(p["start_to_released_s"] for p in plain),
        "plain_lease_to_dns_p50_s": statistics.median(p["lease_to_dns_s"] for p in plain),
        "database_steps_p50_s": _median(database),
        # The DR OMS loads the promoted database's state in the same sync as the stream.
        "database_sync_p50_s": _median(sync),
        "database_share_of_rto_p50": _median(
            [
                (db + (sy or 0)) / r.rto_s if db is not None and r.rto_s else None
                for db, sy, r in zip(database, sync, reports, strict=True)
            ]
        ),
        "step_p50_s": {name: statistics.median(v) for name, v in steps.items()},
    }


def _released_at(report: PromotionReport) -> datetime | None:
    """When the last venue was released: the RTO's end, on the server's clock."""
    if report.rto_s is None:
        return None
    return (report.detected_at or report.started_at) + timedelta(seconds=report.rto_s)


def _step_s(report: PromotionReport, name: str) -> float | None:
    durations = [s.duration_s for s in report.steps if s.name == name and s.status == "completed"]
    return sum(d for d in durations if d is not None) if durations else None


def _database_s(report: PromotionReport) -> float | None:
    """check_db_replica + fence_db_primary + promote_db_replica; None without a database."""
    steps = [_step_s(report, name) for name in DATABASE_STEPS]
    return sum(s for s in steps if s is not None) if any(s is not None for s in steps) else None


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
