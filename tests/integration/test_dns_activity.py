"""The update_dns activity against a real Route 53 emulator (moto server) over HTTP."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.dns as dns_module
from activities.dns import (
    DnsActivities,
    DnsChangeResult,
    DnsUpdateRequest,
    Side,
    current_weights,
)
from domain.topology import Topology
from lab import processes
from lab.processes import ProcessSpec
from lab.route53_setup import install_weighted_pair, route53_client
from lab.topology_gen import AWS_KEY_ENV, AWS_SECRET_ENV, SYSTEM, LabPorts, lab_topology

FEED = "lab-md"
PRIMARY_ACTIVE = {"primary": 100, "dr": 0}
DR_ACTIVE = {"primary": 0, "dr": 100}


@pytest.fixture(scope="module")
def moto_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = processes.free_port()
    spec = ProcessSpec(
        name="route53",
        argv=[sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        port=port,
        health_url=f"http://127.0.0.1:{port}/moto-api/",
        log_path=tmp_path_factory.mktemp("moto") / "moto.log",
    )
    pid = processes.start(spec)
    try:
        processes.wait_ready(spec, pid, 60)
        yield port
    finally:
        processes.stop(pid)


class ChangeCounter:
    """Counts ChangeResourceRecordSets calls made by the activity's own boto3 clients."""

    def __init__(self) -> None:
        self.submitted = 0

    def count(self, **_: Any) -> None:
        self.submitted += 1


@pytest.fixture
def changes(monkeypatch: pytest.MonkeyPatch) -> ChangeCounter:
    counter = ChangeCounter()
    real_client = dns_module.route53_client

    def counting_client(*args: Any, **kwargs: Any) -> Any:
        client = real_client(*args, **kwargs)
        client.meta.events.register("before-call.route53.ChangeResourceRecordSets", counter.count)
        return client

    monkeypatch.setattr(dns_module, "route53_client", counting_client)
    return counter


@pytest.fixture
def topology(moto_port: int, monkeypatch: pytest.MonkeyPatch) -> Topology:
    """The lab topology on the emulator, both record pairs reset to primary-active."""
    monkeypatch.setenv(AWS_KEY_ENV, "testing")
    monkeypatch.setenv(AWS_SECRET_ENV, "not-a-real-secret")
    topology = lab_topology(LabPorts(route53=moto_port))
    client = route53_client(topology.dns, "testing", "not-a-real-secret")
    install_weighted_pair(client, topology.system(SYSTEM).dns)
    feed_dns = topology.feeds[0].dns
    assert feed_dns is not None
    install_weighted_pair(client, feed_dns)
    return topology


async def switch(topology: Topology, active: Side, feed: str | None = None) -> DnsChangeResult:
    request = DnsUpdateRequest(system=SYSTEM, active=active, feed=feed)
    result: DnsChangeResult = await ActivityEnvironment().run(
        DnsActivities(topology).update_dns, request
    )
    return result


async def test_switching_to_dr_gives_dr_all_the_weight(
    topology: Topology, changes: ChangeCounter
) -> None:
    result = await switch(topology, "dr")

    assert result.changed is True
    assert result.change_id
    assert result.status == "INSYNC"
    assert result.record == "oms.lab.example."
    assert result.weights == DR_ACTIVE
    assert current_weights(topology, SYSTEM) == DR_ACTIVE
    assert changes.submitted == 1


async def test_repeating_the_switch_submits_no_second_change(
    topology: Topology, changes: ChangeCounter
) -> None:
    first = await switch(topology, "dr")
    again = await switch(topology, "dr")

    assert first.changed is True
    assert again.changed is False
    assert again.change_id is None
    assert again.status == "INSYNC"
    assert again.weights == DR_ACTIVE
    assert changes.submitted == 1


async def test_switching_back_gives_primary_all_the_weight(topology: Topology) -> None:
    await switch(topology, "dr")
    result = await switch(topology, "primary")

    assert result.changed is True
    assert result.weights == PRIMARY_ACTIVE
    assert current_weights(topology, SYSTEM) == PRIMARY_ACTIVE


async def test_a_feed_record_switches_without_touching_the_system_record(
    topology: Topology,
) -> None:
    result = await switch(topology, "dr", feed=FEED)

    assert result.record == "md.lab.example."
    assert result.weights == DR_ACTIVE
    assert current_weights(topology, SYSTEM, FEED) == DR_ACTIVE
    assert current_weights(topology, SYSTEM) == PRIMARY_ACTIVE


async def test_a_retry_after_the_insync_wait_timed_out_waits_for_the_same_change(
    topology: Topology, changes: ChangeCounter
) -> None:
    first = await switch(topology, "dr")
    # What the worker hands a retry: the change id the failed attempt heartbeated.
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[first.change_id])
    retried = await env.run(
        DnsActivities(topology).update_dns, DnsUpdateRequest(system=SYSTEM, active="dr")
    )

    assert retried.changed is True
    assert retried.change_id == first.change_id
    assert retried.status == "INSYNC"
    assert changes.submitted == 1


async def test_a_missing_credential_variable_is_a_non_retryable_error_naming_it(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AWS_SECRET_ENV)

    with pytest.raises(ApplicationError) as caught:
        await switch(topology, "dr")

    assert caught.value.non_retryable
    assert AWS_SECRET_ENV in str(caught.value)
    monkeypatch.setenv(AWS_SECRET_ENV, "not-a-real-secret")
    assert current_weights(topology, SYSTEM) == PRIMARY_ACTIVE


async def test_an_unknown_system_is_a_non_retryable_error(topology: Topology) -> None:
    request = DnsUpdateRequest(system="nope", active="dr")
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(DnsActivities(topology).update_dns, request)

    assert caught.value.non_retryable
    assert "nope" in str(caught.value)


async def test_an_unreachable_endpoint_is_a_retryable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(AWS_KEY_ENV, "testing")
    monkeypatch.setenv(AWS_SECRET_ENV, "not-a-real-secret")
    closed = lab_topology(LabPorts(route53=processes.free_port()))

    with pytest.raises(ApplicationError) as caught:
        await switch(closed, "dr")

    assert not caught.value.non_retryable
    assert "unreachable" in str(caught.value)
    assert "not-a-real-secret" not in str(caught.value)
