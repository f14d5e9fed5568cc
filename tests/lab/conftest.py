"""A whole lab per test module, started and stopped through the real `drctl lab` commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.stack import LabState


class LabRun:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.stopped = False

    def drctl(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drctl", "lab", "--dir", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    @property
    def state(self) -> LabState:
        return LabState.model_validate_json((self.root / "state.json").read_text())

    def url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.state.components[component].spec.port}"

    def get(self, component: str, path: str, timeout_s: float = 2.0) -> Any:
        response = httpx.get(self.url(component) + path, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def status(self) -> dict[str, Any]:
        result = self.drctl("status", "--json")
        return dict(json.loads(result.stdout))

    def down(self) -> None:
        """Keep every workflow history, stop the lab, then scan its histories and logs for any
        of its credential values: every lab the suite starts is checked as it goes, whichever
        test process ran it."""
        if self.stopped:
            return
        self.stopped = True
        try:
            asyncio.run(archive_histories(self.root))
        finally:
            self.drctl("down")
        _, found = secret_findings(self.root)
        assert found == [], f"credential values where none may be: {found}"


HISTORY_ARCHIVE = "history-archive"


async def archive_histories(root: Path) -> int:
    """Write each workflow's history in the lab's Temporal to ROOT/history-archive/.

    The Temporal server goes with the lab; tests/faults/test_secrets.py reads these files."""
    from urllib.parse import quote

    from temporalio.client import Client

    from domain.topology import load_topology

    state_file = root / "state.json"
    if not state_file.exists():
        return 0
    topology = load_topology(root / "topology.toml")
    client = await asyncio.wait_for(Client.connect(topology.temporal.address), 10)
    archive = root / HISTORY_ARCHIVE
    archive.mkdir(exist_ok=True)
    count = 0
    async for execution in client.list_workflows():
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await asyncio.wait_for(handle.fetch_history(), 10)
        name = f"{quote(execution.id, safe='')}--{execution.run_id}.json"
        (archive / name).write_text(history.to_json())
        count += 1
    return count


def secret_findings(lab_root: Path) -> tuple[int, list[str]]:
    """(files read, "<secret name> in <file>" for every credential value found) over a lab's
    archived histories and its logs. Names, never values: the finding must not leak either."""
    from lab.stack import LabPaths, read_secrets

    secrets = {name: value for name, value in read_secrets(LabPaths(lab_root)).items() if value}
    files = [*(lab_root / HISTORY_ARCHIVE).glob("*.json"), *(lab_root / "logs").glob("*")]
    found = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        found += [f"{name} in {path}" for name, value in secrets.items() if value in text]
    return len(files), found


def start_lab(root: Path, *up_options: str) -> LabRun:
    run = LabRun(root)
    result = run.drctl("up", "--detach", "--ports", "auto", *up_options)
    if result.returncode != 0:
        run.drctl("down")
        raise AssertionError(f"lab up failed: {result.stderr}\n{result.stdout}")
    return run


@contextlib.contextmanager
def running_lab(factory: pytest.TempPathFactory, *up_options: str) -> Iterator[LabRun]:
    run = start_lab(factory.mktemp("lab"), *up_options)
    try:
        yield run
    finally:
        run.down()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    with running_lab(tmp_path_factory) as run:
        yield run


async def lease_of(lab: LabRun, system: str = "lab") -> tuple[int, str]:
    """(epoch, region) of the system's lease, read from the lab's real lease store."""
    from adapters.stores import open_lease_store
    from domain.topology import load_topology

    store = await open_lease_store(load_topology(lab.root / "topology.toml").lease)
    try:
        lease = await store.read(system)
    finally:
        await store.close()
    assert lease is not None
    return lease.epoch, lease.region


def route53(lab: LabRun) -> Any:
    """A boto3 Route 53 client on the lab's emulator, over HTTP, with the lab's credentials."""
    import boto3

    from lab.stack import LabPaths, read_secrets
    from lab.topology_gen import AWS_KEY_ENV, AWS_SECRET_ENV

    secrets = read_secrets(LabPaths(lab.root))
    return boto3.client(
        "route53",
        endpoint_url=lab.url("route53"),
        region_name="us-east-1",
        aws_access_key_id=secrets[AWS_KEY_ENV],
        aws_secret_access_key=secrets[AWS_SECRET_ENV],
    )


def weights_of(lab: LabRun, record: str) -> dict[str, int]:
    """Set identifier -> weight of one weighted record in the lab's Route 53, read now."""
    client = route53(lab)
    zone = client.list_hosted_zones_by_name(DNSName="lab.example.")["HostedZones"][0]["Id"]
    records = client.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return {r["SetIdentifier"]: int(r["Weight"]) for r in records if r["Name"] == record}


def inject_order(lab: LabRun, venue: str, client_order_id: str, epoch: int, **fields: Any) -> str:
    """Rest an order at a venue with no session or epoch check: an order some sender got in."""
    order = {"symbol": "MSFT", "side": "buy", "qty": 7, "price": "101.50"} | fields
    venue_call(
        lab, venue, "POST", "/admin/orders",
        json={"client_order_id": client_order_id, "epoch": epoch, "auto_fill": False, **order},
    )  # fmt: skip
    return client_order_id


def venue_key(lab: LabRun, venue: str) -> str:
    from lab.stack import LabPaths, read_secrets
    from lab.topology_gen import venue_key_env

    return read_secrets(LabPaths(lab.root))[venue_key_env(venue)]


def venue_call(lab: LabRun, venue: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(
        method,
        lab.url(f"venue-{venue}") + path,
        headers={"X-Api-Key": venue_key(lab, venue)},
        timeout=5,
        **kwargs,
    )
    response.raise_for_status()
    return response.json()


def drctl_runbook(
    lab: LabRun, *args: str, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    """A runbook command (failover, approve, status...) against this lab's topology."""
    return subprocess.run(
        [sys.executable, "-m", "drctl", "--config", str(lab.root / "topology.toml"), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


async def replay_and_record(topology_path: Path, workflow_ids: list[str], label: str) -> int:
    """Replay each workflow's live history against today's code; optionally keep the history.

    With DRCTL_RECORD_HISTORIES=DIR the histories are also written there, which is how the
    recorded histories under tests/unit/workflows/histories/ were made.
    """
    import os
    from urllib.parse import quote

    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Replayer

    from domain.topology import load_topology
    from workflows.registry import ALL_WORKFLOWS

    topology = load_topology(topology_path)
    client = await Client.connect(topology.temporal.address)
    replayer = Replayer(
        workflows=ALL_WORKFLOWS,
        data_converter=pydantic_data_converter,
    )
    record_dir = os.environ.get("DRCTL_RECORD_HISTORIES")
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        await replayer.replay_workflow(history)
        if record_dir:
            name = f"{label}--{quote(workflow_id, safe='')}.json"
            Path(record_dir, name).write_text(history.to_json())  # noqa: ASYNC240 - test-only
    return len(workflow_ids)
