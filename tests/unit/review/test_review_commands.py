"""`drctl report | history export | incidents` as an operator uses them; the server is a fake
that answers from recorded histories (tests/integration runs them against a real one)."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus, WorkflowHistory
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from domain.topology import Topology, parse_topology
from drctl import review_commands
from drctl.__main__ import main
from drctl.review_commands import incidents_query
from drctl.runbook_commands import CommandError
from lab.processes import free_port
from lab.topology_gen import LabPorts, lab_topology_toml
from tests.unit.review.recorded import MONITOR, PLANNED, UNPLANNED, Document, history

T0 = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


class FakeHandle:
    def __init__(self, client: FakeClient, workflow_id: str, run_id: str | None) -> None:
        self.client, self.workflow_id, self.run_id = client, workflow_id, run_id

    async def fetch_history(self) -> WorkflowHistory:
        found = self.client.histories.get(self.workflow_id)
        if found is None or (self.run_id and self.run_id != found.run_id):
            raise RPCError("workflow execution not found", RPCStatusCode.NOT_FOUND, b"")
        return found


class FakeClient:
    namespace = "default"

    def __init__(
        self, histories: list[WorkflowHistory], executions: list[WorkflowExecution]
    ) -> None:
        self.histories = {h.workflow_id: h for h in histories}
        self.executions = executions
        self.queries: list[tuple[str, int | None]] = []

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> FakeHandle:
        return FakeHandle(self, workflow_id, run_id)

    def list_workflows(
        self, query: str, limit: int | None = None
    ) -> AsyncIterator[WorkflowExecution]:
        self.queries.append((query, limit))

        async def listing() -> AsyncIterator[WorkflowExecution]:
            for execution in self.executions[:limit]:
                yield execution

        return listing()


def execution(
    workflow_id: str,
    workflow_type: str,
    kind: str,
    outcome: str | None,
    started_min: int,
    took_s: float | None,
) -> WorkflowExecution:
    start = T0 + timedelta(minutes=started_min)
    pairs = [
        SearchAttributePair(SearchAttributeKey.for_keyword("DrSystem"), "lab"),
        SearchAttributePair(SearchAttributeKey.for_keyword("DrKind"), kind),
    ]
    if outcome:
        pairs.append(SearchAttributePair(SearchAttributeKey.for_keyword("DrOutcome"), outcome))
    return WorkflowExecution(
        close_time=start + timedelta(seconds=took_s) if took_s is not None else None,
        execution_time=start,
        history_length=100,
        id=workflow_id,
        namespace="default",
        parent_id=None,
        parent_run_id=None,
        root_id=None,
        root_run_id=None,
        raw_info=WorkflowExecutionInfo(),
        run_id=f"run-{started_min}",
        search_attributes={},
        start_time=start,
        status=WorkflowExecutionStatus.COMPLETED
        if took_s is not None
        else WorkflowExecutionStatus.RUNNING,
        task_queue="region-dr",
        typed_search_attributes=TypedSearchAttributes(pairs),
        workflow_type=workflow_type,
        _context_free_data_converter=pydantic_data_converter,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(lab_topology_toml(LabPorts()))
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient(
        [history(UNPLANNED), history(MONITOR)],
        [
            execution("dr-promotion/lab", "Promotion", "incident", "promoted", 1, 6.98),
            execution("dr-drill/lab", "Drill", "drill", "passed", 30, 75.5),
            execution("dr-promotion/lab", "Promotion", "planned", "running", 45, None),
        ],
    )

    async def connect(_: Topology) -> FakeClient:
        return client

    monkeypatch.setattr(review_commands, "connect", connect)
    return client


def drctl(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_a_report_of_an_export_is_the_live_report_byte_for_byte(
    config: Path, server: FakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live, export, from_file = tmp_path / "live.html", tmp_path / "x.json", tmp_path / "file.html"
    assert drctl(config, "report", "dr-promotion/lab", "--format", "html", "-o", str(live)) == 0
    assert capsys.readouterr().out == f"{live}\n"
    assert drctl(config, "history", "export", "dr-promotion/lab", "-o", str(export)) == 0
    assert capsys.readouterr().out == (
        f"{export}: 100 events of dr-promotion/lab run 01a201a6-2244-7c27-8505-b07aeac99f55\n"
    )
    assert (
        drctl(
            config, "report", "--from-file", str(export), "--format", "html", "-o", str(from_file)
        )
        == 0
    )
    assert from_file.read_bytes() == live.read_bytes()
    assert 'class="gantt"' in live.read_text()


def test_the_export_carries_the_workflow_and_still_loads_as_plain_history_json(
    config: Path, server: FakeClient, tmp_path: Path
) -> None:
    export = tmp_path / "x.json"
    assert drctl(config, "history", "export", "dr-monitor/lab", "-o", str(export)) == 0
    document = json.loads(export.read_text())
    assert document["workflowExecution"] == {
        "workflowId": "dr-monitor/lab",
        "runId": history(MONITOR).run_id,
    }
    assert document["namespace"] == "default"
    assert len(WorkflowHistory.from_json("dr-monitor/lab", export.read_text()).events) == 198


def test_a_report_goes_to_stdout_as_markdown_by_default(
    config: Path, server: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drctl(config, "report", "dr-promotion/lab") == 0
    out = capsys.readouterr().out
    assert out.startswith("# Review of Promotion dr-promotion/lab\n")
    assert "| RTO | 6.618 s |" in out


def test_a_json_report_is_the_review_as_data(
    config: Path, server: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drctl(config, "report", "dr-monitor/lab", "--format", "json") == 0
    review = json.loads(capsys.readouterr().out)
    assert review["workflow_type"] == "HealthMonitor" and review["status"] == "running"
    assert review["monitor"]["promotions"][0]["outcome"] == "promoted"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("report", "dr-promotion/x"), "no workflow dr-promotion/x in namespace default"),
        (
            ("report", "dr-promotion/lab", "--run-id", "01a2-old"),
            "no workflow dr-promotion/lab run 01a2-old in namespace default",
        ),
        (
            ("history", "export", "dr-promotion/x", "-o", "x.json"),
            "no workflow dr-promotion/x in namespace default",
        ),
        (("report",), "give a WORKFLOW_ID, or --from-file FILE"),
    ],
)
def test_an_unknown_workflow_is_one_line_naming_it(
    config: Path,
    server: FakeClient,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    assert drctl(config, *args) == 1
    assert capsys.readouterr().err == f"drctl: {message}\n"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read: No such file or directory"),
        ("{not json", "not a history export (invalid JSON"),
        ('{"workflowExecution": {}}', "not a history export (no list of events)"),
        ('{"events": []}', "the history has no events"),
        (
            '{"events": [{"eventId": "1", "eventType": "EVENT_TYPE_TIMER_FIRED"}]}',
            "the history does not begin with the workflow's start",
        ),
        ('{"events": [{"eventId": "x", "eventType": 7}]}', "not a valid workflow history"),
    ],
)
def test_an_unreadable_export_is_one_line_naming_the_file(
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    problem: str,
) -> None:
    path = tmp_path / "export--x.json"
    if content is not None:
        path.write_text(content)
    assert drctl(config, "report", "--from-file", str(path)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"drctl: {path}: {problem}") and err.count("\n") == 1


def test_a_plain_history_file_is_identified_from_its_name_or_the_option(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def anonymous(doc: Document) -> None:
        del doc["events"][0]["workflowExecutionStartedEventAttributes"]["workflowId"]

    plain = tmp_path / "plain.json"
    plain.write_text(history(PLANNED, anonymous).to_json())
    assert drctl(config, "report", "--from-file", str(plain)) == 1
    assert "does not say which workflow it is; give --workflow-id" in capsys.readouterr().err
    assert (
        drctl(config, "report", "--from-file", str(plain), "--workflow-id", "dr-promotion/lab") == 0
    )
    assert capsys.readouterr().out.startswith("# Review of Promotion dr-promotion/lab\n")
    named = tmp_path / "planned--dr-promotion%2Flab.json"
    shutil.copy(plain, named)
    assert drctl(config, "report", "--from-file", str(named), "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["workflow_id"] == "dr-promotion/lab"


def test_an_export_can_be_read_without_a_topology(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--config", str(tmp_path / "absent.toml"), "report", "--from-file", str(UNPLANNED)])
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.startswith("# Review of Promotion dr-promotion/lab\n")
    assert "credentials it would name are not scrubbed" in captured.err


def test_an_unwritable_output_is_one_line(
    config: Path, server: FakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Missing folders are made; a folder that is really a file cannot be.
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "r.md"
    assert drctl(config, "report", "dr-promotion/lab", "-o", str(target)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"drctl: cannot write {target}: ") and err.count("\n") == 1


def test_an_unreachable_temporal_is_named_by_its_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    config = tmp_path / "topology.toml"
    config.write_text(
        lab_topology_toml(LabPorts()).replace(
            'address = "127.0.0.1:', f'address = "127.0.0.1:{port}" #', 1
        )
    )
    assert parse_topology(config.read_text()).temporal.address == f"127.0.0.1:{port}"
    assert main(["--config", str(config), "report", "dr-promotion/lab"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"drctl: cannot reach Temporal at 127.0.0.1:{port} (")
        and err.count("\n") == 1
    )


def test_the_incidents_query_names_only_known_systems_and_kinds() -> None:
    topology = parse_topology(lab_topology_toml(LabPorts()))
    assert incidents_query(topology, "lab", "drill") == "DrSystem = 'lab' AND DrKind = 'drill'"
    assert incidents_query(topology, None, None) == "DrSystem = 'lab'"
    with pytest.raises(CommandError, match="no system named \"lab' OR DrSystem != '\""):
        incidents_query(topology, "lab' OR DrSystem != '", None)
    with pytest.raises(CommandError, match="no kind 'x'"):
        incidents_query(topology, "lab", "x")


def test_incidents_lists_runs_newest_first(
    config: Path, server: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drctl(config, "incidents", "--system", "lab", "--limit", "5") == 0
    assert server.queries == [("DrSystem = 'lab'", 5)]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "started",
        "(UTC)",
        "workflow",
        "id",
        "type",
        "kind",
        "outcome",
        "duration",
        "status",
    ]
    assert [line.split()[2:] for line in lines[1:]] == [
        ["dr-promotion/lab", "Promotion", "planned", "running", "running", "running"],
        ["dr-drill/lab", "Drill", "drill", "passed", "75.5", "s", "completed"],
        ["dr-promotion/lab", "Promotion", "incident", "promoted", "7.0", "s", "completed"],
    ]


def test_incidents_as_json_filtered_by_kind(
    config: Path, server: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drctl(config, "incidents", "--kind", "drill", "--json") == 0
    assert server.queries == [("DrSystem = 'lab' AND DrKind = 'drill'", 20)]
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    assert rows[1] == {
        "started_at": "2026-11-22T05:30:00+00:00",
        "workflow_id": "dr-drill/lab",
        "run_id": "run-30",
        "workflow_type": "Drill",
        "kind": "drill",
        "outcome": "passed",
        "duration_s": 75.5,
        "status": "completed",
    }


def test_an_unknown_system_is_refused_before_anything_is_asked(
    config: Path, server: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert drctl(config, "incidents", "--system", "lab' OR DrSystem != '") == 1
    assert capsys.readouterr().err.startswith("drctl: no system named")
    assert server.queries == []
