"""`drctl report | history export | incidents` against a real Temporal dev server: a small
runbook-shaped workflow runs (an activity that fails once, an operator's approval, our search
attributes), then an operator reviews it the way they would after an incident."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
)
from temporalio.worker import Worker

from domain.topology import parse_topology
from drctl.__main__ import main
from drctl.review_commands import incidents_query
from lab.topology_gen import LabPorts, lab_topology_toml
from tests.conftest import DevServer
from tests.integration.review_rehearsal import ReviewRehearsal, acquire_lease

TASK_QUEUE = "review-live"
RUN_TIMEOUT_S = 30.0


@pytest.fixture
def config(dev_server: DevServer, tmp_path: Path) -> Path:
    path = tmp_path / "topology.toml"
    text = lab_topology_toml(LabPorts(temporal=dev_server.port))
    path.write_text(text)
    assert parse_topology(text).temporal.address == dev_server.address
    return path


async def drctl(*args: str) -> int:
    # drctl runs its own event loop; the worker keeps running in this one.
    return await asyncio.to_thread(main, list(args))


async def test_an_operator_reviews_a_finished_run_live_and_from_its_export(
    dev_server: DevServer,
    client: Client,
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workflow_id = "dr-promotion/lab-review"
    attributes = TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword("DrSystem"), "lab"),
            SearchAttributePair(SearchAttributeKey.for_keyword("DrKind"), "drill"),
            SearchAttributePair(SearchAttributeKey.for_keyword("DrOutcome"), "running"),
        ]
    )
    async with Worker(
        client, task_queue=TASK_QUEUE, workflows=[ReviewRehearsal], activities=[acquire_lease]
    ):
        handle = await client.start_workflow(
            ReviewRehearsal.run,
            {"system": "lab"},
            id=workflow_id,
            task_queue=TASK_QUEUE,
            search_attributes=attributes,
        )
        await handle.execute_update(ReviewRehearsal.approve, {"approver": "bob"})
        await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)

    live, export, from_file = (tmp_path / n for n in ("live.json", "x.json", "file.json"))
    c = str(config)
    assert (
        await drctl("--config", c, "report", workflow_id, "--format", "json", "-o", str(live)) == 0
    )
    assert await drctl("--config", c, "history", "export", workflow_id, "-o", str(export)) == 0
    assert (
        await drctl(
            "--config",
            c,
            "report",
            "--from-file",
            str(export),
            "--format",
            "json",
            "-o",
            str(from_file),
        )
        == 0
    )
    assert from_file.read_bytes() == live.read_bytes()
    review = json.loads(live.read_text())
    (lease,) = [e for e in review["timeline"] if e["name"] == "acquire_lease"]
    assert lease["attempts"] == 2 and lease["status"] == "completed"
    assert lease["failures"] == ["attempt 1: lease store for lab unavailable"]
    (approval,) = review["operator_actions"]
    assert (approval["name"], approval["by"], approval["result"]) == (
        "approve",
        "bob",
        "approved by bob",
    )
    assert review["search_attributes"]["DrOutcome"] == "promoted"
    capsys.readouterr()

    # Visibility is eventually consistent: the upserted outcome shows up shortly after.
    deadline = asyncio.get_running_loop().time() + RUN_TIMEOUT_S
    while True:
        assert await drctl("--config", c, "incidents", "--kind", "drill", "--json") == 0
        rows = json.loads(capsys.readouterr().out)
        if rows and rows[0]["outcome"] == "promoted":
            break
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.2)  # poll
    assert [(r["workflow_id"], r["workflow_type"], r["kind"], r["status"]) for r in rows] == [
        (workflow_id, "ReviewRehearsal", "drill", "completed")
    ]
    assert await drctl("--config", c, "incidents", "--kind", "incident", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []

    # A topology with two systems asks with IN; the server must accept that query as written.
    topology = parse_topology(lab_topology_toml(LabPorts(temporal=dev_server.port)))
    second = topology.systems[0].model_copy(update={"name": "lab2"})
    two = topology.model_copy(update={"systems": [topology.systems[0], second]})
    query = incidents_query(two, None, "drill")
    assert query == "DrSystem IN ('lab', 'lab2') AND DrKind = 'drill'"
    assert [e.id async for e in client.list_workflows(query)] == [workflow_id]


async def test_an_unknown_workflow_is_named_with_its_namespace(
    client: Client, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await drctl("--config", str(config), "report", "dr-promotion/nowhere") == 1
    assert (
        capsys.readouterr().err == "drctl: no workflow dr-promotion/nowhere in namespace default\n"
    )
