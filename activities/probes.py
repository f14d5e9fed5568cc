"""Health probes: a long-lived watch per vantage point that speaks only when its verdict changes.

Three stages per check: latency (round trip vs threshold), freshness (the data's own timestamp vs
now, for market data), and sequence integrity (a duplicate or reversed sequence number). An OMS
target also fails a check when it no longer reports itself active.

The consecutive counters live in the heartbeat details, so a retried watch resumes them instead of
starting from zero, and the watch returns only when its debounced verdict differs from the one the
workflow holds, or when its lifetime is up. A healthy target costs the workflow almost nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, ValidationError
from temporalio import activity

from domain.health import Verdict


class ProbeTarget(BaseModel):
    name: str
    kind: Literal["oms", "market_data"]
    url: str
    symbol: str | None = None


class ProbeCounters(BaseModel):
    """What a watch remembers between checks, and across a retry (via heartbeat details)."""

    verdict: Verdict = Verdict.UNKNOWN
    consecutive_ok: int = 0
    consecutive_failed: int = 0
    checks: int = 0
    last_seq: int | None = None
    last_failure: str | None = None
    # Wall-clock time of the last check: a watch restarted after a verdict change keeps the
    # cadence, so confirmation_count failures always span confirmation_count intervals.
    last_check_at: float | None = None
    # Wall-clock time of the first failed check of the current streak (None while passing):
    # where the monitor's detection latency starts.
    failing_since: float | None = None


class WatchRequest(BaseModel):
    vantage: str
    target: ProbeTarget
    reported: Verdict
    interval_s: float
    latency_threshold_ms: float
    freshness_threshold_s: float
    confirmation_count: int
    recovery_count: int
    max_lifetime_s: float = 600.0
    http_proxy: str | None = None
    # Where the previous watch of this vantage left off: a streak must survive the restart
    # that follows a verdict change, or DOWN would take one failure more than configured.
    counters: ProbeCounters | None = None


class WatchResult(BaseModel):
    vantage: str
    target: str
    verdict: Verdict
    changed: bool
    checks: int
    last_failure: str | None
    counters: ProbeCounters
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    attempt: int = 1


def next_verdict(counters: ProbeCounters, confirmation_count: int, recovery_count: int) -> Verdict:
    """Debounce: DOWN after ``confirmation_count`` failures in a row, DEGRADED on fewer; back to
    HEALTHY only after ``recovery_count`` good checks in a row (a first good check from UNKNOWN
    counts, so a new monitor starts healthy at once)."""
    if counters.consecutive_failed >= confirmation_count:
        return Verdict.DOWN
    if counters.consecutive_failed > 0:
        return Verdict.DEGRADED
    if counters.verdict in (Verdict.UNKNOWN, Verdict.HEALTHY):
        return Verdict.HEALTHY
    if counters.consecutive_ok >= recovery_count:
        return Verdict.HEALTHY
    return counters.verdict


class ProbeActivities:
    @activity.defn(name="watch_target")
    async def watch_target(self, request: WatchRequest) -> WatchResult:
        details = activity.info().heartbeat_details
        if details:
            counters = ProbeCounters.model_validate(details[0])
        elif request.counters is not None:
            counters = request.counters.model_copy(update={"verdict": request.reported})
        else:
            counters = ProbeCounters(verdict=request.reported)
        deadline = time.monotonic() + request.max_lifetime_s
        timeout = min(request.interval_s, max(request.latency_threshold_ms / 1000 * 4, 0.2))
        if counters.last_check_at is not None:
            wait = counters.last_check_at + request.interval_s - time.time()
            await asyncio.sleep(min(max(wait, 0.0), request.interval_s))
        async with httpx.AsyncClient(timeout=timeout, proxy=request.http_proxy) as http:
            while True:
                started = time.monotonic()
                checked_at = time.time()
                failure = await check_once(http, request, counters)
                counters = _count(counters, failure)
                counters.last_check_at = checked_at
                if counters.consecutive_failed == 1:
                    counters.failing_since = checked_at
                elif counters.consecutive_failed == 0:
                    counters.failing_since = None
                counters.verdict = next_verdict(
                    counters, request.confirmation_count, request.recovery_count
                )
                activity.heartbeat(counters.model_dump(mode="json"))
                if counters.verdict != request.reported or time.monotonic() >= deadline:
                    return WatchResult(
                        vantage=request.vantage,
                        target=request.target.name,
                        verdict=counters.verdict,
                        changed=counters.verdict != request.reported,
                        checks=counters.checks,
                        last_failure=counters.last_failure,
                        counters=counters,
                        attempt=activity.info().attempt,
                    )
                pause = request.interval_s - (time.monotonic() - started)
                await asyncio.sleep(max(pause, 0.0))


def _count(counters: ProbeCounters, failure: str | None) -> ProbeCounters:
    counters = counters.model_copy()
    counters.checks += 1
    if failure is None:
        counters.consecutive_ok += 1
        counters.consecutive_failed = 0
    else:
        counters.consecutive_failed += 1
        counters.consecutive_ok = 0
        counters.last_failure = failure
    return counters


async def check_once(
    http: httpx.AsyncClient, request: WatchRequest, counters: ProbeCounters
) -> str | None:
    """One three-stage check; returns what failed, or None. Updates ``counters.last_seq``."""
    target = request.target
    path = "/health" if target.kind == "oms" else "/tick"
    params = {"symbol": target.symbol} if target.symbol else None
    started = time.monotonic()
    try:
        response = await http.get(target.url.rstrip("/") + path, params=params)
    except httpx.HTTPError as exc:
        return f"unreachable: {type(exc).__name__}"
    latency_ms = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    if latency_ms > request.latency_threshold_ms:
        return f"latency {latency_ms:.0f} ms over {request.latency_threshold_ms:g} ms"
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        return "answer is not JSON"
    if target.kind == "oms":
        return _oms_failure(body)
    return _market_data_failure(body, request, counters)


def _oms_failure(body: dict[str, Any]) -> str | None:
    if body.get("role") != "active" or body.get("trading_state") not in ("trading", "reduce_only"):
        return f"not active: {body.get('role')}/{body.get('trading_state')}"
    return None


class _Tick(BaseModel):
    seq: int
    exchange_ts: datetime


def _market_data_failure(
    body: dict[str, Any], request: WatchRequest, counters: ProbeCounters
) -> str | None:
    try:
        tick = _Tick.model_validate(body)
    except ValidationError:
        return "malformed tick"
    previous, counters.last_seq = counters.last_seq, tick.seq
    age_s = (datetime.now(UTC) - tick.exchange_ts).total_seconds()
    if age_s > request.freshness_threshold_s:
        return f"stale: exchange time {age_s:.1f} s old"
    if previous is not None and tick.seq == previous:
        return f"duplicate sequence {tick.seq}"
    if previous is not None and tick.seq < previous:
        return f"sequence went back from {previous} to {tick.seq}"
    return None
