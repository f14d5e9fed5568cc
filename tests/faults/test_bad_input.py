"""Fault injection, bad input: a topology file or a workflow input that is wrong is refused with
an error naming where it is wrong, no stack trace is shown, and nothing is started.

Topology files: Hypothesis breaks the lab's own topology one way at a time (a required key
deleted, a value of another shape, a number out of range, garbage in a typed field, a bad URL, a
duplicate name, a misspelt key, TOML that does not parse, bytes that are not UTF-8, an empty
file) and every drctl command that reads the topology, and the worker, are run on it in-process
with ``Client.connect`` made to fail the test if anything ever gets that far.

Workflow inputs: every runbook is started on a real Temporal dev server with JSON that does not
fit its request model, as an operator might type it into the Temporal UI. The run must fail once,
in its first workflow task, with a non-retryable ``InvalidInput`` naming the field, before it
schedules anything, and without a stack trace in the history the UI shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import re
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args
from unittest import mock

import pytest
from annotated_types import Ge, Gt, Le
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AnyHttpUrl, BaseModel, ValidationError
from pydantic.fields import FieldInfo
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from domain.drill import DRILL_WORKFLOW, FAILBACK_WORKFLOW, DrillRequest, FailbackRequest
from domain.monitoring import (
    FEED_MONITOR_WORKFLOW,
    HEALTH_MONITOR_WORKFLOW,
    SYSTEM_MONITOR_WORKFLOW,
    FeedMonitorRequest,
    MonitorRequest,
    SystemMonitorRequest,
)
from domain.promotion import (
    PROMOTION_WORKFLOW,
    VENUE_RECOVERY_WORKFLOW,
    PromotionRequest,
    VenueRecoveryRequest,
)
from domain.topology import parse_topology
from drctl.__main__ import main as drctl_main
from lab.topology_gen import LabPorts, lab_topology_toml
from workers.__main__ import main as workers_main
from workflows.data_converter import DATA_CONVERTER
from workflows.drill import DrillWorkflow
from workflows.failback import FailbackWorkflow
from workflows.feed_monitor import FeedMonitorWorkflow
from workflows.health_monitor import HealthMonitorWorkflow
from workflows.promotion import PromotionWorkflow
from workflows.registry import ALL_WORKFLOWS
from workflows.steps import INVALID_INPUT
from workflows.system_monitor import SystemMonitorWorkflow
from workflows.venue_recovery import VenueRecoveryWorkflow

# ============================================================================================
# A. Topology files
# ============================================================================================

# Exit statuses for a topology the user must fix (drctl/__main__.py, workers/__main__.py).
DRCTL_REFUSED = 1
WORKERS_REFUSED = 2

# Commands of every kind that read the topology: runbooks, the monitor, drills, reviews.
DRCTL_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("failover", "--system", "lab", "--as", "alice"),
    ("status", "--system", "lab"),
    ("approve", "dr-promotion/lab", "--as", "bob"),
    ("monitor", "start", "--system", "lab"),
    ("drill", "run", "--system", "lab"),
    ("drill", "schedule", "--list"),
    ("failback", "--system", "lab", "--as", "alice"),
    ("report", "dr-promotion/lab"),
    ("incidents",),
)

LAB_TOPOLOGY = lab_topology_toml(LabPorts())
LAB_PARSED = parse_topology(LAB_TOPOLOGY, "<lab topology>")
LINES = LAB_TOPOLOGY.split("\n")
# Any line but the empty one after the final newline: what follows it is the end of the document.
ANY_LINE = st.integers(min_value=0, max_value=len(LINES) - 2)
SETTING_LINE = re.compile(r"^([A-Za-z0-9_-]+) = (.+)$")
TABLE_LINE = re.compile(r"^(\[\[?)([A-Za-z0-9_.-]+)\]\]?$")
# The arrays of tables whose entries must have unique names (Topology._names_resolve).
NAMED_ARRAYS = ("systems", "venues", "vantage_points", "feeds")


def model_of_table(table: str) -> type[BaseModel]:
    """The topology model behind a table such as ``systems[0].dns`` or ``venues[1]``.

    Read off the parsed lab topology itself: a tagged union (``venues[1]`` is a ccxt venue,
    ``lease`` a NATS store) has no one model to find from the annotations alone.
    """
    node: object = LAB_PARSED
    for name, index in re.findall(r"([A-Za-z0-9_]+)(?:\[(\d+)\])?", table):
        node = getattr(node, name)
        if index:
            node = node[int(index)]  # type: ignore[index]
    assert isinstance(node, BaseModel), table
    return type(node)


@dataclass(frozen=True)
class Setting:
    """One ``key = value`` line of the lab topology, located the way error messages name it."""

    index: int  # into LINES
    table: str  # "health", "systems[0].dns", "feeds[0].sources[2]"
    key: str
    value: str  # as written: '"alpha"', "3.0", '["alpha", "beta", "gamma"]'

    @property
    def location(self) -> str:
        return f"{self.table}.{self.key}"

    @property
    def line(self) -> int:
        """1-based, as TOML errors count."""
        return self.index + 1

    @property
    def field(self) -> FieldInfo:
        return model_of_table(self.table).model_fields[self.key]


def settings_of(lines: Sequence[str]) -> list[Setting]:
    found: list[Setting] = []
    entries: dict[str, int] = {}  # array of tables -> index of its current entry
    table = ""
    for index, line in enumerate(lines):
        if header := TABLE_LINE.match(line):
            is_array, table = header.group(1) == "[[", ""
            parts = header.group(2).split(".")
            for depth, part in enumerate(parts, start=1):
                table = f"{table}.{part}" if table else part
                if is_array and depth == len(parts):
                    entries[table] = entries.get(table, -1) + 1
                if table in entries:
                    table = f"{table}[{entries[table]}]"
        elif setting := SETTING_LINE.match(line):
            found.append(Setting(index, table, setting.group(1), setting.group(2)))
    return found


SETTINGS = settings_of(LINES)


def is_free_text(info: FieldInfo) -> bool:
    """A plain ``str`` field (an address, a DNS target): any string is valid there."""
    return info.annotation is str and not info.metadata


def is_url(info: FieldInfo) -> bool:
    return AnyHttpUrl in (info.annotation, *get_args(info.annotation))


def has_bounds(info: FieldInfo) -> bool:
    return any(isinstance(m, Gt | Ge | Le) for m in info.metadata)


@dataclass(frozen=True)
class BrokenTopology:
    """A topology file with one thing wrong, and what the error must say about it."""

    change: str  # what was broken, for a failing example's report
    content: bytes = field(repr=False)
    begins: str  # the message, after "<file>: ": the field, or "not valid TOML"
    mentions: str = ""  # and somewhere in it: the line of a TOML error


def edited(index: int, *replacement: str) -> bytes:
    """The lab topology with line ``index`` replaced by ``replacement`` (none: deleted)."""
    return "\n".join([*LINES[:index], *replacement, *LINES[index + 1 :]]).encode()


def set_to(setting: Setting, value: str) -> BrokenTopology:
    return BrokenTopology(
        f"line {setting.line}: {setting.key} = {value}",
        edited(setting.index, f"{setting.key} = {value}"),
        begins=setting.location,
    )


def toml_string(text: str) -> str:
    # JSON's string escapes are TOML's, given no surrogates (`Cs` is never generated).
    return json.dumps(text, ensure_ascii=False)


def toml_number(value: float) -> str:
    return repr(value)  # "-0.0", "1e+300", "-inf": each TOML as written


# --- strategies: each breaks the file one way -----------------------------------------------


def missing_required_setting() -> st.SearchStrategy[BrokenTopology]:
    required = [s for s in SETTINGS if s.field.is_required()]
    return st.sampled_from(required).map(
        lambda s: BrokenTopology(
            f"deleted line {s.line}: {LINES[s.index]}",
            edited(s.index),
            begins=f"{s.location}: Field required",
        )
    )


def values_of_another_shape() -> st.SearchStrategy[str]:
    """TOML values no key=value setting of ours accepts: tables, lists of numbers, dates."""
    return st.one_of(
        st.dictionaries(
            st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.integers(), min_size=1
        ).map(lambda table: "{ " + ", ".join(f"{k} = {v}" for k, v in table.items()) + " }"),
        st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3).map(
            lambda items: f"[{', '.join(map(str, items))}]"
        ),
        st.datetimes().map(lambda at: at.isoformat()),
        st.times().map(lambda at: at.isoformat()),
    )


def setting_of_another_shape() -> st.SearchStrategy[BrokenTopology]:
    return st.builds(set_to, st.sampled_from(SETTINGS), values_of_another_shape())


def outside(info: FieldInfo) -> st.SearchStrategy[float]:
    """Numbers a bounded field refuses: at or below its floor, above its ceiling."""
    refused: list[st.SearchStrategy[float]] = []
    for bound in info.metadata:
        if isinstance(bound, Gt):
            refused.append(st.floats(max_value=number(bound.gt), allow_nan=False))
        elif isinstance(bound, Ge):
            refused.append(st.floats(max_value=number(bound.ge), exclude_max=True, allow_nan=False))
        elif isinstance(bound, Le):
            refused.append(st.floats(min_value=number(bound.le), exclude_min=True))
    return st.one_of(refused)


def number(bound: object) -> float:
    assert isinstance(bound, int | float), bound
    return float(bound)


def number_out_of_range() -> st.SearchStrategy[BrokenTopology]:
    bounded = [s for s in SETTINGS if has_bounds(s.field)]
    return st.sampled_from(bounded).flatmap(
        lambda s: outside(s.field).map(lambda value: set_to(s, toml_number(value)))
    )


def garbage_in_a_typed_setting() -> st.SearchStrategy[BrokenTopology]:
    """Words with a space in them: not a number, flag, name, URL, choice or list."""
    typed = [s for s in SETTINGS if not is_free_text(s.field)]
    garbage = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=16)
    return st.builds(
        set_to, st.sampled_from(typed), garbage.map(lambda text: toml_string(f"oops {text}"))
    )


BAD_URLS = (
    "not a url",
    "127.0.0.1:8080",
    "http//127.0.0.1:8080",
    "ftp://127.0.0.1:21",
    "http://",
    "https://exa mple.com",
    "",
)


def invalid_url() -> st.SearchStrategy[BrokenTopology]:
    urls = [s for s in SETTINGS if is_url(s.field)]
    bad_port = st.integers(min_value=65536, max_value=10**6).map(lambda p: f"http://127.0.0.1:{p}")
    return st.builds(
        set_to,
        st.sampled_from(urls),
        st.one_of(st.sampled_from(BAD_URLS), bad_port).map(toml_string),
    )


def first_entry(array: str) -> list[str]:
    """The lines of ``[[array]]``'s first entry, its sub-tables included."""
    start = LINES.index(f"[[{array}]]")
    end = next(
        i
        for i in range(start + 1, len(LINES))
        if (header := TABLE_LINE.match(LINES[i])) and not header.group(2).startswith(f"{array}.")
    )
    return LINES[start:end]


