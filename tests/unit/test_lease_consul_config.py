"""What the Consul lease store decides before any server answers: where it connects, and what it
says (and does not say) when nothing is there."""

from __future__ import annotations

import socket
import time

import pytest

from adapters.stores import open_lease_store
from domain.stores import StoreConfigError, StoreUnavailable
from domain.topology import (
    ConsulAddress,
    ConsulLeaseConfig,
    TopologyError,
    parse_consul_address,
    parse_topology,
)
from lab import processes

SECRET = "s3cr3t-acl-token-0f9e"


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://127.0.0.1:8500", ConsulAddress("http", "127.0.0.1", 8500)),
        ("https://consul.internal:8501", ConsulAddress("https", "consul.internal", 8501)),
        ("consul://10.0.0.5:9500", ConsulAddress("http", "10.0.0.5", 9500)),
        ("http://consul.internal", ConsulAddress("http", "consul.internal", 8500)),
        ("http://[::1]:8500/", ConsulAddress("http", "[::1]", 8500)),
    ],
)
def test_a_consul_address_names_scheme_host_and_port(address: str, expected: ConsulAddress) -> None:
    assert parse_consul_address(address) == expected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1:8500",
        "nats://127.0.0.1:4222",
        "http://",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:8500/v1/kv",
        "not an address",
    ],
)
def test_a_bad_address_is_refused_naming_the_file_and_field(address: str) -> None:
    with pytest.raises(TopologyError, match=r"^topology\.toml: lease\.address: "):
        parse_topology(_topology(f'backend = "consul"\naddress = "{address}"'), "topology.toml")


def test_credentials_in_the_address_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match=r"token_env") as refused:
        parse_consul_address(f"http://user:{SECRET}@127.0.0.1:8500")
    assert SECRET not in str(refused.value)
    lease = f'backend = "consul"\naddress = "http://user:{SECRET}@127.0.0.1:8500"'
    with pytest.raises(TopologyError, match=r"lease\.address: .*token_env") as in_file:
        parse_topology(_topology(lease))
    assert SECRET not in str(in_file.value)


def test_the_old_spelling_still_loads_as_the_new_one() -> None:
    old = parse_topology(
        _topology('backend = "consul"\naddress = "http://127.0.0.1:8500"\nbucket = "desk-a"')
    )
    assert old.lease == ConsulLeaseConfig(
        backend="consul", address="http://127.0.0.1:8500", key_prefix="desk-a"
    )
    # The active source lives in the lease's store unless [active_source] says otherwise.
    assert old.active_source_store == old.lease


def test_an_unknown_backend_is_refused_naming_the_field() -> None:
    with pytest.raises(TopologyError, match=r"lease.backend: must be one of nats, consul"):
        parse_topology(_topology('backend = "etcd"'))


def _topology(lease: str) -> str:
    return f"""
[lease]
{lease}

[[systems]]
name = "lab"
primary_oms_url = "http://127.0.0.1:1"
dr_oms_url = "http://127.0.0.1:2"
venues = ["alpha"]

[systems.dns]
zone = "example.com."
record = "oms.example.com."
primary_target = "a"
dr_target = "b"

[[venues]]
name = "alpha"
url = "http://127.0.0.1:3"
api_key_env = "ALPHA_KEY"
"""


async def test_no_consul_listening_is_reported_quickly_without_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DR_TEST_CONSUL_TOKEN", SECRET)
    address = f"http://127.0.0.1:{processes.free_port()}"
    config = ConsulLeaseConfig(backend="consul", address=address, token_env="DR_TEST_CONSUL_TOKEN")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as unavailable:
        await open_lease_store(config, op_timeout_s=0.5)
    assert time.monotonic() - started < 10.0  # gives up instead of hanging (op timeout 0.5 s)
    assert address in str(unavailable.value)
    assert SECRET not in str(unavailable.value)
    assert SECRET not in repr(unavailable.value.__context__)


async def test_an_ambient_consul_http_addr_does_not_redirect_the_lease_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # python-consul2 lets CONSUL_HTTP_ADDR override the address it is given. A listener there
    # would see a connection if the lease store followed it instead of the topology's address.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as decoy:
        decoy.bind(("127.0.0.1", 0))
        decoy.listen()
        decoy.setblocking(False)
        monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{decoy.getsockname()[1]}")
        address = f"http://127.0.0.1:{processes.free_port()}"
        with pytest.raises(StoreUnavailable, match="unreachable"):
            await open_lease_store(ConsulLeaseConfig(backend="consul", address=address), 0.5)
        with pytest.raises(BlockingIOError):
            decoy.accept()


async def test_a_token_env_that_is_not_set_is_reported_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DR_TEST_CONSUL_TOKEN", raising=False)
    config = ConsulLeaseConfig(
        backend="consul",
        address=f"http://127.0.0.1:{processes.free_port()}",
        token_env="DR_TEST_CONSUL_TOKEN",
    )
    with pytest.raises(StoreConfigError, match="DR_TEST_CONSUL_TOKEN"):
        await open_lease_store(config, op_timeout_s=0.5)
