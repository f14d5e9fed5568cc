"""OMS activities: the DR-control protocol as the promotion drives it, plus the primary probe.

Every control call is idempotent at the OMS for the same epoch, so every activity here is safe to
retry. A 409 from the OMS means the call contradicts the lease or the epoch: retrying cannot fix
it, so it becomes a non-retryable error with the OMS's own explanation.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.book import BookSnapshot
from domain.database import DbStateSummary
from domain.promotion import (
    ControlOutcome,
    FenceOutcome,
    PrimaryConfirmation,
    ProbeObservation,
    ReplicationGap,
)


class ProbeRequest(BaseModel):
    oms_url: str
    probes: int
    interval_s: float
    timeout_s: float


class FenceRequest(BaseModel):
    oms_url: str
    epoch: int
    best_effort: bool


class ActivateRequest(BaseModel):
    oms_url: str
    epoch: int
    mode: str = "reduce_only"


class SyncRequest(BaseModel):
    oms_url: str
    timeout_s: float


class ReleaseRequest(BaseModel):
    oms_url: str
    epoch: int
    # The venues to release now; None: every venue (as runs before per-venue release asked).
    venues: list[str] | None = None


class BookRequest(BaseModel):
    oms_url: str
    fills_since: datetime | None = None
    venue: str | None = None
    include_orders: bool = True


def _attempt() -> int:
    return activity.info().attempt


def _is_active_and_healthy(body: dict[str, Any]) -> bool:
    return body.get("role") == "active" and body.get("trading_state") in ("trading", "reduce_only")


class OmsActivities:
    def __init__(self, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s

    async def _post(self, url: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(timeout=self._timeout_s) as http:
            try:
                response = await http.post(url.rstrip("/") + path, json=body or {})
            except httpx.HTTPError as exc:
                raise ApplicationError(
                    f"OMS at {url} did not answer {path}: {type(exc).__name__}"
                ) from None
        return _json_or_fail(url, path, response)

    async def _get(self, url: str, path: str, params: dict[str, str] | None = None) -> Any:
        async with httpx.AsyncClient(timeout=self._timeout_s) as http:
            try:
                response = await http.get(url.rstrip("/") + path, params=params)
            except httpx.HTTPError as exc:
                raise ApplicationError(
                    f"OMS at {url} did not answer {path}: {type(exc).__name__}"
                ) from None
        return _json_or_fail(url, path, response)

    @activity.defn(name="confirm_primary_down")
    async def confirm_primary_down(self, request: ProbeRequest) -> PrimaryConfirmation:
        """Probe the old primary from here (the DR side) ``probes`` times, ``interval_s`` apart.

        Down means no probe found it active and answering in time: dead, hung, unreachable
        from DR, or already fenced. One healthy answer is enough to refuse an unplanned promotion.
        """
        observations: list[ProbeObservation] = []
        async with httpx.AsyncClient(timeout=request.timeout_s) as http:
            for i in range(request.probes):
                if i:
                    await asyncio.sleep(request.interval_s)
                activity.heartbeat(i)
                observations.append(await _probe_once(http, request.oms_url))
        down = not any(o.ok for o in observations)
        return PrimaryConfirmation(down=down, observations=observations, attempt=_attempt())

    @activity.defn(name="fence_primary")
    async def fence_primary(self, request: FenceRequest) -> FenceOutcome:
        """Tell the old primary to stop, under the new epoch.

        Best effort in an incident: the lease already fences it, and a dead primary cannot
        answer. The outcome is recorded either way.
        """
        try:
            body = await self._post(
                request.oms_url, "/control/deactivate", {"epoch": request.epoch}
            )
        except ApplicationError as exc:
            if not request.best_effort:
                raise
            return FenceOutcome(confirmed=False, detail=exc.message, attempt=_attempt())
        return FenceOutcome(
            confirmed=body.get("trading_state") in ("fenced", "standby"),
            detail=f"primary reports {body.get('trading_state')} at epoch {body.get('epoch')}",
            attempt=_attempt(),
        )

    @activity.defn(name="sync_dr_state")
    async def sync_dr_state(self, request: SyncRequest) -> ReplicationGap:
        """Bring DR's book level with the stream, and its database state (pending orders, risk
        parameters) with the promoted database; record how far behind it was and what it
        loaded."""
        before = await self._get(request.oms_url, "/health")
        lag_before = before.get("replication_lag_s")
        result = await self._post(request.oms_url, "/control/sync")
        loaded = result.get("database")
        try:
            database = DbStateSummary.model_validate(loaded) if loaded is not None else None
        except ValidationError:
            raise ApplicationError(
                f"the OMS at {request.oms_url} answered /control/sync with a malformed "
                "database part",
                non_retryable=True,
            ) from None
        return ReplicationGap(
            stream_last_seq=int(result["stream_last_seq"]),
            applied_before=int(before.get("last_applied_seq") or 0),
            applied_after=int(result["applied_seq"]),
            lag_before_s=float(lag_before) if lag_before is not None else None,
            database_loaded=database,
            attempt=_attempt(),
        )

    @activity.defn(name="activate_dr")
    async def activate_dr(self, request: ActivateRequest) -> ControlOutcome:
        body = await self._post(
            request.oms_url, "/control/activate", {"epoch": request.epoch, "mode": request.mode}
        )
        return ControlOutcome(
            trading_state=str(body["trading_state"]), epoch=int(body["epoch"]), attempt=_attempt()
        )

    @activity.defn(name="release_trading")
    async def release_trading(self, request: ReleaseRequest) -> ControlOutcome:
        """Trading resumes on ``venues`` at the promotion's epoch. The OMS refuses (409) a
        release at an epoch it is not active at; the answer's epoch is checked as well, for an
        OMS that answers without checking."""
        release: dict[str, Any] = {"epoch": request.epoch}
        if request.venues is not None:
            release["venues"] = request.venues
        body = await self._post(request.oms_url, "/control/release", release)
        if int(body.get("epoch") or 0) != request.epoch:
            raise ApplicationError(
                f"refusing to release trading: the OMS at {request.oms_url} is at epoch "
                f"{body.get('epoch')}, this promotion holds epoch {request.epoch}",
                non_retryable=True,
            )
        return ControlOutcome(
            trading_state=str(body["trading_state"]), epoch=int(body["epoch"]), attempt=_attempt()
        )

    @activity.defn(name="fetch_dr_book")
    async def fetch_dr_book(self, request: BookRequest) -> BookSnapshot:
        params = {"include_orders": str(request.include_orders).lower()}
        if request.fills_since is not None:
            params["fills_since"] = request.fills_since.isoformat()
        if request.venue is not None:
            params["venue"] = request.venue
        body = await self._get(request.oms_url, "/book", params)
        try:
            return BookSnapshot.model_validate(body)
        except ValidationError as exc:
            raise ApplicationError(
                f"the OMS at {request.oms_url} returned a malformed book: "
                f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}",
                non_retryable=True,
            ) from None


async def _probe_once(http: httpx.AsyncClient, url: str) -> ProbeObservation:
    started = time.monotonic()
    at = datetime.now(UTC)
    try:
        response = await http.get(url.rstrip("/") + "/health")
    except httpx.HTTPError as exc:
        return ProbeObservation(at=at, ok=False, latency_ms=None, detail=type(exc).__name__)
    latency_ms = (time.monotonic() - started) * 1000
    if response.status_code != 200:
        return ProbeObservation(
            at=at, ok=False, latency_ms=latency_ms, detail=f"HTTP {response.status_code}"
        )
    try:
        body = response.json()
    except ValueError:
        return ProbeObservation(at=at, ok=False, latency_ms=latency_ms, detail="not JSON")
    ok = _is_active_and_healthy(body)
    detail = f"{body.get('role')}/{body.get('trading_state')} epoch {body.get('epoch')}"
    return ProbeObservation(at=at, ok=ok, latency_ms=latency_ms, detail=detail)


def _json_or_fail(url: str, path: str, response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:200]}
    if response.status_code == 409:
        raise ApplicationError(
            f"OMS at {url} refused {path}: {body.get('detail', body)}", non_retryable=True
        )
    if response.status_code == 422:
        raise ApplicationError(
            f"OMS at {url} rejected the {path} request as invalid: {body.get('detail', body)}",
            non_retryable=True,
        )
    if response.status_code != 200:
        raise ApplicationError(f"OMS at {url} answered {path} with HTTP {response.status_code}")
    return body