def duplicate_name() -> st.SearchStrategy[BrokenTopology]:
    return st.sampled_from(NAMED_ARRAYS).map(
        lambda array: BrokenTopology(
            f"a second copy of the first [[{array}]] appended",
            (LAB_TOPOLOGY + "\n" + "\n".join(first_entry(array)) + "\n").encode(),
            begins=f"{array}: duplicate name(s)",
        )
    )


def misspellings(key: str) -> list[str]:
    dropped = [key[:i] + key[i + 1 :] for i in range(len(key))]
    doubled = [key[: i + 1] + key[i:] for i in range(len(key))]
    swapped = [key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(len(key) - 1)]
    return sorted({k for k in dropped + doubled + swapped if k})


def misspelt_key() -> st.SearchStrategy[BrokenTopology]:
    def beside(setting: Setting) -> st.SearchStrategy[BrokenTopology]:
        known = model_of_table(setting.table).model_fields
        typos = [k for k in misspellings(setting.key) if k not in known]
        return st.sampled_from(typos).map(
            lambda typo: BrokenTopology(
                f"line {setting.line + 1}: {typo} = {setting.value}",
                edited(setting.index, LINES[setting.index], f"{typo} = {setting.value}"),
                begins=f"{setting.table}.{typo}: Extra inputs are not permitted",
            )
        )

    return st.sampled_from(SETTINGS).flatmap(beside)


