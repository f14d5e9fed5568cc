"""Run one simulated venue: ``python -m lab.venue --name alpha --port 8111 --api-key-env VAR``."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import SecretStr, ValidationError

from lab.service import serve
from lab.venue.app import create_app
from lab.venue.config import VenueSettings


def _parser() -> argparse.ArgumentParser:
    defaults = VenueSettings.model_fields
    parser = argparse.ArgumentParser(prog="python -m lab.venue", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--api-key-env",
        required=True,
        help="name of the environment variable holding the API key (the key itself is never "
        "taken on the command line, where ps would show it)",
    )
    parser.add_argument(
        "--api-secret-env",
        default=None,
        help="name of the environment variable holding the secret that signs requests to the "
        "Binance-compatible face (/api/v3); without it the face refuses signed requests",
    )
    # Defaults come from VenueSettings, their one home.
    for field in (
        "reconnect_cooldown_s",
        "session_timeout_s",
        "fill_interval_s",
        "fill_probability",
    ):
        flag = "--" + field.replace("_", "-")
        parser.add_argument(flag, type=float, default=defaults[field].default)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--symbols",
        default=None,
        help="comma-separated symbols the Binance face lists in exchangeInfo "
        "(default: the lab's own)",
    )
    parser.add_argument(
        "--fix-port",
        type=int,
        default=None,
        help="also serve the FIX 4.4 acceptor on this port (same book, sessions and faults)",
    )
    return parser


def _describe_bad_flags(exc: ValidationError) -> str:
    """One line naming each offending flag as the user typed it."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        flag = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "arguments"
        problems.append(f"{flag}: {error['msg']}")
    return "; ".join(problems)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api_key = os.environ.get(args.api_key_env, "")
    if not api_key:
        print(
            f"lab.venue: environment variable {args.api_key_env} is unset or empty; "
            "set it to this venue's API key",
            file=sys.stderr,
        )
        return 2
    api_secret = os.environ.get(args.api_secret_env, "") if args.api_secret_env else None
    if api_secret == "":
        print(
            f"lab.venue: environment variable {args.api_secret_env} is unset or empty; "
            "set it to the Binance face's API secret",
            file=sys.stderr,
        )
        return 2
    try:
        settings = VenueSettings(
            name=args.name,
            api_key=SecretStr(api_key),
            api_secret=SecretStr(api_secret) if api_secret else None,
            reconnect_cooldown_s=args.reconnect_cooldown_s,
            session_timeout_s=args.session_timeout_s,
            fill_interval_s=args.fill_interval_s,
            fill_probability=args.fill_probability,
            seed=args.seed,
            **({"symbols": tuple(args.symbols.split(","))} if args.symbols else {}),
            fix_port=args.fix_port,
        )
    except ValidationError as exc:
        print(f"lab.venue: {_describe_bad_flags(exc)}", file=sys.stderr)
        return 2
    # Names the variable, never its value: this line ends up in the lab's log files.
    print(
        f"lab.venue: {settings.name} serving on http://127.0.0.1:{args.port} "
        f"(API key from ${args.api_key_env})",
        file=sys.stderr,
        flush=True,
    )
    serve(create_app(settings), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
