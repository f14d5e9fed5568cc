"""`drctl failover | approve | decide | resolve | status`: operating the promotion runbook."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import getpass
import json
import os
import sys
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from domain.promotion import (
    PROMOTION_WORKFLOW,
    Approval,
    Decision,
    DrKind,
    DrOutcome,
    PromotionProgress,
    PromotionReport,
    PromotionRequest,
    Resolution,
    promotion_workflow_id,
    region_task_queue,
)
from domain.topology import DEFAULT_TOPOLOGY_PATH, Topology, TopologyError, load_topology
from domain.topology import describe_validation_error as describe
from drctl.progress import REPORT_TYPES, follow
from lab.stack import load_secrets_into_environ
from workflows.data_converter import DATA_CONVERTER
from workflows.steps import DR_KIND, DR_OUTCOME, DR_SYSTEM

T = TypeVar("T")


class CommandError(RuntimeError):
    """A user-facing failure: printed as one line, exit status 1."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    failover = sub.add_parser("failover", help="promote a system's DR region")
    failover.add_argument("--system", required=True)
    failover.add_argument("--planned", action="store_true", help="graceful, needs approval")
    failover.add_argument("--reason", default="")
    failover.add_argument("--as", dest="identity", default=None, help="who asks (default: $USER)")
    failover.add_argument("--wait", action="store_true", help="wait for the report")
    failover.add_argument("--json", action="store_true")
    failover.set_defaults(run=lambda a: run_async(_failover(a)))

    approve = sub.add_parser("approve", help="approve a planned promotion (a second operator)")
    approve.add_argument("workflow_id")
    approve.add_argument("--as", dest="identity", required=True)
    approve.add_argument("--comment", default="")
    approve.set_defaults(run=lambda a: run_async(_approve(a)))

    decide = sub.add_parser("decide", help="accept or abort at the discrepancy gate")
    decide.add_argument("workflow_id")
    decide.add_argument("action", choices=["accept", "abort"])
    decide.add_argument("--as", dest="identity", required=True)
    decide.add_argument("--comment", default="")
    decide.set_defaults(run=lambda a: run_async(_decide(a)))

    resolve = sub.add_parser("resolve", help="retry or abort a step that failed for good")
    resolve.add_argument("workflow_id")
    resolve.add_argument("action", choices=["retry", "abort"])
    resolve.add_argument("--as", dest="identity", required=True)
    resolve.add_argument("--comment", default="")
    resolve.set_defaults(run=lambda a: run_async(_resolve(a)))

    status = sub.add_parser("status", help="where each system's promotion stands")
    status.add_argument("--system", default=None)
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="follow the running promotion, or one started from now on, for up to SECONDS; "
        "then report it",
    )
    status.set_defaults(run=lambda a: run_async(_status(a)))

    watch = sub.add_parser(
        "watch", help="follow a runbook's steps live until it ends (Ctrl-C stops watching only)"
    )
    watch.add_argument("workflow_id", help="e.g. dr-promotion/lab, dr-drill/lab")
    watch.add_argument("--run-id", default=None, help="a past or current run (default: latest)")
    watch.add_argument("--json", action="store_true", help="the report as JSON on stdout")
    watch.set_defaults(run=lambda a: run_async(_watch(a)))


def run_async(coro: Awaitable[int]) -> int:
    return asyncio.run(coro)  # type: ignore[arg-type]


def topology_of(args: argparse.Namespace) -> Topology:
    path = args.config or Path(os.environ.get("DRCTL_CONFIG", DEFAULT_TOPOLOGY_PATH))
    topology = load_topology(path)
    # The lab keeps its generated credentials beside its topology.
    load_secrets_into_environ(path.parent)
    return topology


async def connect(topology: Topology) -> Client:
    api_key = (
        os.environ.get(topology.temporal.api_key_env) if topology.temporal.api_key_env else None
    )
    try:
        return await Client.connect(
            topology.temporal.address,
            namespace=topology.temporal.namespace,
            data_converter=DATA_CONVERTER,
            api_key=api_key,
            # With OTEL_* set, a runbook started here is one trace rooted at its start.
            interceptors=_tracing(),
        )
    except RuntimeError as exc:
        raise CommandError(
            f"cannot reach Temporal at {topology.temporal.address} ({exc}); is it running? "
            "(for the lab: drctl lab up)"
        ) from None


