"""A vantage point's proxy, as a probe going through it and `drctl lab chaos` driving it see it.

The proxy and its target run as real processes; one scenario per test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab import processes
from lab.processes import ProcessSpec
from lab.proxy.server import HEALTH_PATH, PARTITION_PATH

TARGET_BODY = '{"status": "ok"}'
# Long enough for the proxy to answer on loopback, short enough to keep a dropped request cheap.
CLIENT_TIMEOUT_S = 0.5


def start_process(spec: ProcessSpec) -> int:
    pid = processes.start(spec)
    try:
        processes.wait_ready(spec, pid, timeout_s=10)
    except processes.LabError:
        processes.stop(pid)
        raise
    return pid


@pytest.fixture(scope="module")
def target_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain loopback web server serving one file, standing in for a probed service."""
    root = tmp_path_factory.mktemp("target")
    (root / "www").mkdir()
    (root / "www" / "health").write_text(TARGET_BODY)
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    spec = ProcessSpec(
        name="target",
        argv=[
            *(sys.executable, "-m", "http.server", str(port)),
            *("--bind", "127.0.0.1", "--directory", str(root / "www")),
        ],
        port=port,
        health_url=f"{url}/health",
        log_path=root / "target.log",
    )
    pid = start_process(spec)
    try:
        yield url
    finally:
        processes.stop(pid)


@dataclass(frozen=True)
class RunningProxy:
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any]:
        response = httpx.get(self.url + HEALTH_PATH, timeout=2)
        response.raise_for_status()
        return dict(response.json())

    def set_partitioned(self, partitioned: bool) -> dict[str, Any]:
        response = httpx.post(
            self.url + PARTITION_PATH, json={"partitioned": partitioned}, timeout=2
        )
        response.raise_for_status()
        return dict(response.json())


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    logs = tmp_path_factory.mktemp("proxy")
    port = processes.free_port()
    spec = ProcessSpec(
        name="proxy-dr",
        argv=[sys.executable, "-m", "lab.proxy", "--name", "dr", "--port", str(port)],
        port=port,
        health_url=f"http://127.0.0.1:{port}{HEALTH_PATH}",
        log_path=logs / "proxy-dr.log",
    )
    pid = start_process(spec)
    try:
        yield RunningProxy(port=port, log_path=spec.log_path)
    finally:
        processes.stop(pid)


@pytest.fixture
def through_proxy(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(proxy=proxy.url, timeout=CLIENT_TIMEOUT_S) as client:
        yield client


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` as written and return everything the proxy sends before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_request_through_the_proxy_gets_the_target_s_answer(
    through_proxy: httpx.Client, target_url: str
) -> None:
    response = through_proxy.get(f"{target_url}/health")

    assert response.status_code == 200
    assert response.text == TARGET_BODY


def test_the_proxy_reports_its_vantage_point_and_counts(proxy: RunningProxy) -> None:
    health = proxy.health()

    assert health["name"] == "dr"
    assert health["partitioned"] is False
    assert set(health) == {"name", "partitioned", "forwarded", "dropped"}


def test_a_partitioned_vantage_point_gets_no_answer_until_healed(
    through_proxy: httpx.Client, target_url: str, proxy: RunningProxy
) -> None:
    dropped_before = proxy.health()["dropped"]
    assert proxy.set_partitioned(True)["partitioned"] is True
    try:
        with pytest.raises(httpx.ReadTimeout):
            through_proxy.get(f"{target_url}/health")
        assert processes.wait_until(
            lambda: proxy.health()["dropped"] >= dropped_before + 1, timeout_s=5
        )
    finally:
        healed = proxy.set_partitioned(False)

    assert healed["partitioned"] is False
    assert through_proxy.get(f"{target_url}/health").text == TARGET_BODY


def test_healing_an_unpartitioned_vantage_point_changes_nothing(proxy: RunningProxy) -> None:
    before = proxy.health()

    after = proxy.set_partitioned(False)

    assert after == before


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/health",
        "http://10.1.2.3:8080/health",
        # A name is refused even if DNS would say loopback: the proxy never asks DNS.
        "http://127.0.0.1.nip.io/health",
    ],
)
def test_a_target_off_the_machine_is_refused_with_403(
    through_proxy: httpx.Client, proxy: RunningProxy, url: str
) -> None:
    forwarded_before = proxy.health()["forwarded"]

    response = through_proxy.get(url)

    assert response.status_code == 403
    assert "loopback" in response.json()["error"]
    assert proxy.health()["forwarded"] == forwarded_before


def test_https_tunnelling_with_connect_is_refused_with_405(proxy: RunningProxy) -> None:
    answer = raw_exchange(
        proxy.port, b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n"
    )

    assert answer.startswith(b"HTTP/1.1 405 ")


def test_a_partition_switch_without_a_boolean_is_refused_and_changes_nothing(
    proxy: RunningProxy,
) -> None:
    response = httpx.post(
        proxy.url + PARTITION_PATH,
        json={"partitioned": "true"},
        timeout=2,
    )

    assert response.status_code == 400
    assert "partitioned" in response.json()["error"]
    assert proxy.health()["partitioned"] is False


def test_an_unreachable_target_is_a_502_from_the_proxy(through_proxy: httpx.Client) -> None:
    response = through_proxy.get(f"http://127.0.0.1:{processes.free_port()}/health")

    assert response.status_code == 502
    assert "cannot connect" in response.json()["error"]


@pytest.fixture
async def keep_alive_echo_url() -> AsyncIterator[str]:
    """A target that answers chunked and never closes first, like a keep-alive server.

    It echoes the request line, Host and body it received, so a test sees what was forwarded.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines if line)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        echoed = json.dumps(
            {"request_line": request_line, "host": headers["host"], "body": body.decode()}
        ).encode()
        half = len(echoed) // 2
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        for part in (echoed[:half], echoed[half:]):
            writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()  # the proxy must end the exchange from the framing, not from EOF
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_a_posted_body_and_a_chunked_answer_pass_through_whole(
    proxy: RunningProxy, keep_alive_echo_url: str
) -> None:
    async with httpx.AsyncClient(proxy=proxy.url, timeout=5) as client:
        response = await client.post(f"{keep_alive_echo_url}/book?symbol=ESZ6", content=b"qty=3")

    assert response.status_code == 200
    assert response.json() == {
        "request_line": "POST /book?symbol=ESZ6 HTTP/1.1",
        "host": keep_alive_echo_url.removeprefix("http://"),
        "body": "qty=3",
    }


def test_each_partition_and_heal_is_logged_once_and_requests_are_not(
    proxy: RunningProxy, through_proxy: httpx.Client, target_url: str
) -> None:
    lines_before = proxy.log_path.read_text().splitlines()

    proxy.set_partitioned(True)
    proxy.set_partitioned(True)
    proxy.set_partitioned(False)
    for _ in range(3):
        through_proxy.get(f"{target_url}/health")

    new_lines = proxy.log_path.read_text().splitlines()[len(lines_before) :]
    assert len(new_lines) == 2
    assert "partitioned" in new_lines[0]
    assert "healed" in new_lines[1]
