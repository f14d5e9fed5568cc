"""`drctl monitor start|status|pause|resume|ack --system NAME | --feed NAME`: the automatic
triggers. A system's monitor (SystemMonitor) promotes its DR region; a feed's (FeedMonitor)
switches its source. A system's status also says whether its standby is ready to take over,
with the stream and database lag read live from the readiness watch."""

from __future__ import annotations

import argparse
from typing import Any

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from domain.monitoring import (
    FEED_MONITOR_WORKFLOW,
    SYSTEM_MONITOR_WORKFLOW,
    FeedMonitorRequest,
    FeedStatus,
    MonitorStatus,
    OperatorAction,
    SystemMonitorRequest,
    feed_monitor_workflow_id,
    monitor_workflow_id,
)
from domain.promotion import region_task_queue
from domain.readiness import DrReadiness, ReadinessCounters, ReadinessSample
from domain.topology import Topology
from drctl.runbook_commands import CommandError, connect, run_async, topology_of, ui_link


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    monitor = sub.add_parser("monitor", help="the health monitor that starts promotions")
    cmds = monitor.add_subparsers(dest="monitor_command", required=True)
    for name, helptext in (
        ("start", "start watching a system (harmless if already running)"),
        ("status", "phase, every vantage verdict, what blocks an action"),
        ("pause", "maintenance: keep watching, never act"),
        ("resume", "end maintenance"),
        ("ack", "acknowledge an automatic failover, so the next one may run"),
    ):
        cmd = cmds.add_parser(name, help=helptext)
        target = cmd.add_mutually_exclusive_group(required=True)
        target.add_argument("--system", help="a trading system: fails over to DR")
        target.add_argument("--feed", help="a market-data feed: switches its source")
        if name in ("pause", "resume", "ack"):
            cmd.add_argument("--as", dest="identity", required=True)
            cmd.add_argument("--comment", default="")
        if name == "status":
            cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(run=lambda a, name=name: run_async(_dispatch(name, a)))


async def _dispatch(name: str, args: argparse.Namespace) -> int:
    topology = topology_of(args)
    if args.feed and name in ("start", "status"):
        return await _feed_command(name, topology, args.feed, getattr(args, "json", False))
    if args.feed:
        if args.feed not in {f.name for f in topology.feeds}:
            raise CommandError(
                f"no feed named {args.feed!r}; known: {[f.name for f in topology.feeds]}"
            )
        return await _update(
            await connect(topology), feed_monitor_workflow_id(args.feed), name, args
        )
    try:
        system = topology.system(args.system)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    client = await connect(topology)
    if name == "start":
        request = SystemMonitorRequest(system=system.name)
        return await _start(
            client, topology, SYSTEM_MONITOR_WORKFLOW, monitor_workflow_id(system.name), request
        )
    if name == "status":
        return await _status(client, topology, system.name, args.json)
    return await _update(client, monitor_workflow_id(system.name), name, args)


async def _update(client: Client, workflow_id: str, name: str, args: argparse.Namespace) -> int:
    action = OperatorAction(by=args.identity, comment=args.comment)
    handle = client.get_workflow_handle(workflow_id)
    try:
        print(await handle.execute_update(name, action, result_type=str))
    except WorkflowUpdateFailedError as exc:
        raise CommandError(f"{name} refused: {getattr(exc.cause, 'message', exc.cause)}") from None
    except RPCError as exc:
        raise CommandError(f"{name} failed: {exc.message}") from None
    return 0


async def _feed_command(name: str, topology: Topology, feed: str, as_json: bool) -> int:
    if feed not in {f.name for f in topology.feeds}:
        known = [f.name for f in topology.feeds]
        raise CommandError(f"no feed named {feed!r}; known: {known}")
    client = await connect(topology)
    workflow_id = feed_monitor_workflow_id(feed)
    if name == "start":
        request = FeedMonitorRequest(feed=feed)
        return await _start(client, topology, FEED_MONITOR_WORKFLOW, workflow_id, request)
    try:
        status = await client.get_workflow_handle(workflow_id).query(
            "feed_status", result_type=FeedStatus
        )
    except RPCError as exc:
        raise CommandError(f"no running monitor for feed {feed}: {exc.message}") from None
    if as_json:
        print(status.model_dump_json(indent=2))
        return 0
    verdicts = ", ".join(f"{s}={v.value}" for s, v in status.source_verdicts.items())
    print(f"{feed}: active source {status.active} ({verdicts})")
    if status.paused_by:
        print(f"  paused by {status.paused_by}: no switch until resumed")
    for switch in status.switches[-5:]:
        print(f"  {switch.at:%H:%M:%S} {switch.from_source} -> {switch.to_source}: {switch.reason}")
    return 0


