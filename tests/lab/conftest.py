"""A whole lab per test module, started and stopped through the real `drctl lab` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.stack import LabState


class LabRun:
    def __init__(self, root: Path) -> None:
        self.root = root

    def drctl(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drctl", "lab", "--dir", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    @property
    def state(self) -> LabState:
        return LabState.model_validate_json((self.root / "state.json").read_text())

    def url(self, component: str) -> str:
        return f"http://127.0.0.1:{self.state.components[component].spec.port}"

    def get(self, component: str, path: str, timeout_s: float = 2.0) -> Any:
        response = httpx.get(self.url(component) + path, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def status(self) -> dict[str, Any]:
        result = self.drctl("status", "--json")
        return dict(json.loads(result.stdout))


def start_lab(root: Path) -> LabRun:
    run = LabRun(root)
    result = run.drctl("up", "--detach", "--ports", "auto")
    if result.returncode != 0:
        run.drctl("down")
        raise AssertionError(f"lab up failed: {result.stderr}\n{result.stdout}")
    return run


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    run = start_lab(tmp_path_factory.mktemp("lab"))
    try:
        yield run
    finally:
        run.drctl("down")
