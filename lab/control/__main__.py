"""python -m lab.control --root LAB_DIR --port 18150 [--key-env LAB_CONTROL_API_KEY]"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lab.cli_args import port_number
from lab.control.app import create_app
from lab.service import serve
from lab.topology_gen import LAB_CONTROL_KEY_ENV


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.control",
        description="Serve the lab's control (chaos) API on 127.0.0.1.",
    )
    parser.add_argument("--root", required=True, type=Path, help="the lab's directory")
    parser.add_argument("--port", required=True, type=port_number)
    parser.add_argument("--key-env", default=LAB_CONTROL_KEY_ENV)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    key = os.environ.get(args.key_env, "")
    if not key:
        print(f"lab.control: {args.key_env} is not set", file=sys.stderr)
        sys.exit(2)
    serve(create_app(args.root, key), args.port)


if __name__ == "__main__":
    main()
