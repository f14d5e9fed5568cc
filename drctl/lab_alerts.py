"""`drctl lab alerts`: what the runbooks told the humans, as the lab's alert receiver saw it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import httpx

from lab import stack
from lab.processes import LabError

RECEIVER = "alerts"


def add_parser(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``alerts`` on the ``lab`` command's sub-parsers (which carry ``--dir``)."""
    alerts = cmds.add_parser("alerts", help="alerts the lab's webhook receiver has received")
    alerts.add_argument("--json", action="store_true", help="print the receiver's JSON as is")
    alerts.set_defaults(run=_alerts)


def _alerts(args: argparse.Namespace) -> int:
    page = fetch_alerts(args.dir)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    entries = page.get("alerts", [])
    if not entries:
        print("no alerts received")
    for entry in entries:
        print(describe(entry))
    return 0


def fetch_alerts(lab_dir: Path) -> dict[str, Any]:
    state = stack.require_state(lab_dir)
    component = state.components.get(RECEIVER)
    if component is None:
        raise LabError("this lab has no alert receiver; restart it with drctl lab up")
    url = f"http://127.0.0.1:{component.spec.port}/alerts"
    try:
        response = httpx.get(url, timeout=5.0)
        response.raise_for_status()
        return dict(response.json())
    except (httpx.HTTPError, ValueError) as exc:
        raise LabError(
            f"the alert receiver on port {component.spec.port} did not answer ({exc}); "
            "check `drctl lab status`"
        ) from None


def describe(entry: dict[str, Any]) -> str:
    """One line: time, severity, kind, summary. The receiver stores any JSON object, so every
    field may be missing."""
    alert = entry.get("alert") or {}
    return (
        f"{entry.get('received_at', '-')}  {alert.get('severity', '-'):<8}  "
        f"{alert.get('kind', '-'):<19}  {alert.get('summary', '')}"
    )
