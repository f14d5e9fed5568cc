"""`drctl report | history export | incidents`: reviewing runs after the fact.

A report is rendered from a run's history alone, fetched from the server or read from an export,
and is scrubbed of every credential the topology names before it is printed or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecution, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode

from domain.promotion import DR_SEARCH_ATTRIBUTES, DrKind
from domain.topology import DEFAULT_TOPOLOGY_PATH, Topology
from drctl.history_export import HistoryFileError, export_document, load_history_file
from drctl.history_reader import HistoryError, read_history
from drctl.report_render import FORMATS, Format, render
from drctl.runbook_commands import CommandError, connect, run_async, topology_of
from drctl.secret_scrub import SecretScrubber
from workflows.steps import DR_KIND, DR_OUTCOME

SEARCH_ATTRIBUTES = DR_SEARCH_ATTRIBUTES


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="post-incident review of one run: timeline, RTO, venues, approvals",
        description="Render the review of a run from its history on the server, or from a "
        "file written by `drctl history export` (or any history JSON).",
    )
    report.add_argument("workflow_id", nargs="?", help="e.g. dr-promotion/lab")
    report.add_argument(
        "--run-id", default=None, metavar="RUN", help="a past run (default: the latest)"
    )
    report.add_argument(
        "--from-file", type=Path, default=None, metavar="FILE", help="an exported history"
    )
    report.add_argument(
        "--workflow-id",
        dest="file_workflow_id",
        default=None,
        metavar="WORKFLOW_ID",
        help="with --from-file: the workflow id, for a history file that does not carry it",
    )
    report.add_argument("--format", choices=FORMATS, default="md", help="default: md")
    report.add_argument(
        "-o", "--output", type=Path, default=None, metavar="FILE", help="default: stdout"
    )
    report.set_defaults(run=lambda a: run_async(_report(a)))

    history = sub.add_parser("history", help="keep a run's history past server retention")
    history_commands = history.add_subparsers(dest="history_command", required=True)
    export = history_commands.add_parser("export", help="save a run's raw history to a file")
    export.add_argument("workflow_id", help="e.g. dr-promotion/lab")
    export.add_argument(
        "--run-id", default=None, metavar="RUN", help="a past run (default: the latest)"
    )
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    export.set_defaults(run=lambda a: run_async(_export(a)))

    incidents = sub.add_parser("incidents", help="past promotions, drills and failbacks")
    incidents.add_argument("--system", default=None, help="default: every system")
    incidents.add_argument("--kind", choices=[k.value for k in DrKind], default=None)
    incidents.add_argument("--limit", type=_positive_int, default=20, help="default: 20")
    incidents.add_argument("--json", action="store_true")
    incidents.set_defaults(run=lambda a: run_async(_incidents(a)))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- report and export -----------------------------------------------------------------------


async def _report(args: argparse.Namespace) -> int:
    if args.from_file is not None:
        topology = _topology_if_present(args)
        try:
            history, run_id = load_history_file(
                args.from_file, args.file_workflow_id or args.workflow_id
            )
        except HistoryFileError as exc:
            raise CommandError(str(exc)) from None
    elif args.workflow_id:
        topology = topology_of(args)
        client = await connect(topology)
        history, run_id = await fetch_history(client, topology, args.workflow_id, args.run_id)
    else:
        raise CommandError("give a WORKFLOW_ID, or --from-file FILE")
    scrubber = SecretScrubber.for_topology(topology) if topology else SecretScrubber(())
    text = render_report(history, run_id, args.format, scrubber)
    _emit(text, args.output)
    return 0


def render_report(
    history: WorkflowHistory, run_id: str, fmt: Format, scrubber: SecretScrubber
) -> str:
    """The one path from a history to a report, whether the history came live or from a file."""
    try:
        review = read_history(scrubber.scrub_history(history), run_id)
    except HistoryError as exc:
        raise CommandError(str(exc)) from None
    return scrubber.scrub(render(review, fmt))


async def _export(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    client = await connect(topology)
    history, run_id = await fetch_history(client, topology, args.workflow_id, args.run_id)
    scrubber = SecretScrubber.for_topology(topology)
    document = export_document(scrubber.scrub_history(history), run_id, client.namespace)
    _write(args.output, scrubber.scrub(document))
    print(f"{args.output}: {len(history.events)} events of {args.workflow_id} run {run_id}")
    return 0


async def fetch_history(
    client: Client, topology: Topology, workflow_id: str, run_id: str | None
) -> tuple[WorkflowHistory, str]:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        history = await handle.fetch_history()
    except RPCError as exc:
        raise CommandError(_rpc_problem(exc, topology, workflow_id, run_id)) from None
    if not history.events:
        raise CommandError(f"the history of {workflow_id} is empty")
    return history, run_id or history.run_id


def _rpc_problem(exc: RPCError, topology: Topology, workflow_id: str, run_id: str | None) -> str:
    namespace, address = topology.temporal.namespace, topology.temporal.address
    run = f" run {run_id}" if run_id else ""
    if exc.status is RPCStatusCode.NOT_FOUND:
        return f"no workflow {workflow_id}{run} in namespace {namespace}"
    if exc.status is RPCStatusCode.INVALID_ARGUMENT:
        return f"cannot read workflow {workflow_id}{run}: {exc.message}"
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return f"cannot reach Temporal at {address} ({exc.message})"
    return f"reading the history of {workflow_id}{run} failed: {exc.message}"


def _topology_if_present(args: argparse.Namespace) -> Topology | None:
    """A report of an exported file needs no server; without a topology there is just no list
    of secret names to scrub (the export itself was scrubbed when it was written)."""
    path = args.config or Path(os.environ.get("DRCTL_CONFIG", DEFAULT_TOPOLOGY_PATH))
    if not path.exists():
        print(
            f"drctl: no topology at {path}: credentials it would name are not scrubbed",
            file=sys.stderr,
        )
        return None
    return topology_of(args)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    _write(output, text)
    print(output)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


# --- incidents -------------------------------------------------------------------------------


def incidents_query(topology: Topology, system: str | None, kind: str | None) -> str:
    """A visibility query over our search attributes. Only names the topology defines and kinds
    the enum defines get in, so nothing a user types can change the query's shape."""
    known = [s.name for s in topology.systems]
    if system is not None and system not in known:
        raise CommandError(f"no system named {system!r}; known: {known}")
    names = [system] if system is not None else known
    # Topology names match ^[a-z0-9][a-z0-9-]*$: they cannot close a quoted literal.
    quoted = [f"'{name}'" for name in names]
    clauses = [
        f"DrSystem = {quoted[0]}" if len(quoted) == 1 else f"DrSystem IN ({', '.join(quoted)})"
    ]
    if kind is not None:
        try:
            clauses.append(f"DrKind = '{DrKind(kind).value}'")
        except ValueError:
            raise CommandError(f"no kind {kind!r}; known: {[k.value for k in DrKind]}") from None
    return " AND ".join(clauses)


