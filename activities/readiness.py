"""The DR readiness watch: a long-lived activity on the standby region's queue that measures how
far the standby is behind and speaks only when its debounced readiness changes.

Each interval: the standby OMS's ``GET /health`` (last applied stream sequence) against the
stream's last sequence for the system (NATS, read from here: the standby's own view), and, when
the system has ``[systems.database]``, the replica's replay lag through the database port. The
figures go to ``/metrics`` every interval (replication lag as a live metric) and into the
heartbeat, where ``drctl monitor status`` reads them; the workflow's history hears only of a
change (ready -> not ready after ``intervals`` bad checks, and back), or of the watch's lifetime
ending. A healthy standby costs the monitor a few events per lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import httpx
import nats.errors
import nats.js.errors
from nats.aio.client import Client as Nats
from pydantic import BaseModel
from temporalio import activity

from activities import replication
from activities.database import directed
from activities.metrics import record_replication_lag
from adapters.databases import open_database
from domain.book import BookEnvelope
from domain.database import DatabaseError, ReplicaLag
from domain.readiness import (
    ReadinessCounters,
    ReadinessSample,
    ReadinessThresholds,
    count,
    database_problem,
    next_ready,
    problem_summary,
    stream_problem,
)
from domain.topology import Topology


class ReadinessRequest(BaseModel):
    system: str
    # The standby region and its OMS: what would be promoted if the active side died now.
    region: str
    oms_url: str
    # Which way the system's database pair points: "failover" when the standby is the DR site
    # (its replica is the configured replica), "failback" when it is the primary site.
    db_direction: Literal["failover", "failback"] = "failover"
    thresholds: ReadinessThresholds
    reported: bool | None
    interval_s: float
    max_lifetime_s: float
    counters: ReadinessCounters | None = None


class ReadinessResult(BaseModel):
    region: str
    # None: not known yet (the lifetime ended before a verdict).
    ready: bool | None
    changed: bool
    counters: ReadinessCounters
    attempt: int = 1

    @property
    def reason(self) -> str | None:
        """Why it is not ready: the last measurement's problems."""
        if self.ready is not False:
            return None
        return problem_summary(self.counters.last)


class ReadinessActivities:
    def __init__(self, topology: Topology, env: Mapping[str, str] | None = None) -> None:
        self._topology = topology
        self._env = env

    @activity.defn(name="watch_dr_readiness")
    async def watch_dr_readiness(self, request: ReadinessRequest) -> ReadinessResult:
        details = activity.info().heartbeat_details
        if details:
            counters = ReadinessCounters.model_validate(details[0])
        elif request.counters is not None:
            counters = request.counters.model_copy(update={"ready": request.reported})
        else:
            counters = ReadinessCounters(ready=request.reported)
        deadline = time.monotonic() + request.max_lifetime_s
        nc: Nats | None = None
        try:
            async with httpx.AsyncClient(timeout=min(request.interval_s, 5.0)) as http:
                while True:
                    started = time.monotonic()
                    if nc is None or not nc.is_connected:
                        nc = await self._connect_stream(nc)
                    sample = await self._measure(request, http, nc)
                    counters = count(counters, sample)
                    ready = next_ready(counters, request.thresholds.intervals)
                    counters.ready = ready
                    activity.heartbeat(counters.model_dump(mode="json"))
                    self._record_metrics(request.system, sample)
                    changed = ready is not None and ready != request.reported
                    if changed or time.monotonic() >= deadline:
                        return ReadinessResult(
                            region=request.region,
                            ready=ready,
                            changed=changed,
                            counters=counters,
                            attempt=activity.info().attempt,
                        )
                    pause = request.interval_s - (time.monotonic() - started)
                    await asyncio.sleep(max(pause, 0.0))
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _connect_stream(self, old: Nats | None) -> Nats | None:
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        try:
            return await replication.connect(self._topology.replication, timeout_s=2.0)
        except (nats.errors.Error, OSError, TimeoutError):
            return None

    async def _measure(
        self, request: ReadinessRequest, http: httpx.AsyncClient, nc: Nats | None
    ) -> ReadinessSample:
        problems: list[str] = []
        stream_events, stream_s = await self._stream_lag(request, http, nc, problems)
        db = await self._database_lag(request, problems)
        sample = ReadinessSample(
            measured_at=datetime.now(UTC),
            stream_lag_events=stream_events,
            stream_lag_s=stream_s,
            db_lag_bytes=db.bytes if db else None,
            db_lag_s=db.seconds if db else None,
        )
        stream = stream_problem(stream_events, stream_s, request.thresholds)
        if stream:
            problems.append(stream)
        if db is not None:
            database = database_problem(db, request.thresholds)
            if database:
                problems.append(database)
        sample.problems = problems
        return sample

    async def _stream_lag(
        self,
        request: ReadinessRequest,
        http: httpx.AsyncClient,
        nc: Nats | None,
        problems: list[str],
    ) -> tuple[int | None, float | None]:
        """(events stored but not applied by the standby OMS, age of the oldest of them)."""
        try:
            response = await http.get(request.oms_url.rstrip("/") + "/health")
            response.raise_for_status()
            applied = int(response.json().get("last_applied_seq") or 0)
        except (httpx.HTTPError, ValueError, TypeError, AttributeError) as exc:
            problems.append(f"{request.region} OMS health unreadable: {type(exc).__name__}")
            return None, None
        if nc is None:
            problems.append("stream unreachable from the standby side")
            return None, None
        config = self._topology.replication
        js = nc.jetstream(timeout=2.0)
        try:
            last = await replication.last_sequence(js, config, request.system)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            problems.append(f"stream unreadable: {type(exc).__name__}")
            return None, None
        behind = max(last - applied, 0)
        if behind == 0:
            return 0, 0.0
        try:
            oldest = await js.get_msg(
                config.stream,
                seq=applied + 1,
                subject=replication.system_subject(config, request.system),
                next=True,
            )
            published = BookEnvelope.model_validate_json(oldest.data or b"").published_at
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError, ValueError):
            # The events are there, their age unknown: judged by their number alone.
            return behind, None
        return behind, max((datetime.now(UTC) - published).total_seconds(), 0.0)

    async def _database_lag(
        self, request: ReadinessRequest, problems: list[str]
    ) -> ReplicaLag | None:
        config = self._topology.system(request.system).database
        if config is None:
            return None
        try:
            database = open_database(directed(config, request.db_direction), self._env)
        except DatabaseError as exc:
            problems.append(f"database: {exc}")
            return None
        try:
            return await database.replica_lag()
        except DatabaseError as exc:
            problems.append(f"database: {exc}")
            return None
        finally:
            await database.close()

    def _record_metrics(self, system: str, sample: ReadinessSample) -> None:
        record_replication_lag(
            activity.metric_meter(),
            system,
            stream_events=sample.stream_lag_events or 0,
            stream_seconds=sample.stream_lag_s or 0.0,
            db_bytes=sample.db_lag_bytes,
            db_seconds=sample.db_lag_s,
        )