def not_toml(change: str, content: bytes, at_line: int | None) -> BrokenTopology:
    return BrokenTopology(
        change,
        content,
        begins="not valid TOML: ",
        mentions=f"(at line {at_line}, column " if at_line else "(at end of document)",
    )


def stray_character() -> st.SearchStrategy[BrokenTopology]:
    """A character no TOML line may start with, at the start of any line."""
    return st.builds(
        lambda index, char: not_toml(
            f"line {index + 1} starts with {char!r}",
            edited(index, char + LINES[index]),
            at_line=index + 1,
        ),
        ANY_LINE,
        st.sampled_from(["=", "]", "[", "{", '"', "@", "!", ","]),
    )


def control_character() -> st.SearchStrategy[BrokenTopology]:
    """A control character (TOML allows only tab) anywhere: in a key, a string, a comment."""
    controls = [chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]]

    def inserted(index: int, data: st.DataObject) -> BrokenTopology:
        at = data.draw(st.integers(min_value=0, max_value=len(LINES[index])), label="column")
        char = data.draw(st.sampled_from(controls), label="control")
        line = LINES[index][:at] + char + LINES[index][at:]
        return not_toml(f"line {index + 1}: {line!r}", edited(index, line), at_line=index + 1)

    return st.builds(inserted, ANY_LINE, st.data())


