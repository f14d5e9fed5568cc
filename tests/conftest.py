"""Shared fixtures: real servers on free ports in temp dirs, each stopped at teardown."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from lab import processes
from lab.processes import ProcessSpec
from lab.stack import SEARCH_ATTRIBUTES
from workflows.data_converter import DATA_CONVERTER

TEMPORAL_START_TIMEOUT_S = 60.0


def _own_port_slice() -> None:
    """Under pytest-xdist, this test process and every lab it starts (they inherit the
    variable) pick free ports from a slice of their own: two labs starting at once in two
    processes never pick the same port."""
    worker, count = (
        os.environ.get("PYTEST_XDIST_WORKER"),
        os.environ.get("PYTEST_XDIST_WORKER_COUNT"),
    )
    if not worker or not count or processes.PORT_RANGE_ENV in os.environ:
        return
    index, total = int(worker.removeprefix("gw")), int(count)
    low, high = processes.DEFAULT_PORT_RANGE
    size = (high - low) // total
    first = low + index * size
    os.environ[processes.PORT_RANGE_ENV] = f"{first}-{first + size - 1}"


_own_port_slice()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``after_everything`` (the secrets scan) go last, in their own order."""
    last = [item for item in items if item.get_closest_marker("after_everything")]
    items[:] = [item for item in items if item not in last] + last


class NatsServer:
    """nats-server with JetStream on a free port. It can be stopped and restarted on the same
    port and store, which is how the tests make the lease store disappear and come back."""

    def __init__(self, root: Path) -> None:
        self.port = processes.free_port()
        self.spec = ProcessSpec(
            name="nats",
            argv=[
                processes.find_binary("nats-server"),
                *("-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(root / "store")),
            ],
            port=self.port,
            log_path=root / "nats.log",
        )
        self.pid = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.pid = processes.start(self.spec)
        processes.wait_ready(self.spec, self.pid, 20)

    def stop(self) -> None:
        processes.stop(self.pid)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real NATS server shared by the session. Tests must not stop it; make your own."""
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


class DevServer:
    """A Temporal dev server (SQLite in a temp dir) with our search attributes registered."""

    def __init__(self, root: Path) -> None:
        self.port = processes.free_port()
        argv = [
            processes.find_binary("temporal"),
            *("server", "start-dev", "--headless", "--ip", "127.0.0.1"),
            *("--port", str(self.port), "--ui-port", str(processes.free_port())),
            *("--db-filename", str(root / "temporal.sqlite"), "--log-level", "warn"),
        ]
        for name, kind in SEARCH_ATTRIBUTES.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        self.spec = ProcessSpec(name="temporal", argv=argv, port=self.port, log_path=root / "t.log")
        self.pid = processes.start(self.spec)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("temporal"))
    try:
        processes.wait_ready(server.spec, server.pid, TEMPORAL_START_TIMEOUT_S)
        yield server
    finally:
        processes.stop(server.pid)


@pytest.fixture
async def client(dev_server: DevServer) -> AsyncIterator[Client]:
    """A client of the module's dev server, with the project's data converter."""
    deadline = asyncio.get_running_loop().time() + TEMPORAL_START_TIMEOUT_S
    while True:
        try:
            connected = await Client.connect(dev_server.address, data_converter=DATA_CONVERTER)
            # The port opens before the default namespace exists: wait until it answers.
            await connected.count_workflows()
            break
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)  # poll
    yield connected
