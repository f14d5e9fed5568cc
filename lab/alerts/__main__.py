"""python -m lab.alerts --port 18090 [--url-env LAB_ALERT_WEBHOOK_URL]

The token is the last path segment of the webhook URL in ``--url-env``: the same variable the
notify activity reads, so receiver and sender cannot disagree about it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from lab.alerts.app import create_app
from lab.cli_args import port_number
from lab.service import serve
from lab.topology_gen import ALERT_URL_ENV


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lab.alerts",
        description="Serve the lab's alert webhook receiver on 127.0.0.1.",
    )
    parser.add_argument("--port", required=True, type=port_number)
    parser.add_argument(
        "--url-env",
        default=ALERT_URL_ENV,
        help=f"variable holding the webhook URL, .../alerts/<token> (default {ALERT_URL_ENV})",
    )
    return parser.parse_args(argv)


def token_from_url(url: str) -> str:
    """The ``<token>`` of ``.../alerts/<token>``, or "" if the URL does not have that shape."""
    segments = urlsplit(url).path.strip("/").split("/")
    if len(segments) >= 2 and segments[-2] == "alerts":
        return segments[-1]
    return ""


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    token = token_from_url(os.environ.get(args.url_env, ""))
    if not token:
        # Never echo the URL: its last segment is the secret.
        print(
            f"lab.alerts: {args.url_env} is not set to a webhook URL ending in /alerts/<token>",
            file=sys.stderr,
        )
        sys.exit(2)
    serve(create_app(token), args.port)


if __name__ == "__main__":
    main()
