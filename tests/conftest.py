"""Shared fixtures: real servers on free ports in temp dirs, each stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import processes
from lab.processes import ProcessSpec


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