def repeated_setting() -> st.SearchStrategy[BrokenTopology]:
    """The same key twice in one table: TOML forbids it."""
    return st.sampled_from(SETTINGS).map(
        lambda s: not_toml(
            f"line {s.line} repeated",
            edited(s.index, LINES[s.index], LINES[s.index]),
            at_line=s.line + 1,
        )
    )


def cut_short_inside_a_string() -> st.SearchStrategy[BrokenTopology]:
    """A file written only in part: it ends inside a quoted value."""
    quoted = [s for s in SETTINGS if s.value.startswith('"')]

    def cut(setting: Setting, data: st.DataObject) -> BrokenTopology:
        kept = data.draw(st.integers(min_value=1, max_value=len(setting.value) - 1), label="kept")
        last = f"{setting.key} = {setting.value[:kept]}"
        content = "\n".join([*LINES[: setting.index], last]).encode()
        return not_toml(f"ends at line {setting.line}: {last}", content, at_line=None)

    return st.builds(cut, st.sampled_from(quoted), st.data())


def non_utf8_byte() -> st.SearchStrategy[BrokenTopology]:
    """A byte of 0x80 or above followed by ASCII is never UTF-8 (a Latin-1 'é' is 0xe9)."""

    def inserted(index: int, byte: int, data: st.DataObject) -> BrokenTopology:
        at = data.draw(st.integers(min_value=0, max_value=len(LINES[index])), label="column")
        offset = len("".join(f"{line}\n" for line in LINES[:index]).encode()) + at
        content = LAB_TOPOLOGY.encode()
        content = content[:offset] + bytes([byte]) + content[offset:]
        return BrokenTopology(
            f"byte 0x{byte:02x} in line {index + 1}",
            content,
            begins=f"line {index + 1}: not UTF-8 text (byte 0x{byte:02x})",
        )

    return st.builds(
        inserted,
        ANY_LINE,
        st.integers(min_value=0x80, max_value=0xFF),
        st.data(),
    )


def empty_file() -> st.SearchStrategy[BrokenTopology]:
    return st.sampled_from(["", "\n", "# the topology goes here\n"]).map(
        lambda text: BrokenTopology(
            f"only {text!r}", text.encode(), begins="systems: Field required"
        )
    )


def broken_topology_files() -> st.SearchStrategy[BrokenTopology]:
    return st.one_of(
        missing_required_setting(),
        setting_of_another_shape(),
        number_out_of_range(),
        garbage_in_a_typed_setting(),
        invalid_url(),
        duplicate_name(),
        misspelt_key(),
        stray_character(),
        control_character(),
        repeated_setting(),
        cut_short_inside_a_string(),
        non_utf8_byte(),
        empty_file(),
    )


# --- running the entry points ---------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    prog: str  # how its errors begin: "drctl", "workers"
    command: str
    code: int
    out: str
    err: str


