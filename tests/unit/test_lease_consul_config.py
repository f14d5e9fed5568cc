"""What the Consul lease store decides before any server answers: where it connects, and what it
says (and does not say) when nothing is there."""

from __future__ import annotations

import socket
import time

import pytest

from activities.lease import LeaseError, LeaseStoreUnavailable, open_lease_store
from activities.lease_consul import ConsulAddress, parse_consul_address
from domain.topology import LeaseConfig
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
def test_a_bad_address_is_refused_naming_the_field(address: str) -> None:
    with pytest.raises(ValueError, match=r"lease\.address"):
        parse_consul_address(address)


def test_credentials_in_the_address_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match=r"lease\.token_env") as refused:
        parse_consul_address(f"http://user:{SECRET}@127.0.0.1:8500")
    assert SECRET not in str(refused.value)


async def test_a_bad_address_fails_before_connecting() -> None:
    config = LeaseConfig(backend="consul", address="nats://127.0.0.1:4222")
    with pytest.raises(ValueError, match=r"lease\.address 'nats://127\.0\.0\.1:4222'"):
        await open_lease_store(config, op_timeout_s=0.5)


async def test_no_consul_listening_is_reported_quickly_without_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DR_TEST_CONSUL_TOKEN", SECRET)
    address = f"http://127.0.0.1:{processes.free_port()}"
    config = LeaseConfig(backend="consul", address=address, token_env="DR_TEST_CONSUL_TOKEN")
    started = time.monotonic()
    with pytest.raises(LeaseStoreUnavailable) as unavailable:
        await open_lease_store(config, op_timeout_s=0.5)
    assert time.monotonic() - started < 10.0  # gives up instead of hanging (op timeout 0.5 s)
    assert address in str(unavailable.value)
    assert SECRET not in str(unavailable.value)
    assert SECRET not in repr(unavailable.value.__context__)


async def test_an_ambient_consul_http_addr_does_not_redirect_the_lease_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # python-consul2 lets CONSUL_HTTP_ADDR override the address it is given. A listener there
    # would see a connection if the lease store followed it instead of lease.address.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as decoy:
        decoy.bind(("127.0.0.1", 0))
        decoy.listen()
        decoy.setblocking(False)
        monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{decoy.getsockname()[1]}")
        address = f"http://127.0.0.1:{processes.free_port()}"
        with pytest.raises(LeaseStoreUnavailable, match="unreachable"):
            await open_lease_store(LeaseConfig(backend="consul", address=address), 0.5)
        with pytest.raises(BlockingIOError):
            decoy.accept()


async def test_a_token_env_that_is_not_set_is_reported_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DR_TEST_CONSUL_TOKEN", raising=False)
    config = LeaseConfig(
        backend="consul",
        address=f"http://127.0.0.1:{processes.free_port()}",
        token_env="DR_TEST_CONSUL_TOKEN",
    )
    with pytest.raises(LeaseError, match="DR_TEST_CONSUL_TOKEN"):
        await open_lease_store(config, op_timeout_s=0.5)
