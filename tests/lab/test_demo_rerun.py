"""The demo runs again: `lab up` after a failover, or after a crashed start, gives a lab whose
primary trades, and a lab kept with the lease at DR says what to do."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from domain.topology import load_topology
from lab.processes import alive, wait_until
from tests.lab.conftest import LabRun, lease_of, start_lab


async def _hand_lease_to_dr(lab: LabRun) -> int:
    """What a promotion leaves behind, without running one: DR takes a new tenure."""
    from adapters.stores import open_lease_store

    store = await open_lease_store(load_topology(lab.root / "topology.toml").lease)
    try:
        current = await store.read("lab")
        lease = await store.take_over("lab", "dr", "test:demo-rerun", current)
    finally:
        await store.close()
    return lease.epoch


def _primary_trading(lab: LabRun) -> bool:
    return bool(lab.get("oms-primary", "/health")["trading_state"] == "trading")


def test_a_lab_left_with_the_lease_at_dr_comes_back_fresh_and_trading(tmp_path: Path) -> None:
    lab = start_lab(tmp_path / "lab")
    try:
        epoch = asyncio.run(_hand_lease_to_dr(lab))
        assert epoch == 2
        # The primary cannot renew a lease it no longer holds: it stops trading by itself.
        assert wait_until(lambda: not _primary_trading(lab), 30, poll_s=0.2)  # poll
        assert lab.drctl("down").returncode == 0

        kept = lab.drctl("up", "--detach", "--ports", "auto", "--keep-state")
        assert kept.returncode == 1, kept.stdout + kept.stderr
        assert (
            "the lease for lab is held by region dr at epoch 2: run `drctl failback --system "
            "lab --approver NAME`"
        ) in kept.stderr
        assert "without --keep-state for a fresh lab" in kept.stderr
        assert lab.drctl("down").returncode == 0

        fresh = lab.drctl("up", "--detach", "--ports", "auto")
        assert fresh.returncode == 0, fresh.stdout + fresh.stderr
        assert "fresh data" in fresh.stdout
        assert _primary_trading(lab)
        assert asyncio.run(lease_of(lab)) == (1, "primary")
    finally:
        lab.down()


def test_a_lab_whose_last_start_crashed_is_cleaned_up_and_started_afresh(tmp_path: Path) -> None:
    lab = start_lab(tmp_path / "lab")
    try:
        old = lab.state
        old_pids = [c.pid for c in old.components.values()]
        # A start killed before it finished: state.json not marked ready, and the last
        # process it started never recorded.
        crashed = json.loads((lab.root / "state.json").read_text())
        crashed["ready"] = False
        unrecorded = crashed["components"].pop("control")["pid"]
        (lab.root / "state.json").write_text(json.dumps(crashed))

        again = lab.drctl("up", "--detach", "--ports", "auto")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "stopped what a previous lab left running" in again.stdout
        assert f"pid {unrecorded}" in again.stdout
        new_pids = {c.pid for c in lab.state.components.values()}
        assert not [pid for pid in old_pids if alive(pid) and pid not in new_pids]
        assert not alive(unrecorded) or unrecorded in new_pids
        assert _primary_trading(lab)
        assert asyncio.run(lease_of(lab)) == (1, "primary")
    finally:
        lab.down()
