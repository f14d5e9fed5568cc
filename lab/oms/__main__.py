"""Run one lab OMS node: ``python -m lab.oms --config T --system lab --region primary --port P``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from domain.database import DatabaseConfigError
from domain.topology import TopologyError, load_topology
from domain.venues import VenueConfigError
from lab.oms.app import create_app
from lab.oms.node import OmsNode
from lab.service import serve


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.oms")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        topology = load_topology(args.config)
        system = topology.system(args.system)
    except (TopologyError, KeyError) as exc:
        print(f"lab.oms: {exc}", file=sys.stderr)
        return 2
    if args.region not in (system.primary_region, system.dr_region):
        print(
            f"lab.oms: region {args.region!r} is neither {system.primary_region!r} nor "
            f"{system.dr_region!r} of system {system.name!r}",
            file=sys.stderr,
        )
        return 2
    try:
        node = OmsNode(topology, system, args.region, args.seed)
    except (DatabaseConfigError, VenueConfigError) as exc:
        print(f"lab.oms: {exc}", file=sys.stderr)
        return 2
    serve(create_app(node), args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
