"""drctl entry point. Errors a user can fix print one line and exit non-zero; no traceback."""

from __future__ import annotations

import argparse
import sys

from domain.topology import TopologyError
from drctl import lab_commands
from lab.processes import LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drctl", description="Durable failover runbooks for trading infrastructure."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    lab_commands.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (LabError, TopologyError) as exc:
        print(f"drctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
