"""The notify activity against the real lab alert receiver, started as its own process."""

from __future__ import annotations

import logging
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.alerts import Alert, AlertActivities, NotifyResult
from domain.topology import Topology
from lab import processes
from lab.processes import ProcessSpec
from lab.topology_gen import ALERT_URL_ENV, SYSTEM, LabPorts, lab_topology

WEBHOOK = "lab-oncall"


@dataclass(frozen=True)
class Receiver:
    port: int
    token: str

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts/{self.token}"

    def stored(self) -> list[dict[str, Any]]:
        response = httpx.get(f"http://127.0.0.1:{self.port}/alerts", timeout=5)
        response.raise_for_status()
        return list(response.json()["alerts"])


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    running = Receiver(port=processes.free_port(), token=secrets.token_urlsafe(12))
    spec = ProcessSpec(
        name="alerts",
        argv=[
            *(sys.executable, "-m", "lab.alerts"),
            *("--port", str(running.port), "--url-env", ALERT_URL_ENV),
        ],
        port=running.port,
        health_url=f"http://127.0.0.1:{running.port}/health",
        env={ALERT_URL_ENV: running.webhook_url},
        log_path=tmp_path_factory.mktemp("alerts") / "alerts.log",
    )
    pid = processes.start(spec)
    try:
        processes.wait_ready(spec, pid, 30)
        yield running
    finally:
        processes.stop(pid)


@pytest.fixture
def topology(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Topology:
    monkeypatch.setenv(ALERT_URL_ENV, receiver.webhook_url)
    return lab_topology(LabPorts(alerts=receiver.port))


def an_alert(**changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "system": SYSTEM,
        "kind": "promotion_started",
        "severity": "critical",
        "summary": "promoting DR: primary unreachable from 2 of 2 vantage points",
        "details": {"epoch": 7, "vantage_points": ["dr", "observer"]},
        "idempotency_key": f"promotion-lab/{uuid.uuid4()}/started",
        "workflow_id": "promotion-lab",
        "ui_url": "http://127.0.0.1:8233/namespaces/default/workflows/promotion-lab",
    }
    return Alert(**(fields | changes))


async def notify(topology: Topology, alert: Alert) -> NotifyResult:
    result: NotifyResult = await ActivityEnvironment().run(
        AlertActivities(topology, timeout_s=2).notify, alert
    )
    return result


def with_key(receiver: Receiver, key: str) -> list[dict[str, Any]]:
    return [a for a in receiver.stored() if a["idempotency_key"] == key]


async def test_the_alert_arrives_with_its_fields(topology: Topology, receiver: Receiver) -> None:
    alert = an_alert()

    result = await notify(topology, alert)

    assert result == NotifyResult(delivered=[WEBHOOK], skipped=[])
    [stored] = with_key(receiver, alert.idempotency_key)
    assert stored["alert"] == alert.model_dump(mode="json")
    assert stored["received_at"]


async def test_a_retried_notify_is_stored_once(topology: Topology, receiver: Receiver) -> None:
    alert = an_alert(kind="approval_needed", severity="warning")

    first = await notify(topology, alert)
    retried = await notify(topology, alert)

    assert first.delivered == retried.delivered == [WEBHOOK]
    assert len(with_key(receiver, alert.idempotency_key)) == 1


async def test_an_unset_webhook_variable_is_skipped_not_failed(
    topology: Topology,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv(ALERT_URL_ENV)
    alert = an_alert()

    with caplog.at_level(logging.WARNING):
        result = await notify(topology, alert)

    assert result == NotifyResult(delivered=[], skipped=[WEBHOOK])
    assert ALERT_URL_ENV in caplog.text
    assert with_key(receiver, alert.idempotency_key) == []


async def test_a_receiver_that_is_down_is_retryable_and_the_url_stays_secret(
    topology: Topology, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = secrets.token_urlsafe(12)
    closed_port = processes.free_port()
    monkeypatch.setenv(ALERT_URL_ENV, f"http://127.0.0.1:{closed_port}/alerts/{token}")

    with caplog.at_level(logging.DEBUG), pytest.raises(ApplicationError) as caught:
        await notify(topology, an_alert())

    error = caught.value
    assert not error.non_retryable
    assert WEBHOOK in str(error)
    assert error.__cause__ is None
    for text in (str(error), caplog.text):
        assert token not in text
        assert f":{closed_port}/" not in text


async def test_a_wrong_token_is_non_retryable(
    topology: Topology,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = secrets.token_urlsafe(12)
    monkeypatch.setenv(ALERT_URL_ENV, f"http://127.0.0.1:{receiver.port}/alerts/{wrong}")

    with caplog.at_level(logging.DEBUG), pytest.raises(ApplicationError) as caught:
        await notify(topology, an_alert())

    assert caught.value.non_retryable
    assert "404" in str(caught.value)
    assert WEBHOOK in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in caplog.text
