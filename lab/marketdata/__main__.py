"""python -m lab.marketdata --name md-a --port 8121 [--symbols AAPL,MSFT,ESZ6] ..."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from lab.cli_args import lab_name, port_number, positive_int
from lab.marketdata.app import create_app
from lab.service import serve

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "ESZ6")
SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9./-]{0,15}$")


def symbol_list(text: str) -> tuple[str, ...]:
    symbols = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in symbols if not SYMBOL.match(s)]
    if not symbols or bad:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated upper-case symbols like AAPL,MSFT,ESZ6"
        )
    if len(set(symbols)) != len(symbols):
        raise argparse.ArgumentTypeError(f"{text!r}: a symbol is listed twice")
    return symbols


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.marketdata",
        description="Serve a simulated market-data source on 127.0.0.1.",
    )
    parser.add_argument("--name", required=True, type=lab_name)
    parser.add_argument("--port", required=True, type=port_number)
    parser.add_argument("--symbols", type=symbol_list, default=DEFAULT_SYMBOLS)
    parser.add_argument("--tick-interval-ms", type=positive_int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="makes the price walk repeatable")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    serve(create_app(args.name, args.symbols, args.tick_interval_ms, args.seed), args.port)


if __name__ == "__main__":
    main()
