"""`drctl venues check`: log on to each venue of a system through its adapter, read-only, and
say what it answered. Run it before trusting a topology; the Drill runs the same check
(activities/venue_check.py) as its pre-flight."""

from __future__ import annotations

import argparse

from activities.venue_check import DEFAULT_FILLS_MINUTES, check_venues
from domain.venue_check import VenueCheck, VenuesCheck
from drctl.runbook_commands import CommandError, run_async, topology_of

_COLUMNS = (
    "venue", "adapter", "check", "session", "open orders", "fills", "capabilities", "error",
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    venues = sub.add_parser("venues", help="the venues a system trades on")
    cmds = venues.add_subparsers(dest="venues_command", required=True)
    check = cmds.add_parser(
        "check",
        help="log on to each venue through its adapter, read-only: open orders, recent fills, "
        "declared capabilities, log out; exit 1 if any venue fails",
    )
    check.add_argument("--system", required=True)
    check.add_argument(
        "--fills-minutes",
        type=float,
        default=DEFAULT_FILLS_MINUTES,
        metavar="MINUTES",
        help=f"count fills of the last MINUTES (default {DEFAULT_FILLS_MINUTES:g})",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="bound on each venue's whole check (default: 5 x the venue's timeout_s)",
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=lambda a: run_async(_check(a)))


async def _check(args: argparse.Namespace) -> int:
    if args.fills_minutes <= 0:
        raise CommandError(f"--fills-minutes must be positive, got {args.fills_minutes:g}")
    if args.timeout is not None and args.timeout <= 0:
        raise CommandError(f"--timeout must be positive, got {args.timeout:g}")
    topology = topology_of(args)
    try:
        result = await check_venues(
            topology, args.system, fills_minutes=args.fills_minutes, timeout_s=args.timeout
        )
    except KeyError as exc:
        raise CommandError(str(exc.args[0])) from None
    print(result.model_dump_json(indent=2) if args.json else "\n".join(check_lines(result)))
    return 0 if result.ok else 1


def check_lines(result: VenuesCheck) -> list[str]:
    """The check as a table for a person, then a one-line verdict."""
    rows = [_COLUMNS, *(_row(v) for v in result.venues)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = result.failed
    verdict = (
        f"all {len(result.venues)} venues of {result.system} ok"
        if not failed
        else f"{len(failed)} of {len(result.venues)} venues of {result.system} FAILED"
    )
    return [*lines, f"{verdict} (fills counted over the last {result.fills_minutes:g} min)"]


def _row(check: VenueCheck) -> tuple[str, ...]:
    malformed = f" (+{check.malformed} malformed)" if check.malformed else ""
    return (
        check.venue,
        check.adapter,
        "ok" if check.ok else "FAILED",
        "-" if check.session_s is None else f"{check.session_s:.3f} s",
        "-" if check.open_orders is None else f"{check.open_orders:,}",
        "-" if check.fills is None else f"{check.fills:,}{malformed}",
        ", ".join(c.value for c in check.capabilities) or "none",
        check.error or "",
    )
