"""`drctl drill run | schedule` and `drctl failback`: exercising DR on purpose."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.drill import (
    DRILL_WORKFLOW,
    FAILBACK_WORKFLOW,
    DrillReport,
    DrillRequest,
    DrillScenario,
    FailbackReport,
    FailbackRequest,
    drill_schedule_id,
    drill_workflow_id,
    failback_workflow_id,
)
from domain.promotion import DrKind, DrOutcome, region_task_queue
from domain.topology import SystemConfig, Topology
from domain.topology import describe_validation_error as describe
from drctl.drill_schedule import SCHEDULE_IDENTITY, drill_schedule
from drctl.runbook_commands import (
    CommandError,
    connect,
    operator_identity,
    run_async,
    start_attributes,
    topology_of,
    ui_link,
    watch_then_report,
)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drill = sub.add_parser("drill", help="run, schedule and review DR drills")
    cmds = drill.add_subparsers(dest="drill_command", required=True)

    run = cmds.add_parser("run", help="run a drill now (fault or switchover, then failback)")
    run.add_argument("--system", required=True)
    _request_options(run)
    run.add_argument("--wait", action="store_true", help="wait for the drill's report")
    run.add_argument("--json", action="store_true")
    run.set_defaults(run=lambda a: run_async(_run(a)))

    schedule = cmds.add_parser("schedule", help="the system's recurring drill (Temporal Schedule)")
    schedule.add_argument("--system", help="required except with --list")
    action = schedule.add_mutually_exclusive_group()
    action.add_argument("--cron", help='create or update, e.g. "0 7 1 * *" (07:00 on the 1st)')
    action.add_argument("--list", action="store_true", help="every drill schedule")
    action.add_argument("--pause", action="store_true")
    action.add_argument("--resume", action="store_true")
    action.add_argument("--delete", action="store_true")
    action.add_argument("--trigger", action="store_true", help="start the scheduled drill now")
    schedule.add_argument(
        "--timezone", default=None, help="of the cron expression (default: the system's drill "
        "timezone, in which its blackout windows are written)",
    )  # fmt: skip
    _request_options(schedule)
    schedule.add_argument("--json", action="store_true")
    schedule.set_defaults(run=lambda a: run_async(_schedule(a)))

    failback = sub.add_parser("failback", help="return a system to its primary region")
    failback.add_argument("--system", required=True)
    failback.add_argument("--as", dest="identity", default=None, help="who asks (default: $USER)")
    failback.add_argument("--reason", default="")
    failback.add_argument(
        "--approver",
        default=None,
        help="a second operator approving its planned promotion up front (else: drctl approve)",
    )
    failback.add_argument("--wait", action="store_true")
    failback.add_argument("--json", action="store_true")
    failback.set_defaults(run=lambda a: run_async(_failback(a)))


def _request_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--scenario", choices=[s.value for s in DrillScenario], default=None)
    cmd.add_argument("--as", dest="identity", default=None, help="who asks (default: $USER)")
    cmd.add_argument("--approver", default=None, help="who approves its planned promotions")
    cmd.add_argument("--max-detection", type=float, default=None, metavar="SECONDS")
    cmd.add_argument("--max-rto", type=float, default=None, metavar="SECONDS")
    cmd.add_argument("--max-gap", type=int, default=None, metavar="EVENTS")
    cmd.add_argument("--no-failback", action="store_true")
    cmd.add_argument("--allow-production", action="store_true")
    cmd.add_argument("--reason", default="")


def _drill_request(args: argparse.Namespace, system: str, identity: str) -> DrillRequest:
    objectives: dict[str, Any] = {
        key: value
        for key, value in (
            ("max_detection_s", args.max_detection),
            ("max_rto_s", args.max_rto),
            ("max_replication_gap_events", args.max_gap),
        )
        if value is not None
    }
    fields: dict[str, Any] = {
        "system": system,
        "requested_by": identity,
        "objectives": objectives,
        "failback": not args.no_failback,
        "allow_production": args.allow_production,
        "reason": args.reason,
    }
    if args.scenario:
        fields["scenario"] = args.scenario
    if args.approver:
        fields["approver"] = args.approver
    try:
        return DrillRequest.model_validate(fields)
    except ValidationError as exc:
        raise CommandError(f"invalid drill: {describe(exc)}") from None


def _system(topology: Topology, name: str | None) -> SystemConfig:
    if not name:
        raise CommandError("--system is required")
    try:
        return topology.system(name)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None


# --- drill run ------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    system = _system(topology, args.system)
    request = _drill_request(args, system.name, operator_identity(args))
    client = await connect(topology)
    workflow_id = drill_workflow_id(system.name)
    handle: WorkflowHandle[Any, DrillReport] = await _start(
        client,
        topology,
        DRILL_WORKFLOW,
        request,
        workflow_id,
        region_task_queue(system.dr_region),
        start_attributes(system.name, DrKind.DRILL),
        DrillReport,
    )
    link = ui_link(topology, workflow_id, handle.result_run_id)
    if not args.wait:
        print(f"started {workflow_id}: {link}")
        return 0
    report = await watch_then_report(client, handle, args.json, f"started {workflow_id}: {link}")
    if not args.json:
        print(f"history: {link}")
        print(f"review: drctl report {workflow_id} --format html -o drill.html")
    return 0 if report.passed else 1


# --- failback -------------------------------------------------------------------------------


async def _failback(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    system = _system(topology, args.system)
    try:
        request = FailbackRequest(
            system=system.name,
            requested_by=operator_identity(args),
            approver=args.approver,
            reason=args.reason,
        )
    except ValidationError as exc:
        raise CommandError(f"invalid failback: {describe(exc)}") from None
    client = await connect(topology)
    workflow_id = failback_workflow_id(system.name)
    handle: WorkflowHandle[Any, FailbackReport] = await _start(
        client,
        topology,
        FAILBACK_WORKFLOW,
        request,
        workflow_id,
        region_task_queue(system.primary_region),
        start_attributes(system.name, DrKind.PLANNED),
        FailbackReport,
    )
    link = ui_link(topology, workflow_id, handle.result_run_id)
    # Under --json stdout carries only the report; what a person reads goes to stderr.
    out = sys.stderr if args.json and args.wait else sys.stdout
    print(f"started {workflow_id}: {link}", file=out)
    if request.approver is None:
        print(
            f"its planned promotion waits for approval: drctl approve dr-promotion/{system.name} "
            "--as <second operator>",
            file=out,
        )
    if not args.wait:
        return 0
    report = await watch_then_report(client, handle, args.json)
    return 0 if report.outcome is DrOutcome.PROMOTED else 1


async def _start(
    client: Client,
    topology: Topology,
    workflow: str,
    request: Any,
    workflow_id: str,
    task_queue: str,
    attributes: TypedSearchAttributes,
    result_type: type[Any],
) -> WorkflowHandle[Any, Any]:
    try:
        return await client.start_workflow(
            workflow,
            request,
            id=workflow_id,
            task_queue=task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=attributes,
            result_type=result_type,
        )
    except WorkflowAlreadyStartedError:
        running = await client.get_workflow_handle(workflow_id).describe()
        raise CommandError(
            f"{workflow_id} is already running: {ui_link(topology, workflow_id, running.run_id)}"
        ) from None


# --- drill schedule -------------------------------------------------------------------------


async def _schedule(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    client = await connect(topology)
    if args.list:
        return await _list_schedules(client, args.json)
    system = _system(topology, args.system)
    handle = client.get_schedule_handle(drill_schedule_id(system.name))
    try:
        if args.cron:
            return await _upsert(client, args, system)
        if args.pause:
            await handle.pause(note=f"paused by {operator_identity(args)}")
            print(f"paused {handle.id}")
        elif args.resume:
            await handle.unpause(note=f"resumed by {operator_identity(args)}")
            print(f"resumed {handle.id}")
        elif args.delete:
            await handle.delete()
            print(f"deleted {handle.id}")
        elif args.trigger:
            await handle.trigger()
            print(
                f"triggered {handle.id}: the drill starts now (see `drctl incidents --kind drill`)"
            )
        else:
            return await _describe(handle, args.json)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(
                f"no drill schedule for {system.name}; create one with "
                f"`drctl drill schedule --system {system.name} --cron EXPR`"
            ) from None
        raise CommandError(f"schedule {handle.id}: {exc.message}") from None
    return 0


async def _upsert(client: Client, args: argparse.Namespace, system: SystemConfig) -> int:
    timezone = args.timezone or system.drill.timezone
    if system.drill.blackouts and timezone != system.drill.timezone:
        raise CommandError(
            f"--timezone {timezone} differs from {system.name}'s drill timezone "
            f"{system.drill.timezone}, in which its blackout windows are written; write the "
            f"cron expression in {system.drill.timezone}"
        )
    request = _drill_request(args, system.name, args.identity or SCHEDULE_IDENTITY)
    schedule = drill_schedule(system, args.cron, timezone, request)
    schedule_id = drill_schedule_id(system.name)
    try:
        await client.create_schedule(schedule_id, schedule)
        verb = "created"
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
        verb = "updated"
    except RPCError as exc:
        raise CommandError(f"Temporal refused the schedule: {exc.message}") from None
    described = await client.get_schedule_handle(schedule_id).describe()
    upcoming = ", ".join(f"{t:%Y-%m-%d %H:%M} UTC" for t in described.info.next_action_times[:3])
    windows = len(system.drill.blackouts)
    print(
        f"{verb} {schedule_id}: {args.cron} ({timezone}), overlap skip, catch-up window "
        f"{system.drill.catchup_window_s:g} s, {windows} blackout window(s)"
    )
    print(f"next drills: {upcoming or 'none'}")
    return 0


async def _describe(handle: ScheduleHandle, as_json: bool) -> int:
    described = await handle.describe()
    row = _schedule_row(handle.id, described)
    print(json.dumps(row, indent=2) if as_json else _format_row(row))
    return 0


async def _list_schedules(client: Client, as_json: bool) -> int:
    rows = []
    async for entry in await client.list_schedules():
        if entry.id.startswith(drill_schedule_id("")):
            rows.append(
                _schedule_row(entry.id, await client.get_schedule_handle(entry.id).describe())
            )
    if as_json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no drill schedules")
    for row in [] if as_json else rows:
        print(_format_row(row))
    return 0


def _schedule_row(schedule_id: str, described: Any) -> dict[str, Any]:
    spec = described.schedule.spec
    return {
        "id": schedule_id,
        "cron": list(spec.cron_expressions),
        "timezone": spec.time_zone_name or "UTC",
        "paused": described.schedule.state.paused,
        "note": described.schedule.state.note,
        "blackouts": [c.comment for c in spec.skip],
        "next": [t.isoformat() for t in described.info.next_action_times[:3]],
        "recent": [
            {
                "scheduled_at": a.scheduled_at.isoformat(),
                "workflow_id": getattr(a.action, "workflow_id", None),
            }
            for a in described.info.recent_actions
        ],
    }


def _format_row(row: dict[str, Any]) -> str:
    state = "paused" if row["paused"] else "active"
    lines = [f"{row['id']}: {', '.join(row['cron'])} ({row['timezone']}) {state}"]
    lines += [f"  skip {b}" for b in row["blackouts"]]
    lines += [f"  next {t}" for t in row["next"]]
    lines += [f"  ran  {r['scheduled_at']} -> {r['workflow_id']}" for r in row["recent"]]
    return "\n".join(lines)
