"""No credential the topology names reaches a report, an export or a listing."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from domain.topology import Topology, parse_topology
from drctl.__main__ import main
from drctl.history_export import export_document
from drctl.history_reader import read_history
from drctl.report_render import FORMATS, Format, render
from drctl.review_commands import render_report
from drctl.secret_scrub import REDACTED, SecretScrubber, secret_env_names
from lab.topology_gen import LabPorts, lab_topology_toml
from tests.unit.review.recorded import PLANNED, Document, attributes, history, payload

SECRET = 'sk-live-4f9a"c<&>2b'  # quotes and markup: it must go in every escaped form too
SECRET_ENV = "LAB_VENUE_ALPHA_API_KEY"


@pytest.fixture
def topology() -> Topology:
    return parse_topology(lab_topology_toml(LabPorts()))


def test_every_env_field_of_the_topology_names_a_secret(topology: Topology) -> None:
    assert secret_env_names(topology) == [
        "LAB_ALERT_WEBHOOK_URL",
        "LAB_AWS_ACCESS_KEY_ID",
        "LAB_AWS_SECRET_ACCESS_KEY",
        "LAB_CONTROL_API_KEY",
        "LAB_DB_PRIMARY_DSN",
        "LAB_DB_REPLICA_DSN",
        "LAB_VENUE_ALPHA_API_KEY",
        "LAB_VENUE_BETA_API_KEY",
        "LAB_VENUE_BETA_API_SECRET",
        "LAB_VENUE_GAMMA_API_KEY",
    ]


def test_an_env_field_added_anywhere_later_is_covered_without_changing_the_scrubber() -> None:
    class Broker(BaseModel):
        name: str
        password_env: str
        region_env_note: str = "not a secret: the name does not end in _env"

    class Future(BaseModel):
        brokers: list[Broker]
        by_desk: dict[str, Broker]
        token_env: str | None = None

    future = Future(
        brokers=[Broker(name="a", password_env="BROKER_A_PASSWORD")],
        by_desk={"rates": Broker(name="b", password_env="BROKER_B_PASSWORD")},
    )
    assert secret_env_names(future) == ["BROKER_A_PASSWORD", "BROKER_B_PASSWORD"]


def test_short_and_empty_values_are_not_taken_for_secrets(topology: Topology) -> None:
    scrubber = SecretScrubber.for_topology(
        topology, {"LAB_VENUE_ALPHA_API_KEY": "lab", "LAB_VENUE_BETA_API_KEY": ""}
    )
    assert not scrubber.active
    assert scrubber.scrub("lab promoted") == "lab promoted"


def test_a_secret_is_redacted_raw_and_as_json_or_html_escaped_it() -> None:
    scrubber = SecretScrubber([SECRET])
    for form in (
        SECRET,
        json.dumps(SECRET)[1:-1],
        html.escape(SECRET),
        html.escape(SECRET, quote=False),
        html.escape(json.dumps(SECRET)[1:-1]),
    ):
        assert scrubber.scrub(f"token={form}.") == f"token={REDACTED}."


def _plant(doc: Document) -> None:
    """The secret in an operator's update argument and in a retried activity's failure."""
    update = next(e for e in doc["events"] if e["eventType"].endswith("UPDATE_ACCEPTED"))
    attributes(update)["acceptedRequest"]["input"]["args"]["payloads"][0] = payload(
        {"approver": "bob", "comment": f"use key {SECRET} for alpha"}
    )
    started = next(e for e in doc["events"] if e["eventType"].endswith("ACTIVITY_TASK_STARTED"))
    attributes(started)["attempt"] = 2
    attributes(started)["lastFailure"] = {"message": f"401 for key {SECRET}"}


@pytest.fixture
def scrubber(topology: Topology, monkeypatch: pytest.MonkeyPatch) -> SecretScrubber:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SecretScrubber.for_topology(topology)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_planted_secret_never_reaches_a_report(fmt: Format, scrubber: SecretScrubber) -> None:
    planted = history(PLANNED, _plant)
    unscrubbed = render(read_history(planted), fmt)
    assert _leaks(unscrubbed)  # the plant took
    report = render_report(planted, planted.run_id, fmt, scrubber)
    assert not _leaks(report)
    assert REDACTED in report


def test_a_planted_secret_never_reaches_an_export(scrubber: SecretScrubber) -> None:
    planted = history(PLANNED, _plant)
    assert any(
        _leaks(text)
        for text in _payload_texts(json.loads(export_document(planted, "r", "default")))
    )
    export = scrubber.scrub(export_document(scrubber.scrub_history(planted), "r", "default"))
    assert not _leaks(export)
    texts = list(_payload_texts(json.loads(export)))
    assert not any(_leaks(text) for text in texts)
    assert any(f"use key {REDACTED} for alpha" in text for text in texts)
    assert f"401 for key {REDACTED}" in export


def test_drctl_report_scrubs_what_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    config = tmp_path / "topology.toml"
    config.write_text(lab_topology_toml(LabPorts()))
    planted = tmp_path / "planted.json"
    doc = json.loads(history(PLANNED, _plant).to_json())
    planted.write_text(json.dumps({"workflowExecution": {"workflowId": "dr-promotion/lab"}} | doc))
    for fmt in FORMATS:
        assert (
            main(["--config", str(config), "report", "--from-file", str(planted), "--format", fmt])
            == 0
        )
        out = capsys.readouterr().out
        assert "approve" in out and REDACTED in out and not _leaks(out)


def _leaks(text: str) -> bool:
    return any(
        form in text
        for form in (
            SECRET,
            json.dumps(SECRET)[1:-1],
            "sk-live-4f9a",
            base64.b64encode(SECRET.encode()).decode(),
        )
    )


def _payload_texts(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("data"), str) and isinstance(value.get("metadata"), dict):
            yield base64.b64decode(value["data"]).decode(errors="replace")
        for item in value.values():
            yield from _payload_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _payload_texts(item)
