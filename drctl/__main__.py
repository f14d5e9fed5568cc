"""drctl entry point. Errors a user can fix print one line and exit non-zero; no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from domain.topology import TopologyError
from drctl import (
    drill_commands,
    lab_commands,
    monitor_commands,
    review_commands,
    runbook_commands,
    venues_commands,
)
from drctl.runbook_commands import CommandError
from lab.processes import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drctl", description="Durable failover runbooks for trading infrastructure."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="topology file (default: $DRCTL_CONFIG, else .lab/topology.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    runbook_commands.add_parsers(sub)
    monitor_commands.add_parser(sub)
    drill_commands.add_parsers(sub)
    lab_commands.add_parser(sub)
    review_commands.add_parsers(sub)
    venues_commands.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (LabError, TopologyError, CommandError) as exc:
        print(f"drctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console entry point. Exits without interpreter finalization: the Temporal client's
    native threads can otherwise call into a half-finalized interpreter and abort the process
    after the command has already succeeded."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
