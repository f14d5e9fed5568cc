"""The lab's control API: the chaos commands of `drctl lab chaos`, over HTTP.

A drill runs inside a worker, not at an operator's terminal; this is how it injects a real
fault (a killed process, not a flag in a fake) and heals it afterwards. The key in
``X-Api-Key`` is the lab's own secret, so nothing else on the machine can break the lab.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from lab import stack
from lab.processes import LabError


class ChaosCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: stack.ChaosAction
    target: str
    name: str | None = None
    ms: Annotated[int, Field(ge=0, le=600_000)] = 500


class ChaosDone(BaseModel):
    detail: str
    at: datetime


class ControlHealth(BaseModel):
    status: str = "ok"
    lab_dir: str


def create_app(root: Path, api_key: str) -> FastAPI:
    app = FastAPI(title="lab control", docs_url=None, redoc_url=None)
    # One chaos command at a time: two heals of one process must not start it twice.
    lock = asyncio.Lock()

    @app.get("/health")
    async def health() -> ControlHealth:
        return ControlHealth(lab_dir=str(root))

    @app.post("/chaos")
    async def chaos(command: ChaosCommand, x_api_key: Annotated[str, Header()] = "") -> ChaosDone:
        if not secrets.compare_digest(x_api_key.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong X-Api-Key")
        async with lock:
            try:
                detail = await asyncio.to_thread(
                    stack.chaos, root, command.action, command.target, command.name, command.ms
                )
            except LabError as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
        return ChaosDone(detail=detail, at=datetime.now(UTC))

    return app
