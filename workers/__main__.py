"""``python -m workers --role ROLE``: poll the task queues of one region or vantage point.

Roles: ``region-<region>`` (``region-primary``, ``region-dr``), ``vantage NAME`` (also spelt
``vantage-NAME``), or ``all`` (the lab: one process polling every queue). Each role opens only
the clients it needs (workers/roles.py): a vantage worker never opens the lease store, so it
probes while the store is down. A worker in the DR region needs nothing from the primary region.

Telemetry (workers/telemetry.py): the role's port in ``[observability]`` serves Prometheus
``/metrics``; the standard ``OTEL_*`` variables turn traces on.
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
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.lease_activities import LeaseActivities
from adapters.stores import open_lease_store
from domain.stores import LeaseStore, StoreError
from domain.topology import DEFAULT_TOPOLOGY_PATH, Topology, TopologyError, load_topology
from workers.roles import queues_of, region_workers, role_name, vantage_workers
from workers.telemetry import metrics_runtime, tracing_interceptors
from workflows.data_converter import DATA_CONVERTER

log = logging.getLogger("workers")


async def run(topology: Topology, role: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(topology, role, stop)


async def serve(topology: Topology, role: str, stop: asyncio.Event) -> None:
    """Poll ``role``'s queues until ``stop`` is set; raise if a worker dies first."""
    queues = queues_of(topology, role)
    metrics_address = topology.observability.metrics_address(role)
    client = await Client.connect(
        topology.temporal.address,
        namespace=topology.temporal.namespace,
        data_converter=DATA_CONVERTER,
        api_key=os.environ.get(topology.temporal.api_key_env)
        if topology.temporal.api_key_env
        else None,
        # Before the connection: a client's runtime is fixed when it is created. Every worker
        # built from this client shares its runtime (metrics) and its interceptors (traces).
        runtime=_metrics_runtime(metrics_address) if metrics_address else None,
        interceptors=tracing_interceptors(),
    )
    store: LeaseStore | None = None
    if queues.needs_lease_store:
        store = await open_lease_store(topology.lease)
    try:
        lease = LeaseActivities(store) if store is not None else None
        workers = [
            *region_workers(client, queues, topology, lease),
            *vantage_workers(client, queues),
        ]
        await _poll(workers, queues.every, stop)
    finally:
        if store is not None:
            await store.close()


def _metrics_runtime(address: str) -> Runtime:
    try:
        runtime = metrics_runtime(address)
    except Exception as exc:  # the SDK's core raises a plain exception for a busy port
        raise ValueError(f"cannot serve /metrics on {address} ([observability]): {exc}") from None
    log.info("metrics on http://%s/metrics", address)
    return runtime


async def _poll(workers: list[Worker], queues: list[str], stop: asyncio.Event) -> None:
    log.info("polling %s", ", ".join(queues))
    tasks = [asyncio.create_task(w.run()) for w in workers]
    stopping = asyncio.create_task(stop.wait())
    # A worker that dies must take the process down with it: a silent half-worker would leave
    # its task queue unpolled while `lab status` still shows the process running.
    done, _ = await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if stopping not in done and failures:
        raise RuntimeError(f"a worker stopped: {failures[0]!r}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m workers")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument(
        "--role",
        required=True,
        nargs="+",
        metavar="ROLE",
        help="region-<region>, vantage NAME (or vantage-NAME), or all",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    path = args.config or Path(os.environ.get("DRCTL_CONFIG", DEFAULT_TOPOLOGY_PATH))
    try:
        role = role_name(args.role)
        topology = load_topology(path)
        queues_of(topology, role)
        asyncio.run(run(topology, role))
    except (TopologyError, ValueError, StoreError) as exc:
        print(f"workers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