def run_in_process(prog: str, command: str, entry: Callable[[], int]) -> CliRun:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = entry()
    return CliRun(prog, command, code, out.getvalue(), err.getvalue())


def run_drctl(config: Path, command: Sequence[str]) -> CliRun:
    argv = ["--config", str(config), *command]
    return run_in_process("drctl", " ".join(command), lambda: drctl_main(argv))


def run_workers(config: Path) -> CliRun:
    argv = ["python -m workers", "--config", str(config), "--role", "all"]
    with mock.patch.object(sys, "argv", argv):
        return run_in_process("workers", "--role all", workers_main)


async def never_connect(*_: object, **__: object) -> Client:
    raise AssertionError("a topology that does not load reached Client.connect")


def assert_refused(run: CliRun, code: int, config: Path, broken: BrokenTopology) -> None:
    assert run.code == code, run
    assert run.out == "", run
    assert run.err.startswith(f"{run.prog}: {config}: {broken.begins}"), run
    assert broken.mentions in run.err, run
    assert run.err.count("\n") == 1, f"more than one line: {run}"
    assert "Traceback" not in run.err and 'File "' not in run.err, run


def test_the_lab_topology_these_files_break_is_valid_and_every_setting_located() -> None:
    parse_topology(LAB_TOPOLOGY)
    for setting in SETTINGS:
        assert setting.field is not None, setting  # a KeyError if located wrongly
    located = {s.location for s in SETTINGS}
    assert {"lease.ttl_s", "systems[0].dns.zone", "venues[0].url", "venues[2].port"} <= located
    assert {"vantage_points[1].region", "feeds[0].sources[2].rank", "lab.api_key_env"} <= located


# Every command goes through the same `topology_of`; three of them per file keeps the budget for
# more files (each drctl run costs some 8 ms, most of it building the argument parser).
COMMAND_SAMPLES = st.lists(st.sampled_from(DRCTL_COMMANDS), min_size=3, max_size=3, unique=True)


@settings(max_examples=150, deadline=None)
@given(broken=broken_topology_files(), commands=COMMAND_SAMPLES)
def test_a_broken_topology_file_is_refused_with_where_before_anything_starts(
    broken: BrokenTopology, commands: list[tuple[str, ...]]
) -> None:
    with (
        tempfile.TemporaryDirectory() as root,
        mock.patch.object(Client, "connect", new=never_connect),
    ):
        config = Path(root) / "topology.toml"
        config.write_bytes(broken.content)
        for command in commands:
            assert_refused(run_drctl(config, command), DRCTL_REFUSED, config, broken)
        assert_refused(run_workers(config), WORKERS_REFUSED, config, broken)


# ============================================================================================
# B. Workflow inputs, as typed into the Temporal UI
# ============================================================================================

RUN_TIMEOUT_S = 20.0
FAILED_IN_ONE_TASK = [
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
]
NOT_AN_OBJECT = "Input should be a valid dictionary"


def rejects(model: type[BaseModel], raw: object) -> bool:
    try:
        model.model_validate(raw)
    except ValidationError:
        return True
    return False


FieldPath = tuple[str, ...]


def paths_of(value: dict[str, Any], prefix: FieldPath = ()) -> list[FieldPath]:
    """Every field of an input, nested ones too: ("objectives",), ("objectives", "max_rto_s")."""
    paths: list[FieldPath] = []
    for key, item in value.items():
        paths.append((*prefix, key))
        if isinstance(item, dict):
            paths += paths_of(item, (*prefix, key))
    return paths


def value_at(value: dict[str, Any], path: FieldPath) -> Any:
    for key in path:
        value = value[key]
    return value


def with_value(value: dict[str, Any], path: FieldPath, new: object) -> dict[str, Any]:
    changed = copy.deepcopy(value)
    value_at(changed, path[:-1])[path[-1]] = new
    return changed


def without(value: dict[str, Any], path: FieldPath) -> dict[str, Any]:
    changed = copy.deepcopy(value)
    del value_at(changed, path[:-1])[path[-1]]
    return changed


