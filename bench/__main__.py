"""`make bench`: run every benchmark, print a table, write bench/results.json.

`python -m bench --only NAME` runs one benchmark and updates only its entry in results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    book_apply,
    monitor_cost,
    orchestration_overhead,
    promotion,
    reconciliation_scale,
    replication_lag,
)

RESULTS = Path("bench/results.json")
Figures = dict[str, Any]
NAME_WIDTH = 44


def _row(name: str, figure: str, target: str = "") -> str:
    return f"{name:<{NAME_WIDTH}}{figure:>14}  {target}".rstrip()


def _book_apply(r: dict[str, Any]) -> list[str]:
    return [_row("DR mirror apply", f"{r['events_per_s']:,.0f} ev/s", ">= 50,000 ev/s")]


def _replication_lag(r: dict[str, Any]) -> list[str]:
    rate = f"at {r['offered_events_per_s']:,.0f} ev/s"
    return [
        _row(f"replication lag p50, {rate}", f"{r['lag_p50_ms']:.2f} ms"),
        _row(f"replication lag p99, {rate}", f"{r['lag_p99_ms']:.2f} ms", "<= 10 ms"),
        _row("replication lag max", f"{r['lag_max_ms']:.2f} ms"),
        _row(
            "  stored / applied rate",
            f"{r['stored_events_per_s']:,.0f} / {r['applied_events_per_s']:,.0f} ev/s",
        ),
        _row("  publisher outbox backlog, max", f"{r['max_outbox_backlog']:,} events"),
    ]


def _reconciliation(r: dict[str, Any]) -> list[str]:
    scale = f"{r['venue_fill_reports']:,} fills + {r['venue_open_orders']:,} orders"
    return [
        _row(
            f"reconcile one venue, {scale}, best",
            f"{r['total_best_s']:.3f} s",
            f"<= 1 s (median {r['total_median_s']:.3f} s)",
        ),
        _row("  decoding reports + DR book, best", f"{r['decode_best_s']:.3f} s"),
        _row("  diff (orders, fills, positions), best", f"{r['diff_best_s']:.3f} s"),
    ]


def _orchestration(r: dict[str, Any]) -> list[str]:
    return [
        _row(
            f"sequential activity step via Temporal ({r['steps']})",
            f"{r['per_step_ms']:.2f} ms",
        ),
        _row("  same activity called directly", f"{r['direct_per_step_ms'] * 1000:.2f} us"),
        _row("  Temporal overhead per step", f"{r['overhead_per_step_ms']:.2f} ms"),
        _row("  workflow start + finish, no steps", f"{r['workflow_fixed_median_s']:.3f} s"),
        *(
            _row(f"  step median: {name.removesuffix('_ms').replace('_', ' ')}", f"{ms:.2f} ms")
            for name, ms in r["step_median_ms"].items()
        ),
    ]


def _promotion(r: dict[str, Any]) -> list[str]:
    return [
        _row(
            "promotion lease -> DNS in sync, p50",
            f"{r['lease_to_dns_p50_s']:.3f} s",
            "<= 1 s (3 venues x 1,000 orders, 50 ghosts)",
        ),
        _row("promotion start -> trading released, p50", f"{r['rto_p50_s']:.3f} s"),
        *(_row(f"  {step}", f"{seconds:.3f} s") for step, seconds in r["step_p50_s"].items()),
        f"ghosts cancelled per run: {r['ghosts_cancelled']} (of {r['ghosts']})",
    ]


def _monitor(r: dict[str, Any]) -> list[str]:
    return [
        _row(
            "monitor actions per target-hour, healthy",
            f"{r['actions_per_hour_steady_state']:.0f}",
            f"<= 60 (naive 1 s loop: {r['naive_loop_actions_per_hour']:,.0f})",
        ),
        _row(
            "  measured over a healthy minute",
            f"{r['healthy_events']} events, {r['healthy_actions']} actions",
        ),
        _row(
            "monitor detection, kill -> promotion start",
            f"{r['detection_s']:.3f} s",
            f"<= {r['detection_budget_s']:g} s",
        ),
    ]


# In the order they run: the pure and single-server ones first, the full lab ones last.
BENCHMARKS: dict[str, tuple[Callable[[], Figures], Callable[[Figures], list[str]]]] = {
    "book_apply": (book_apply.run, _book_apply),
    "replication_lag": (replication_lag.run, _replication_lag),
    "reconciliation": (reconciliation_scale.run, _reconciliation),
    "orchestration": (orchestration_overhead.run, _orchestration),
    "promotion": (promotion.run, _promotion),
    "monitor": (monitor_cost.run, _monitor),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=list(BENCHMARKS), help="run this benchmark alone")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(BENCHMARKS)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    # One benchmark alone keeps the other entries from the last run that measured them.
    results: dict[str, Any] = (
        json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    )
    results["machine"] = machine
    print(f"machine: {machine}")
    print(_row("benchmark", "figure", "target"))
    started = time.perf_counter()
    for name in names:
        measure, rows = BENCHMARKS[name]
        results[name] = measure()
        print("\n".join(rows(results[name])), flush=True)
    print(f"took {time.perf_counter() - started:.0f} s")
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
