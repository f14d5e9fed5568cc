"""python -m lab.md_consumer --feed lab-md --nats nats://127.0.0.1:4222 --bucket dr-leases
--port 8131 --default-source md-a --default-url http://127.0.0.1:8121 [--poll-ms 200]"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence

from domain.topology import NatsStoreConfig

# The same rules as the market-data source's own flags, so a name valid there is valid here.
from lab.cli_args import lab_name, port_number, positive_int
from lab.md_consumer.app import MarketDataConsumer, create_app
from lab.service import serve

HTTP_URL = re.compile(r"^https?://\S+$")
NATS_URL = re.compile(r"^(nats|tls)://\S+$")


def http_url(text: str) -> str:
    if not HTTP_URL.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: give a URL like http://127.0.0.1:8121")
    return text.rstrip("/")


def nats_url(text: str) -> str:
    if not NATS_URL.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: give a URL like nats://127.0.0.1:4222")
    return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.md_consumer",
        description=(
            "Follow the market-data source named under md/<feed>/active in a NATS KV bucket "
            "and serve what it receives on 127.0.0.1."
        ),
    )
    parser.add_argument("--feed", required=True, type=lab_name)
    parser.add_argument("--nats", required=True, type=nats_url, help="e.g. nats://127.0.0.1:4222")
    parser.add_argument("--bucket", required=True, type=lab_name, help="e.g. dr-leases")
    parser.add_argument("--port", required=True, type=port_number)
    parser.add_argument(
        "--default-source",
        required=True,
        type=lab_name,
        help="followed while md/<feed>/active is not set",
    )
    parser.add_argument("--default-url", required=True, type=http_url)
    parser.add_argument("--poll-ms", type=positive_int, default=200)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per poll would drown the switch lines the log is read for.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    consumer = MarketDataConsumer(args.feed, args.default_source, args.default_url)
    # The lab's active-source store is NATS KV (the lease's bucket); the consumer reaches it
    # through the store port like any other.
    store = NatsStoreConfig(url=args.nats, bucket=args.bucket)
    serve(create_app(consumer, store, args.poll_ms / 1000), args.port)


if __name__ == "__main__":
    main()