@dataclass(frozen=True)
class RunbookInput:
    """A runbook as the UI starts it: by type name, with a JSON input its run decodes."""

    workflow: type
    name: str
    model: type[BaseModel]
    example: dict[str, Any]  # complete and valid; the strategies break it

    def rejects(self, raw: object) -> bool:
        return rejects(self.model, raw)


RUNBOOK_INPUTS = (
    RunbookInput(
        PromotionWorkflow,
        PROMOTION_WORKFLOW,
        PromotionRequest,
        {
            "system": "lab",
            "requested_by": "alice",
            "planned": True,
            "reason": "primary unreachable",
            "kind": "planned",
            "to_region": "dr",
            "detected_at": "2025-03-01T12:00:00Z",
        },
    ),
    RunbookInput(
        VenueRecoveryWorkflow,
        VENUE_RECOVERY_WORKFLOW,
        VenueRecoveryRequest,
        {
            "system": "lab",
            "venue": "alpha",
            "account": "dr",
            "new_epoch": 7,
            "takeover_at": "2025-03-01T12:00:00Z",
            "fills_since": "2025-03-01T11:55:00Z",
            "dr_oms_url": "http://127.0.0.1:18102",
        },
    ),
    RunbookInput(HealthMonitorWorkflow, HEALTH_MONITOR_WORKFLOW, MonitorRequest, {"system": "lab"}),
    RunbookInput(
        SystemMonitorWorkflow, SYSTEM_MONITOR_WORKFLOW, SystemMonitorRequest, {"system": "lab"}
    ),
    RunbookInput(
        FeedMonitorWorkflow, FEED_MONITOR_WORKFLOW, FeedMonitorRequest, {"feed": "lab-md"}
    ),
    RunbookInput(
        DrillWorkflow,
        DRILL_WORKFLOW,
        DrillRequest,
        {
            "system": "lab",
            "scenario": "kill-primary",
            "requested_by": "alice",
            "approver": "bob",
            "objectives": {"max_detection_s": 30.0, "max_rto_s": 60.0},
            "failback": True,
            "reason": "monthly drill",
            "promotion_timeout_s": 300.0,
        },
    ),
    RunbookInput(
        FailbackWorkflow,
        FAILBACK_WORKFLOW,
        FailbackRequest,
        {"system": "lab", "requested_by": "alice", "approver": "bob", "reason": "repaired"},
    ),
)


@dataclass(frozen=True)
class BadInput:
    raw: object
    mentions: str  # the wrong field, as the message must name it


def dotted(path: FieldPath) -> str:
    return ".".join(path)


# --- strategies: each breaks an input one way -----------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
BLANKS = ("", " ", "\t\n")


def missing_field(runbook: RunbookInput) -> st.SearchStrategy[BadInput]:
    example = runbook.example
    needed = [p for p in paths_of(example) if runbook.rejects(without(example, p))]
    return st.sampled_from(needed).map(lambda p: BadInput(without(example, p), dotted(p)))


def wrong_value(runbook: RunbookInput) -> st.SearchStrategy[BadInput]:
    """Any JSON in place of one field: wrong types, nulls, negative or huge numbers, lists."""
    example = runbook.example
    return st.builds(
        lambda path, value: BadInput(with_value(example, path, value), dotted(path)),
        st.sampled_from(paths_of(example)),
        JSON_VALUES,
    ).filter(lambda bad: runbook.rejects(bad.raw))


def blank_name(runbook: RunbookInput) -> st.SearchStrategy[BadInput]:
    example = runbook.example
    blanked = [
        BadInput(with_value(example, path, blank), dotted(path))
        for path in paths_of(example)
        if isinstance(value_at(example, path), str)
        for blank in BLANKS
    ]
    return st.sampled_from([bad for bad in blanked if runbook.rejects(bad.raw)])


def extra_garbage(runbook: RunbookInput) -> st.SearchStrategy[BadInput]:
    """A field the request does not have (only where the model refuses unknown fields)."""
    key = st.text(min_size=1, max_size=12).filter(lambda k: k not in runbook.model.model_fields)
    return st.builds(
        lambda k, v: BadInput(runbook.example | {k: v}, f"{k}: Extra inputs are not permitted"),
        key,
        JSON_VALUES,
    )