async def _incidents(args: argparse.Namespace) -> int:
    topology = topology_of(args)
    query = incidents_query(topology, args.system, args.kind)
    client = await connect(topology)
    executions: list[WorkflowExecution] = []
    try:
        async for execution in client.list_workflows(query, limit=args.limit):
            executions.append(execution)
    except RPCError as exc:
        raise CommandError(_list_problem(exc, topology)) from None
    rows = incident_rows(executions)
    scrubber = SecretScrubber.for_topology(topology)
    if args.json:
        print(scrubber.scrub(json.dumps(rows, indent=2)))
    else:
        print(scrubber.scrub(incidents_table(rows)))
    return 0


def _list_problem(exc: RPCError, topology: Topology) -> str:
    if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
        return f"cannot reach Temporal at {topology.temporal.address} ({exc.message})"
    if exc.status is RPCStatusCode.INVALID_ARGUMENT:
        return (
            f"cannot list runs: {exc.message}; the search attributes "
            f"{', '.join(SEARCH_ATTRIBUTES)} must be registered as Keyword in namespace "
            f"{topology.temporal.namespace} (the lab registers them)"
        )
    return f"cannot list runs: {exc.message}"


def incident_rows(executions: list[WorkflowExecution]) -> list[dict[str, Any]]:
    """Newest first: the server's order is by close time, a reader's by when things began."""
    rows = []
    for execution in sorted(executions, key=lambda e: e.start_time, reverse=True):
        attributes = execution.typed_search_attributes
        duration = (
            round((execution.close_time - execution.start_time).total_seconds(), 3)
            if execution.close_time
            else None
        )
        rows.append(
            {
                "started_at": execution.start_time.isoformat(),
                "workflow_id": execution.id,
                "run_id": execution.run_id,
                "workflow_type": execution.workflow_type,
                "kind": attributes.get(DR_KIND),
                "outcome": attributes.get(DR_OUTCOME),
                "duration_s": duration,
                "status": execution.status.name.lower() if execution.status else "unknown",
            }
        )
    return rows


def incidents_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no runs found"
    header = ("started (UTC)", "workflow id", "type", "kind", "outcome", "duration", "status")
    lines = [
        (
            _short_time(row["started_at"]),
            row["workflow_id"],
            row["workflow_type"],
            row["kind"] or "-",
            row["outcome"] or "-",
            f"{row['duration_s']:.1f} s" if row["duration_s"] is not None else "running",
            row["status"],
        )
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    )


def _short_time(iso: str) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
