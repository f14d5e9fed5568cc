"""``python -m workers --role ROLE``: poll the task queues of one region or vantage point.

Roles: ``region-primary``, ``region-dr``, ``vantage-<name>``, or ``all`` (the lab: one process
polling every queue). A worker in the DR region needs nothing from the primary region.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.dns import DnsActivities
from activities.drill import DrillActivities
from activities.feeds import FeedActivities
from activities.lease import LeaseError, LeaseStore, open_lease_store
from activities.lease_activities import LeaseActivities
from activities.oms import OmsActivities
from activities.plan import PlanActivities
from activities.probes import ProbeActivities
from activities.reconcile import ReconcileActivities
from activities.runbook_control import RunbookControlActivities
from activities.venues import VenueActivities
from domain.topology import DEFAULT_TOPOLOGY_PATH, Topology, TopologyError, load_topology
from workers.heartbeats import HeartbeatWhileRunning
from workflows.data_converter import DATA_CONVERTER
from workflows.registry import ALL_WORKFLOWS

log = logging.getLogger("workers")

# A workflow's next task goes to the worker that ran its last one (its cache) for this long,
# then to any worker. The SDK's 10 s default is 10 s of promotion lost when that worker dies.
STICKY_TIMEOUT = timedelta(seconds=2)


def task_queues(topology: Topology, role: str) -> list[str]:
    regions = {f"region-{s.primary_region}" for s in topology.systems} | {
        f"region-{s.dr_region}" for s in topology.systems
    }
    vantages = {v.task_queue for v in topology.vantage_points}
    known = sorted(regions | vantages)
    if role == "all":
        return known
    if role not in known:
        raise ValueError(
            f"unknown role {role!r}; this topology's roles are: all, {', '.join(known)}"
        )
    return [role]


def region_activities(
    topology: Topology, store: LeaseStore, client: Client
) -> list[Callable[..., Any]]:
    """Everything a region's worker can do. All of it runs from the region it promotes."""
    lease = LeaseActivities(store)
    oms = OmsActivities()
    plan = PlanActivities(topology, oms)
    venues = VenueActivities(topology)
    reconcile = ReconcileActivities(topology, oms)
    probes = ProbeActivities()
    feeds = FeedActivities(topology)
    dns = DnsActivities(topology)
    alerts = AlertActivities(topology)
    drills = DrillActivities(topology)
    control = RunbookControlActivities(client)
    return [
        plan.load_promotion_plan,
        plan.load_monitor_plan,
        plan.load_feed_plan,
        feeds.switch_feed_source,
        probes.watch_target,
        plan.verify_positions,
        lease.read_lease,
        lease.acquire_lease,
        oms.confirm_primary_down,
        oms.fence_primary,
        oms.sync_dr_state,
        oms.activate_dr,
        oms.release_trading,
        oms.fetch_dr_book,
        venues.connect_session,
        venues.logout_session,
        venues.cancel_orders,
        reconcile.reconcile_venue,
        reconcile.still_open,
        dns.update_dns,
        alerts.notify,
        drills.load_drill_plan,
        drills.lab_fault,
        control.monitor_control,
        control.await_promotion,
        control.approve_promotion,
    ]


async def run(topology: Topology, role: str) -> None:
    queues = task_queues(topology, role)
    client = await Client.connect(
        topology.temporal.address,
        namespace=topology.temporal.namespace,
        data_converter=DATA_CONVERTER,
        api_key=os.environ.get(topology.temporal.api_key_env)
        if topology.temporal.api_key_env
        else None,
    )
    store = await open_lease_store(topology.lease)
    activities = region_activities(topology, store, client)
    workers = [
        Worker(
            client,
            task_queue=queue,
            workflows=ALL_WORKFLOWS,
            activities=activities,
            interceptors=[HeartbeatWhileRunning()],
            sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        )
        for queue in queues
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("polling %s", ", ".join(queues))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    stopping = asyncio.create_task(stop.wait())
    # A worker that dies must take the process down with it: a silent half-worker would leave
    # its task queue unpolled while `lab status` still shows the process running.
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    if stopping not in done and failures:
        raise RuntimeError(f"a worker stopped: {failures[0]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--role", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    path = args.config or Path(os.environ.get("DRCTL_CONFIG", DEFAULT_TOPOLOGY_PATH))
    try:
        topology = load_topology(path)
        task_queues(topology, args.role)
        asyncio.run(run(topology, args.role))
    except (TopologyError, ValueError, LeaseError) as exc:
        print(f"workers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
