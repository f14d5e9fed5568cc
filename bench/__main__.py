"""`make bench`: run every benchmark, print one table, write bench/results.json.

The table is the comparison a desk would make: each figure now, beside the value the README
published last turn, the target, and what others take for the same job (the anchors).
`python -m bench --only NAME` runs one benchmark and updates only its entry in results.json; the
table then shows the other benchmarks' figures from their last run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
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
# What others take, end to end, for the failover a desk compares us with.
END_TO_END_ANCHORS = (
    "ZeroCopy ~10 s total; TickDB article 23 s; orchestrator 10-13 s; Patroni defaults ~30-45 s"
)


@dataclass(frozen=True)
class Row:
    figure: str
    # As the README's Performance table published it at the start of this turn (commit 75f56b5).
    last_turn: str
    now: Callable[[dict[str, Any]], str | None]
    target: str = ""
    anchors: str = ""


def _get(results: dict[str, Any], path: str) -> Any:
    value: Any = results
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _s(path: str) -> Callable[[dict[str, Any]], str | None]:
    def shown(results: dict[str, Any]) -> str | None:
        value = _get(results, path)
        return None if value is None else f"{value:.3f} s"

    return shown


def _ms(path: str) -> Callable[[dict[str, Any]], str | None]:
    def shown(results: dict[str, Any]) -> str | None:
        value = _get(results, path)
        return None if value is None else f"{value:.2f} ms"

    return shown


def _rate(path: str) -> Callable[[dict[str, Any]], str | None]:
    def shown(results: dict[str, Any]) -> str | None:
        value = _get(results, path)
        return None if value is None else f"{value:,.0f} ev/s"

    return shown


def _durability_ratio(results: dict[str, Any]) -> str | None:
    durable = _get(results, "promotion.durable_start_to_dns_p50_s")
    plain = _get(results, "promotion.plain_start_to_dns_p50_s")
    if durable is None or not plain:
        return None
    return f"{durable / plain:.2f}x ({durable:.2f} vs {plain:.2f} s)"


def _database(key: str, unit: str = "s") -> Callable[[dict[str, Any]], str | None]:
    def shown(results: dict[str, Any]) -> str | None:
        if "promotion" not in results:
            return None
        value = _get(results, f"promotion.{key}")
        if value is None:
            return "n/a (no database in this lab)"
        return f"{value:.0%}" if unit == "share" else f"{value:.3f} s"

    return shown


def _ghosts(results: dict[str, Any]) -> str | None:
    cancelled = _get(results, "promotion.ghosts_cancelled")
    if cancelled is None:
        return None
    low, high = min(cancelled), max(cancelled)
    return f"{low}" if low == high else f"{low}-{high}"


def _monitor_actions(results: dict[str, Any]) -> str | None:
    value = _get(results, "monitor.actions_per_hour_steady_state")
    return None if value is None else f"{value:.0f}"


ROWS = (
    Row(
        "primary killed -> DR trading released, p50",
        "~5.9 s (2.12 s detection + 3.82 s)",
        _s("promotion.kill_to_released_p50_s"),
        "",
        END_TO_END_ANCHORS,
    ),
    Row(
        "monitor decision -> DR trading released, p50",
        "3.82 s (incl. 2.11 s re-confirming)",
        _s("promotion.decision_to_released_p50_s"),
        "<= 0.5 s",
        "orchestrator 10-13 s",
    ),
    Row(
        "  first venue trading, p50",
        "n/a (one release for all)",
        _s("promotion.decision_to_first_venue_p50_s"),
    ),
    Row(
        "lease taken -> DNS in sync, p50",
        "1.73 s",
        _s("promotion.lease_to_dns_p50_s"),
        "<= 0.5 s",
    ),
    Row(
        "durability overhead, Temporal / plain script",
        "n/a",
        _durability_ratio,
        "<= 1.5x",
    ),
    Row(
        "  plain script, start -> trading released",
        "n/a",
        _s("promotion.plain_start_to_released_p50_s"),
    ),
    Row(
        "database steps (check + fence + promote)",
        "n/a",
        _database("database_steps_p50_s"),
    ),
    Row("  DB + stream sync (sync_dr_state)", "n/a", _database("database_sync_p50_s")),
    Row(
        "  database share of the RTO",
        "n/a",
        _database("database_share_of_rto_p50", "share"),
    ),
    Row("orders cancelled per run (50 ghosts placed)", "50 of 50", _ghosts, "all ghosts"),
    Row(
        "Temporal overhead per sequential step",
        "50.1 ms",
        _ms("orchestration.overhead_per_step_ms"),
        "<= 10 ms",
    ),
    Row(
        "reconcile one venue, 100k fills + 10k orders",
        "3.00 s best (3.28 median)",
        _s("reconciliation.total_best_s"),
        "<= 0.5 s best",
    ),
    Row("  median of 5", "3.28 s", _s("reconciliation.total_median_s")),
    Row("  decoding, best", "1.75 s", _s("reconciliation.decode_best_s")),
    Row("  diff, best", "1.09 s", _s("reconciliation.diff_best_s")),
    Row(
        "  same, collector running, best",
        "3.00 s",
        _s("reconciliation.collector_running_best_s"),
    ),
    Row(
        "replication stored, publishing flat out",
        "~3,200 ev/s",
        _rate("replication_lag.throughput_stored_events_per_s"),
        ">= 20,000 ev/s",
    ),
    Row(
        "replication lag p99 at 5,000 ev/s",
        "2,916 ms",
        _ms("replication_lag.lag_p99_ms"),
        "<= 10 ms",
    ),
    Row("  lag p50", "1,731 ms", _ms("replication_lag.lag_p50_ms")),
    Row("DR mirror apply", "89,748 ev/s", _rate("book_apply.events_per_s"), ">= 50,000 ev/s"),
    Row(
        "monitor actions per target-hour, healthy",
        "18",
        _monitor_actions,
        "<= 60",
        "naive 1 s loop: 7,200",
    ),
    Row(
        "monitor detection, kill -> promotion start",
        "2.12 s",
        _s("monitor.detection_s"),
        "<= 4 s",
        "Patroni defaults ~30-45 s",
    ),
)
COLUMNS = ("figure", "last turn", "now", "target", "anchors")
WIDTHS = (46, 36, 30, 15)


def table(results: dict[str, Any]) -> list[str]:
    lines = [_line(COLUMNS)]
    for row in ROWS:
        now = row.now(results)
        if now is not None:
            lines.append(_line((row.figure, row.last_turn, now, row.target, row.anchors)))
    return lines


def _line(cells: tuple[str, ...]) -> str:
    padded = [f"{cell:<{width}}" for cell, width in zip(cells, WIDTHS, strict=False)]
    return " ".join([*padded, *cells[len(WIDTHS) :]]).rstrip()


def _promotion_steps(results: dict[str, Any]) -> list[str]:
    steps = _get(results, "promotion.step_p50_s") or {}
    return [f"  {name:<44} {seconds:.3f} s" for name, seconds in steps.items()]


# In the order they run: the pure and single-server ones first, the full lab ones last.
BENCHMARKS: dict[str, Callable[[], Figures]] = {
    "book_apply": book_apply.run,
    "replication_lag": replication_lag.run,
    "reconciliation": reconciliation_scale.run,
    "orchestration": orchestration_overhead.run,
    "promotion": promotion.run,
    "monitor": monitor_cost.run,
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
    started = time.perf_counter()
    for name in names:
        print(f"running {name} ...", flush=True)
        results[name] = BENCHMARKS[name]()
    # Other processes share the machine: the figures are only as quiet as it was.
    results["load_average"] = os.getloadavg()
    print(f"machine: {machine}; load average {results['load_average'][0]:.2f} (1 min)")
    print("\n".join(table(results)))
    if _get(results, "promotion.step_p50_s"):
        print("promotion steps, p50 (through Temporal):")
        print("\n".join(_promotion_steps(results)))
    print(f"took {time.perf_counter() - started:.0f} s")
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