def _tracing() -> list[ClientInterceptor]:
    if not any(name.startswith("OTEL_") for name in os.environ):
        return []  # off, without importing the OpenTelemetry SDK into every command
    from workers.telemetry import tracer_provider_from_environment, tracing_interceptors

    provider = tracer_provider_from_environment()
    if provider is None:
        return []
    # A command is short-lived: its spans leave in the batch flushed on exit.
    atexit.register(provider.shutdown)
    return tracing_interceptors(provider)


def operator_identity(args: argparse.Namespace) -> str:
    return str(args.identity or os.environ.get("DRCTL_OPERATOR") or getpass.getuser())


def ui_link(topology: Topology, workflow_id: str, run_id: str | None = None) -> str:
    base = str(topology.temporal.ui_url).rstrip("/")
    path = f"{base}/namespaces/{topology.temporal.namespace}/workflows/{workflow_id}"
    return f"{path}/{run_id}" if run_id else path


async def _failover(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    try:
        system = topology.system(args.system)
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    try:
        request = PromotionRequest(
            system=system.name,
            requested_by=operator_identity(args),
            planned=args.planned,
            reason=args.reason,
        )
    except ValidationError as exc:
        raise CommandError(f"invalid request: {describe(exc)}") from None
    client = await connect(topology)
    workflow_id = promotion_workflow_id(system.name)
    try:
        handle: WorkflowHandle[Any, PromotionReport] = await client.start_workflow(
            PROMOTION_WORKFLOW,
            request,
            id=workflow_id,
            task_queue=region_task_queue(system.dr_region),
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=start_attributes(request.system, request.dr_kind),
            result_type=PromotionReport,
        )
    except WorkflowAlreadyStartedError:
        running = await client.get_workflow_handle(workflow_id).describe()
        raise CommandError(
            f"a promotion of {system.name} is already in progress: workflow {workflow_id} "
            f"(run {running.run_id}); follow it with `drctl status --system {system.name}` or "
            f"{ui_link(topology, workflow_id, running.run_id)}"
        ) from None
    link = ui_link(topology, workflow_id, handle.result_run_id)
    if not args.wait:
        print(f"started {workflow_id}: {link}")
        if args.planned:
            print(f"waiting for approval: drctl approve {workflow_id} --as <second operator>")
        return 0
    report = await watch_then_report(client, handle, args.json, f"started {workflow_id}: {link}")
    if not args.json:
        print(f"history: {link}")
    return 0 if report.outcome is DrOutcome.PROMOTED else 1


async def watch_then_report(
    client: Client, handle: WorkflowHandle[Any, T], as_json: bool, opening: str = ""
) -> T:
    """Show the run's steps live, then its report: progress goes to stderr under --json, so
    stdout stays one JSON document. Ctrl-C ends the watch; the run goes on."""
    out = sys.stderr if as_json else sys.stdout
    if opening:
        print(opening, file=out, flush=True)
    await follow(client, handle.id, handle.run_id or handle.result_run_id, out)
    try:
        report = await handle.result()
    except WorkflowFailureError as exc:
        raise CommandError(f"{handle.id} failed: {exc.cause or exc}") from None
    if as_json:
        print(report.model_dump_json(indent=2))  # type: ignore[attr-defined]
    else:
        print("\n".join(report.summary_lines()))  # type: ignore[attr-defined]
    return report


def start_attributes(system: str, kind: DrKind) -> TypedSearchAttributes:
    """Set at start, so a run is findable by `drctl incidents` before its first task runs."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(DR_SYSTEM, system),
            SearchAttributePair(DR_KIND, kind.value),
            SearchAttributePair(DR_OUTCOME, DrOutcome.RUNNING.value),
        ]
    )


async def _update(args: argparse.Namespace, update: str, payload: BaseModel) -> int:
    client = await connect(topology_of(args))
    handle = client.get_workflow_handle(args.workflow_id)
    try:
        result = await handle.execute_update(update, payload, result_type=str)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise CommandError(f"{update} refused: {getattr(cause, 'message', cause)}") from None
    except RPCError as exc:
        raise CommandError(f"{update} failed for {args.workflow_id}: {exc.message}") from None
    print(result)
    return 0


async def _approve(args: argparse.Namespace) -> int:
    return await _update(
        args, "approve", _model(Approval, approver=args.identity, comment=args.comment)
    )


async def _decide(args: argparse.Namespace) -> int:
    decision = _model(Decision, action=args.action, by=args.identity, comment=args.comment)
    return await _update(args, "decide", decision)


async def _resolve(args: argparse.Namespace) -> int:
    resolution = _model(Resolution, action=args.action, by=args.identity, comment=args.comment)
    return await _update(args, "resolve", resolution)


def _model(model: type[BaseModel], **fields: Any) -> BaseModel:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise CommandError(f"invalid {model.__name__.lower()}: {describe(exc)}") from None


async def _status(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    systems = [topology.system(args.system)] if args.system else topology.systems
    client = await connect(topology)
    if args.wait:
        return await _wait_for_promotion(client, topology, systems[0].name, args.wait)
    rows: list[dict[str, Any]] = []
    for system in systems:
        rows.append(await _system_status(client, topology, system.name))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        if row["state"] == "never":
            print(f"{row['system']}: no promotion has run")
            continue
        print(f"{row['system']}: {row['workflow_id']} {row['state']} outcome {row['outcome']}")
        if row.get("waiting_for"):
            print(f"  waiting for {row['waiting_for']}")
        for step in row.get("steps", []):
            took = f"{step['duration_s']:.3f} s" if step.get("duration_s") is not None else "..."
            print(f"  {step['name']:<26} {step['status']:<9} {took:>10}  {step['detail']}")
        print(f"  {row['ui']}")
    return 0


async def _wait_for_promotion(
    client: Client, topology: Topology, system: str, timeout_s: float
) -> int:
    """Follow the running promotion, or the next one to start, live; print its report."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    workflow_id = promotion_workflow_id(system)
    while loop.time() < deadline:
        try:
            description = await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            description = None
        if description is not None and (
            description.status == WorkflowExecutionStatus.RUNNING or description.start_time >= since
        ):
            handle = client.get_workflow_handle(
                workflow_id, run_id=description.run_id, result_type=PromotionReport
            )
            opening = (
                f"following {workflow_id}, started {description.start_time.astimezone():%H:%M:%S}"
            )
            try:
                report = await asyncio.wait_for(
                    watch_then_report(client, handle, False, opening),
                    max(deadline - loop.time(), 1),
                )
            except TimeoutError:
                raise CommandError(
                    f"{workflow_id} did not finish within {timeout_s:g} s; it keeps running"
                ) from None
            print(f"history: {report.ui_url}")
            return 0 if report.outcome is DrOutcome.PROMOTED else 1
        await asyncio.sleep(0.25)  # poll
    raise CommandError(f"no promotion of {system} started within {timeout_s:g} s")


async def _watch(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    client = await connect(topology)
    try:
        description = await client.get_workflow_handle(
            args.workflow_id, run_id=args.run_id
        ).describe()
    except RPCError as exc:
        raise CommandError(f"no run {args.workflow_id}: {exc.message}") from None
    model = REPORT_TYPES.get(description.workflow_type)
    if model is None:
        raise CommandError(
            f"{args.workflow_id} is a {description.workflow_type}; drctl watch follows "
            f"{', '.join(sorted(REPORT_TYPES))} runs"
        )
    handle = client.get_workflow_handle(
        args.workflow_id, run_id=description.run_id, result_type=model
    )
    report = await watch_then_report(client, handle, args.json)
    outcome = getattr(report, "outcome", None)
    return 0 if outcome in (DrOutcome.PROMOTED, DrOutcome.PASSED) else 1


async def _system_status(client: Client, topology: Topology, system: str) -> dict[str, Any]:
    workflow_id = promotion_workflow_id(system)
    handle = client.get_workflow_handle(workflow_id, result_type=PromotionReport)
    try:
        description = await handle.describe()
    except RPCError:
        return {"system": system, "state": "never"}
    row: dict[str, Any] = {
        "system": system,
        "workflow_id": workflow_id,
        "run_id": description.run_id,
        "state": description.status.name.lower() if description.status else "unknown",
        "started_at": description.start_time.isoformat(),
        "ui": ui_link(topology, workflow_id, description.run_id),
    }
    if description.status == WorkflowExecutionStatus.RUNNING:
        try:
            progress = await handle.query("progress", result_type=PromotionProgress)
        except RPCError as exc:
            # A workflow task that keeps failing cannot answer queries; say so instead.
            row |= {"outcome": "running", "waiting_for": f"(no progress: {exc.message})"}
            steps = []
        else:
            row |= {"outcome": progress.outcome.value, "waiting_for": progress.waiting_for}
            steps = progress.steps
    elif description.status == WorkflowExecutionStatus.COMPLETED:
        report = await handle.result()
        row |= {"outcome": report.outcome.value, "detail": report.outcome_detail}
        steps = report.steps
    else:
        row["outcome"] = "-"
        steps = []
    row["steps"] = [
        {"name": s.name, "status": s.status, "duration_s": s.duration_s, "detail": s.detail}
        for s in steps
    ]
    return row


ERRORS = (CommandError, TopologyError)
