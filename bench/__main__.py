"""`make bench`: run every benchmark, print a table, write bench/results.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench import book_apply, monitor_cost, promotion


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    apply = book_apply.run()
    rto = promotion.run(runs=3)
    cost = monitor_cost.run()
    results = {"machine": machine, "book_apply": apply, "promotion": rto, "monitor": cost}
    print(f"machine: {machine}")
    print(f"{'benchmark':<44}{'figure':>14}  target")
    print(f"{'DR mirror apply':<44}{apply['events_per_s']:>9,.0f} ev/s  >= 50,000 ev/s")
    print(
        f"{'promotion lease -> DNS in sync, p50':<44}{rto['lease_to_dns_p50_s']:>12.3f} s  "
        "<= 1 s (3 venues x 1,000 orders, 50 ghosts)"
    )
    print(f"{'promotion start -> trading released, p50':<44}{rto['rto_p50_s']:>12.3f} s")
    for step, seconds in rto["step_p50_s"].items():
        print(f"  {step:<42}{seconds:>12.3f} s")
    print(f"ghosts cancelled per run: {rto['ghosts_cancelled']} (of {rto['ghosts']})")
    print(
        f"{'monitor actions per target-hour, healthy':<44}"
        f"{cost['actions_per_hour_steady_state']:>12.0f}    <= 60 (naive 1 s loop: "
        f"{cost['naive_loop_actions_per_hour']:,.0f})"
    )
    print(
        f"{'  measured over a healthy minute':<44}{cost['healthy_events']:>7} events, "
        f"{cost['healthy_actions']} actions"
    )
    print(
        f"{'monitor detection, kill -> promotion start':<44}{cost['detection_s']:>12.3f} s  "
        f"<= {cost['detection_budget_s']:g} s"
    )
    Path("bench/results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
