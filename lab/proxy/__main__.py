"""python -m lab.proxy --name dr --port 18131

Serves vantage point ``--name``'s forward proxy on 127.0.0.1:``--port``. Control it with
``GET /__proxy/health`` and ``POST /__proxy/partition {"partitioned": true|false}``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from lab.cli_args import lab_name, port_number
from lab.proxy.server import VantageProxy, run_proxy


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.proxy",
        description="Serve a vantage point's HTTP forward proxy (its network path) on 127.0.0.1.",
    )
    parser.add_argument("--name", required=True, type=lab_name, help="the vantage point")
    parser.add_argument("--port", required=True, type=port_number)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(run_proxy(VantageProxy(args.name), args.port))
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"lab.proxy: cannot listen on 127.0.0.1:{args.port}: {reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
