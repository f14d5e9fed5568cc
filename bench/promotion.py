"""Promotion RTO breakdown on the lab: 3 venues x 1,000 open orders, 50 of them ghosts.

Each run starts a fresh lab (venue reconnect cooldown 0, so the figure is our overhead rather
than a venue's imposed wait), seeds 1,000 replicated open orders per venue (published on the
position stream and resting at the venue) plus 50 ghosts (at the venues only), kills the
primary, and runs `drctl failover --wait`. Target: p50 <= 1 s from lease to DNS in sync.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import nats

from domain.book import BookEnvelope, Order, OrderEvent, Side
from domain.promotion import PromotionReport
from domain.topology import load_topology
from lab import stack
from lab.processes import wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import VENUES, venue_key_env

ORDERS_PER_VENUE = 1_000
GHOSTS = 50


async def seed(root: Path) -> None:
    topology = load_topology(LabPaths(root).topology)
    secrets = read_secrets(LabPaths(root))
    nc = await nats.connect(topology.replication.nats_url)
    js = nc.jetstream()
    now = datetime.now(UTC)
    async with httpx.AsyncClient(timeout=10) as http:
        limit = asyncio.Semaphore(32)

        async def rest(venue: str, body: dict[str, Any]) -> None:
            config = topology.venue(venue)
            async with limit:
                response = await http.post(
                    f"{str(config.url).rstrip('/')}/admin/orders",
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


def one_run() -> PromotionReport:
    with tempfile.TemporaryDirectory(prefix="bench-lab-") as tmp:
        root = Path(tmp)
        stack.up(root, stack.choose_ports(auto=True), venue_cooldown_s=0)
        try:
            asyncio.run(seed(root))
            dr = f"http://127.0.0.1:{stack.require_state(root).ports.oms_dr}/health"
            primary = dr.replace(
                str(stack.require_state(root).ports.oms_dr),
                str(stack.require_state(root).ports.oms_primary),
            )
            target = httpx.get(primary, timeout=5).json()["last_published_seq"]
            wait_until(lambda: httpx.get(dr, timeout=5).json()["last_applied_seq"] >= target, 30)
            stack.chaos(root, "kill", "primary", None, 0)
            result = subprocess.run(
                [sys.executable, "-m", "drctl", "--config", str(LabPaths(root).topology),
                 "failover", "--system", "lab", "--wait", "--json", "--as", "bench"],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if result.returncode not in (0, 1) or not result.stdout.strip():
                raise RuntimeError(f"failover failed: {result.stderr.strip()}")
            return PromotionReport.model_validate_json(result.stdout)
        finally:
            stack.down(root)


def run(runs: int = 3) -> dict[str, Any]:
    reports = [one_run() for _ in range(runs)]
    steps: dict[str, list[float]] = {}
    for report in reports:
        for step in report.steps:
            if step.duration_s is not None:
                steps.setdefault(step.name, []).append(step.duration_s)
    lease_to_dns = [r.lease_to_dns_s for r in reports if r.lease_to_dns_s is not None]
    return {
        "runs": runs,
        "orders_per_venue": ORDERS_PER_VENUE,
        "ghosts": GHOSTS,
        "outcomes": [r.outcome.value for r in reports],
        "ghosts_cancelled": [sum(r.orders_cancelled.values()) for r in reports],
        "lease_to_dns_p50_s": statistics.median(lease_to_dns) if lease_to_dns else None,
        "rto_p50_s": statistics.median(r.rto_s for r in reports if r.rto_s is not None),
        "step_p50_s": {name: statistics.median(v) for name, v in steps.items()},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
