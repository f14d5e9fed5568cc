"""Every activity heartbeats while it runs, so a dead worker is noticed in seconds.

Without a heartbeat, Temporal learns that the worker running an attempt died only when the
attempt's start-to-close timeout expires: up to 90 s of a promotion spent waiting on a process
that no longer exists. With this interceptor every attempt heartbeats once a second, and the
runbooks give their calls a short heartbeat timeout, so the retry starts on a live worker within
that timeout instead.

An activity that heartbeats on its own (to keep progress in the details, as the DNS change id
is kept) is not disturbed: the background beat repeats the details it sent last.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

BEAT_INTERVAL_S = 1.0


class _LastDetails(ActivityOutboundInterceptor):
    def __init__(self, next_: ActivityOutboundInterceptor) -> None:
        super().__init__(next_)
        self.details: tuple[Any, ...] = ()

    def heartbeat(self, *details: Any) -> None:
        self.details = details
        super().heartbeat(*details)


class _BeatWhileRunning(ActivityInboundInterceptor):
    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        self._outbound = _LastDetails(outbound)
        super().init(self._outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if not activity.info().heartbeat_timeout:
            return await super().execute_activity(input)
        # Resume from what the previous attempt last reported, until this one says more.
        self._outbound.details = tuple(activity.info().heartbeat_details)
        beat = asyncio.create_task(self._beat())
        try:
            return await super().execute_activity(input)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(BEAT_INTERVAL_S)
            self._outbound.heartbeat(*self._outbound.details)


class HeartbeatWhileRunning(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BeatWhileRunning(next)
