"""What every lab HTTP service shares: how it is served and how chaos latency reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

ADMIN_PREFIX = "/admin"


class LatencySetting(BaseModel):
    latency_ms: int = Field(default=0, ge=0, le=600_000)


def install_latency_chaos(app: FastAPI) -> LatencySetting:
    """Delay every non-admin response by the current setting (`drctl lab chaos slow`).

    Admin endpoints stay fast so that `heal` can always reach a slowed service.
    """
    setting = LatencySetting()

    @app.middleware("http")
    async def _delay(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if setting.latency_ms and not request.url.path.startswith(ADMIN_PREFIX):
            await asyncio.sleep(setting.latency_ms / 1000)
        return await call_next(request)

    @app.post(f"{ADMIN_PREFIX}/latency")
    async def set_latency(new: LatencySetting) -> LatencySetting:
        setting.latency_ms = new.latency_ms
        return setting

    return setting


def serve(app: FastAPI, port: int, host: str = "127.0.0.1") -> None:
    """Run ``app`` until SIGTERM/SIGINT. Loopback only: the lab is never exposed."""
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