async def _start(
    client: Client,
    topology: Topology,
    workflow_type: str,
    workflow_id: str,
    request: SystemMonitorRequest | FeedMonitorRequest,
) -> int:
    """Start a monitor; one already running under the same id is left alone (exit 0).

    The ids are the ones HealthMonitor used, so a HealthMonitor still running from before the
    upgrade counts as running here, and status, pause, resume and ack reach it.
    """
    system = (
        topology.system(request.system)
        if isinstance(request, SystemMonitorRequest)
        else topology.systems[0]
    )
    try:
        handle = await client.start_workflow(
            workflow_type,
            request,
            id=workflow_id,
            # A monitor must outlive the primary region: it runs on the DR side's workers.
            task_queue=region_task_queue(system.dr_region),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        print(f"{workflow_id} is already running")
        return 0
    print(f"started {workflow_id}: {ui_link(topology, workflow_id, handle.result_run_id)}")
    return 0


async def _status(client: Client, topology: Topology, system: str, as_json: bool) -> int:
    handle = client.get_workflow_handle(monitor_workflow_id(system))
    try:
        status = await handle.query("status", result_type=MonitorStatus)
    except RPCError as exc:
        raise CommandError(f"no running monitor for {system}: {exc.message}") from None
    status.readiness_live = await live_readiness(client, monitor_workflow_id(system))
    if as_json:
        print(status.model_dump_json(indent=2))
        return 0
    verdicts = ", ".join(f"{v}={verdict.value}" for v, verdict in status.verdicts.items())
    print(f"{system}: {status.phase.value}, watching {status.active_region} ({verdicts})")
    details: list[Any] = []
    if status.paused:
        details.append("paused")
    if status.needs_ack:
        details.append("an automatic failover ran: `drctl monitor ack` to re-arm")
    if status.blocked_reason:
        details.append(f"blocked: {status.blocked_reason}")
    if status.promotion_workflow_id:
        details.append(f"last promotion: {status.promotion_workflow_id}")
    details += readiness_lines(status.readiness, status.readiness_live)
    for line in details:
        print(f"  {line}")
    print(f"  {ui_link(topology, monitor_workflow_id(system))}")
    return 0


async def live_readiness(client: Client, workflow_id: str) -> ReadinessSample | None:
    """The readiness watch's latest measurement, from its heartbeat: live, and free of history
    (the monitor's own state only changes when readiness does). None when no watch runs."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return None
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != "watch_dr_readiness":
            continue
        payloads = pending.heartbeat_details.payloads
        if not payloads:
            return None
        [details] = await client.data_converter.decode(payloads[:1], [ReadinessCounters])
        return details.last if isinstance(details, ReadinessCounters) else None
    return None


def readiness_lines(readiness: DrReadiness | None, live: ReadinessSample | None) -> list[str]:
    """How the standby stands, for a person: ready or not (and why), and its lag figures."""
    if readiness is None and live is None:
        return ["DR readiness: not measured yet"]
    lines = []
    if readiness is not None:
        state = "ready" if readiness.ready else "NOT READY"
        lines.append(f"DR readiness: {readiness.region} {state} since {readiness.since:%H:%M:%S}")
        if not readiness.ready and readiness.reason:
            lines.append(f"  why: {readiness.reason}")
    sample = live or (readiness.last if readiness else None)
    if sample is not None:
        lines.append(
            f"  stream lag: {_figure(sample.stream_lag_events, 'event(s)')}, "
            f"{_figure(sample.stream_lag_s, 's')}"
        )
        if sample.db_lag_bytes is not None or sample.db_lag_s is not None:
            lines.append(
                f"  database lag: {_figure(sample.db_lag_bytes, 'bytes')}, "
                f"{_figure(sample.db_lag_s, 's')}"
            )
        else:
            lines.append("  database lag: - (no database, or not measurable)")
        lines.append(f"  measured {sample.measured_at:%H:%M:%S}")
    return lines


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} {unit}" if isinstance(value, float) else f"{value:,} {unit}"
