"""`drctl lab ...`: bring the embedded lab up and down, report on it, inject faults."""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path

from drctl import lab_alerts
from lab import stack
from lab.processes import LabError

# `--ports auto`: how many sets of free ports to try when one is taken before the lab binds it.
AUTO_PORT_ATTEMPTS = 3


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser("lab", help="the embedded lab: a simulated trading stack on loopback")
    lab.add_argument("--dir", type=Path, default=Path(".lab"), help="lab directory (default .lab)")
    cmds = lab.add_subparsers(dest="lab_command", required=True)

    up = cmds.add_parser("up", help="start every lab component")
    up.add_argument("--detach", action="store_true", help="return once everything is ready")
    up.add_argument(
        "--ports",
        choices=["default", "auto"],
        default="default",
        help="default: the documented ports; auto: any free ports",
    )
    up.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="move one component, e.g. --port temporal-ui=9233 (repeatable)",
    )
    up.add_argument(
        "--venue-cooldown-s",
        type=float,
        default=3.0,
        help="the venues' reconnect cooldown after an unclean disconnect (default 3)",
    )
    up.add_argument(
        "--keep-state",
        action="store_true",
        help="keep the last lab's data (Temporal histories, NATS store and lease, the "
        "PostgreSQL pair); by default every `lab up` starts from a clean lab",
    )
    up.set_defaults(run=_up)

    down = cmds.add_parser("down", help="stop everything `lab up` started")
    down.set_defaults(run=_down)

    status = cmds.add_parser("status", help="every component's health and the replication lag")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for all healthy and DR within 1 s of the primary",
    )
    status.set_defaults(run=_status)

    lab_alerts.add_parser(cmds)

    chaos = cmds.add_parser("chaos", help="inject a real fault into one component, or heal it")
    chaos.add_argument(
        "action",
        choices=[
            "kill", "hang", "slow", "heal", "stale", "dup-seq", "reversed-seq", "partition", "lag",
        ],
    )  # fmt: skip
    chaos.add_argument(
        "target",
        help="primary | dr | nats | worker | temporal | venue NAME | md NAME | vantage NAME | "
        "db-primary | db-replica | db (kill db-primary, lag db, heal db)",
    )
    chaos.add_argument("name", nargs="?", default=None)
    chaos.add_argument("--ms", type=int, default=500, help="added latency for `slow`")
    chaos.set_defaults(run=_chaos)


def _up(args: argparse.Namespace) -> int:
    auto = args.ports == "auto"
    for attempt in range(1, AUTO_PORT_ATTEMPTS + 1):
        ports = stack.choose_ports(auto, args.port)
        try:
            state = stack.up(args.dir, ports, args.venue_cooldown_s, keep_state=args.keep_state)
            break
        except stack.PortsBusy:
            # Free ports taken since they were picked: pick again. Ports a user named stay as named.
            if not auto or args.port or attempt == AUTO_PORT_ATTEMPTS:
                raise
    if state.cleaned_up:
        print(
            f"stopped what a previous lab left running in {state.dir}: "
            f"{', '.join(state.cleaned_up)}"
        )
    kept = "kept from the last lab" if args.keep_state else "fresh"
    print(f"lab up in {state.dir}: {len(state.components)} processes, {kept} data")
    print(f"  topology     {state.topology_path}")
    print(f"  Temporal UI  http://127.0.0.1:{state.ports.temporal_ui}")
    print(
        f"  PostgreSQL   primary :{state.ports.postgres_primary}, DR replica "
        f":{state.ports.postgres_dr} (connection strings in {state.dir / 'secrets.env'})"
    )
    print(f"  metrics      http://127.0.0.1:{state.ports.worker_metrics}/metrics (worker)")
    print(f"  logs         {state.dir / 'logs'}")
    if args.detach:
        return 0
    print("press Ctrl-C to stop the lab")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    stack.down(args.dir)
    print("lab stopped")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stack.down(args.dir)
    print(f"stopped {len(stopped)} process(es)" if stopped else "no lab running")
    return 0


def _status(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.wait
    report = stack.status(args.dir)
    while not _settled(report) and time.monotonic() < deadline:
        time.sleep(0.25)
        report = stack.status(args.dir)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        _print_status(report)
    return 0 if _settled(report) else 1


def _settled(report: stack.LabStatus) -> bool:
    return (
        report.healthy and report.replication is not None and report.replication.in_sync_within_1s
    )


def _print_status(report: stack.LabStatus) -> None:
    print(f"lab {report.dir}  ({'healthy' if report.healthy else 'NOT healthy'})")
    print(f"Temporal UI: {report.temporal_ui}")
    for c in report.components:
        mark = "ok " if c.healthy else "BAD"
        extra = ""
        if c.kind == "oms" and c.detail:
            d = c.detail
            extra = (
                f"{d.get('role')}/{d.get('trading_state')} epoch {d.get('epoch')} "
                f"published {d.get('last_published_seq')} applied {d.get('last_applied_seq')}"
            )
        if c.kind == "postgres":
            extra = _database_line(c.detail)
        print(f"  [{mark}] {c.name:<16} pid {c.pid:<8} port {c.port:<6} {c.process:<8} {extra}")
    r = report.replication
    if r is not None:
        lag = "unknown" if r.lag_s is None else f"{r.lag_s:.3f} s"
        print(
            f"replication: primary published seq {r.primary_published_seq}, DR applied seq "
            f"{r.dr_applied_seq} ({r.behind_events} behind, lag {lag})"
        )
    if report.metrics:
        print("metrics (Prometheus):")
        for name, url in report.metrics.items():
            print(f"  {name:<16} {url}")


def _database_line(detail: dict[str, object]) -> str:
    """``replica, streaming, lag 0 B / 0.000 s`` (``replay paused`` under `chaos lag db`)."""
    words = [str(detail.get("role"))]
    if "streaming" in detail:
        words.append("streaming" if detail["streaming"] else "NOT streaming")
    if "lag_bytes" in detail:
        words.append(f"lag {detail['lag_bytes']} B / {detail['lag_s']} s")
        if detail.get("replay_paused"):
            words.append("replay paused")
    return ", ".join(words)


def _chaos(args: argparse.Namespace) -> int:
    print(stack.chaos(args.dir, args.action, args.target, args.name, args.ms))
    return 0


ERRORS = (LabError,)
