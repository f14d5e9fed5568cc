"""A vantage point's worker probes while the lease store is down.

A real Temporal dev server and the real worker entry point (`workers.__main__.serve`) for the
role ``vantage dr``, on a topology whose lease store is a port where nothing listens (no NATS is
started). The vantage worker must not need the store: it polls ``vantage-dr`` and completes a
probe watch of a target that goes unhealthy, which returns once the target is confirmed down.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from activities.probes import ProbeActivities, ProbeTarget, WatchRequest, WatchResult
from domain.health import Verdict
from domain.topology import Topology, load_topology
from lab import processes
from lab.topology_gen import LabPorts, lab_topology_toml
from tests.conftest import DevServer
from workers.__main__ import serve

RUN_TIMEOUT_S = 60.0
CONFIRMATION_COUNT = 2


# Unsandboxed: the sandbox would re-import this test module and everything it imports.
@workflow.defn(name="WatchFromVantageOnce", sandboxed=False)
class WatchFromVantageOnce:
    """The smallest runbook that needs a vantage worker: one watch on its queue."""

    @workflow.run
    async def run(self, request: WatchRequest) -> WatchResult:
        return await workflow.execute_activity_method(
            ProbeActivities.watch_target,
            request,
            task_queue=f"vantage-{request.vantage}",
            start_to_close_timeout=timedelta(seconds=RUN_TIMEOUT_S),
            heartbeat_timeout=timedelta(seconds=10),
        )


def topology_without_a_lease_store(dev_server: DevServer, root: Path) -> Topology:
    # Free ports with nothing behind them: the lease store (NATS) is down for the whole test.
    dead_nats = processes.free_port()
    path = root / "topology.toml"
    path.write_text(lab_topology_toml(LabPorts(temporal=dev_server.port, nats=dead_nats)))
    return load_topology(path)


async def test_a_vantage_worker_probes_while_the_lease_store_is_down(
    dev_server: DevServer, client: Client, tmp_path: Path
) -> None:
    topology = topology_without_a_lease_store(dev_server, tmp_path)
    assert "dr" in {v.name for v in topology.vantage_points}
    stop = asyncio.Event()
    vantage = asyncio.create_task(serve(topology, "vantage-dr", stop))
    unhealthy = f"http://127.0.0.1:{processes.free_port()}"  # nothing answers there
    starter_queue = f"starter-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=starter_queue, workflows=[WatchFromVantageOnce]):
            handle = await client.start_workflow(
                WatchFromVantageOnce.run,
                WatchRequest(
                    vantage="dr",
                    target=ProbeTarget(name="lab:primary", kind="oms", url=unhealthy),
                    # The monitor already holds "degraded": the watch speaks once it is "down".
                    reported=Verdict.DEGRADED,
                    interval_s=0.2,
                    latency_threshold_ms=250,
                    freshness_threshold_s=2,
                    confirmation_count=CONFIRMATION_COUNT,
                    recovery_count=2,
                    max_lifetime_s=RUN_TIMEOUT_S,
                ),
                id=f"watch-{uuid.uuid4().hex[:8]}",
                task_queue=starter_queue,
            )
            result_or_worker_death = asyncio.ensure_future(handle.result())
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await asyncio.wait(
                    [result_or_worker_death, vantage], return_when=asyncio.FIRST_COMPLETED
                )
            # A worker that tried to open the lease store would have died first.
            assert not vantage.done(), vantage.exception()
            result = result_or_worker_death.result()
    finally:
        stop.set()
        await asyncio.wait_for(vantage, RUN_TIMEOUT_S)
    assert result.verdict is Verdict.DOWN and result.changed
    assert result.checks == CONFIRMATION_COUNT
    assert result.last_failure is not None and result.last_failure.startswith("unreachable")