def not_an_object(runbook: RunbookInput) -> st.SearchStrategy[BadInput]:
    """A string, number, null or list where the request object goes; or the object quoted."""
    return st.one_of(
        JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3), st.just(json.dumps(runbook.example))
    ).map(lambda raw: BadInput(raw, NOT_AN_OBJECT))


def bad_inputs(runbook: RunbookInput) -> st.SearchStrategy[BadInput]:
    strategies = [missing_field, wrong_value, blank_name, not_an_object]
    if runbook.model.model_config.get("extra") == "forbid":
        strategies.append(extra_garbage)
    return st.one_of([strategy(runbook) for strategy in strategies])


# --- the runs -------------------------------------------------------------------------------


@pytest.fixture
async def runbook_queue(client: Client) -> AsyncIterator[str]:
    """A worker with every runbook and no activity: a bad input must never need one."""
    queue = f"bad-input-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=ALL_WORKFLOWS):
        yield queue


async def assert_fails_once_on_its_input(
    handle: WorkflowHandle[Any, Any], runbook: RunbookInput, mentions: str
) -> None:
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
    error = failed.value.cause
    assert isinstance(error, ApplicationError), repr(error)
    assert (error.type, error.non_retryable) == (INVALID_INPUT, True), repr(error)
    assert error.message.startswith(f"invalid {runbook.model.__name__}: "), error.message
    assert mentions in error.message, error.message

    history = await handle.fetch_history()
    # Started, one workflow task, failed: no activity, timer or child workflow was scheduled,
    # and the workflow task was never retried.
    assert [e.event_type for e in history.events] == FAILED_IN_ONE_TASK
    failure = history.events[-1].workflow_execution_failed_event_attributes.failure
    assert failure.message == error.message
    # What the UI and `temporal workflow show` display under the message: nothing.
    assert (failure.stack_trace, failure.cause.stack_trace) == ("", "")


def test_every_runbook_has_a_valid_example_input() -> None:
    assert {r.workflow for r in RUNBOOK_INPUTS} == set(ALL_WORKFLOWS)
    for runbook in RUNBOOK_INPUTS:
        runbook.model.model_validate(runbook.example)


@pytest.mark.parametrize("runbook", RUNBOOK_INPUTS, ids=lambda r: r.name)
# One worker serves every example of a runbook: sharing the function-scoped fixtures across
# Hypothesis's examples is the point, not an accident.
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
async def test_a_bad_input_typed_into_the_ui_fails_the_run_once_naming_the_field(
    runbook: RunbookInput, data: st.DataObject, client: Client, runbook_queue: str
) -> None:
    bad = data.draw(bad_inputs(runbook), label="input")
    handle = await client.start_workflow(
        runbook.name,
        bad.raw,
        id=f"bad-input/{runbook.name}/{uuid.uuid4().hex[:12]}",
        task_queue=runbook_queue,
    )
    await assert_fails_once_on_its_input(handle, runbook, bad.mentions)


@pytest.mark.parametrize("runbook", RUNBOOK_INPUTS, ids=lambda r: r.name)
async def test_a_runbook_started_with_no_input_at_all_fails_the_run_once(
    runbook: RunbookInput, client: Client, runbook_queue: str
) -> None:
    handle = await client.start_workflow(
        runbook.name,
        id=f"no-input/{runbook.name}/{uuid.uuid4().hex[:12]}",
        task_queue=runbook_queue,
    )
    await assert_fails_once_on_its_input(handle, runbook, NOT_AN_OBJECT)


def failure_of(error: Exception) -> Failure:
    try:
        raise error  # so that it carries a traceback, as a workflow's error does
    except Exception as raised:
        failure = Failure()
        DATA_CONVERTER.failure_converter.to_failure(
            raised, DATA_CONVERTER.payload_converter, failure
        )
        return failure


def test_only_a_bad_input_loses_its_stack_trace() -> None:
    bad_input = failure_of(ApplicationError("invalid X: y", type=INVALID_INPUT))
    step_failed = failure_of(ApplicationError("lease store down", type="LeaseUnavailable"))
    crashed = failure_of(KeyError("venue"))
    assert bad_input.stack_trace == ""
    assert "failure_of" in step_failed.stack_trace
    assert "failure_of" in crashed.stack_trace
