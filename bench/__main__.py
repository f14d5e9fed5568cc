"""`make bench`: run every benchmark, print a table, write bench/results.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench import book_apply


def main() -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results = {"machine": machine, "book_apply": book_apply.run()}
    apply = results["book_apply"]
    print(f"machine: {machine}")
    print(f"{'benchmark':<32}{'figure':>16}  target")
    print(f"{'DR mirror apply':<32}{apply['events_per_s']:>12,.0f} ev/s  >= 50,000 ev/s")
    Path("bench/results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
