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
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.lease import LeaseError, open_lease_store
from activities.lease_activities import LeaseActivities
from domain.topology import DEFAULT_TOPOLOGY_PATH, Topology, TopologyError, load_topology

log = logging.getLogger("workers")


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


async def run(topology: Topology, role: str) -> None:
    queues = task_queues(topology, role)
    client = await Client.connect(
        topology.temporal.address,
        namespace=topology.temporal.namespace,
        data_converter=pydantic_data_converter,
        api_key=os.environ.get(topology.temporal.api_key_env)
        if topology.temporal.api_key_env
        else None,
    )
    store = await open_lease_store(topology.lease)
    lease = LeaseActivities(store)
    workers = [Worker(client, task_queue=queue, activities=[lease.read_lease]) for queue in queues]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("polling %s", ", ".join(queues))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    await stop.wait()
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.close()


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
