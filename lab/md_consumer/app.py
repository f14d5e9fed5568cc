"""The lab's market-data consumer: it follows whichever source the health monitor made active.

The monitor publishes its choice under ``md/<feed>/active`` in a NATS JetStream KV bucket. The
consumer reads that key once NATS answers and then watches it, so a switch reaches it as one
pushed message instead of at its next poll. Until it has read the key it does not know which
source is active, so it polls nothing and ``/health`` answers 503: ticks from a guessed source
would look exactly like ticks from the right one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import nats.errors
import nats.js.errors
from fastapi import FastAPI, HTTPException
from nats.aio.client import Client
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import BaseModel, ValidationError

from domain.feeds import ActiveSource, active_source_key
from lab.service import install_latency_chaos

log = logging.getLogger(__name__)

# The same retention the lease store asks for: create_key_value is only idempotent when every
# client that creates the shared bucket asks for the same configuration.
BUCKET_HISTORY = 16
TICK_TIMEOUT_S = 1.0
NATS_RECONNECT_WAIT_S = 0.5
# While NATS is unreachable the client fails every NATS_RECONNECT_WAIT_S; one line per failure
# would bury the rest of the log.
NATS_ERROR_LOG_EVERY_S = 10.0
REWATCH_DELAY_S = 1.0

# Failures that a retry fixes once NATS or JetStream is back. Anything else (a bucket that
# exists with another configuration, say) is left to crash the task loudly.
_NATS_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)


class ConsumerHealth(BaseModel):
    feed: str
    following: str
    url: str
    switched_at: datetime | None
    switches: int
    ticks_received: int
    last_tick: dict[str, Any] | None
    last_tick_source: str | None
    malformed_updates: int
    errors: int


class MarketDataConsumer:
    """Which source the consumer follows, and what it has received from it.

    Only touched from the event loop, and no method awaits between reading and writing its
    state, so the watcher and the tick poller cannot interleave inside one and need no lock.
    """

    def __init__(self, feed: str, default_source: str, default_url: str) -> None:
        self.feed = feed
        self.key = active_source_key(feed)
        self.following = default_source
        self.url = default_url.rstrip("/")
        self.switched_at: datetime | None = None
        self.switches = 0
        self.ticks_received = 0
        self.last_tick: dict[str, Any] | None = None
        self.last_tick_source: str | None = None
        self.malformed_updates = 0
        self.errors = 0
        # Set once the key has been read: before that the active source is unknown.
        self.source_known = asyncio.Event()
        self.waiting_for = "NATS not contacted yet"
        self._applied_revision: int | None = None
        self._polls_failing = False

    def health(self) -> ConsumerHealth:
        return ConsumerHealth(
            feed=self.feed,
            following=self.following,
            url=self.url,
            switched_at=self.switched_at,
            switches=self.switches,
            ticks_received=self.ticks_received,
            last_tick=self.last_tick,
            last_tick_source=self.last_tick_source,
            malformed_updates=self.malformed_updates,
            errors=self.errors,
        )

    # --- following the monitor's choice -------------------------------------------------------

    def apply_update(self, value: bytes | None, revision: int | None) -> None:
        """Follow the source named by one revision of the key; keep the current one if the
        value cannot be read."""
        # A watch starts by re-delivering the revision already read at start (and again after
        # every re-watch); applying it twice would count a malformed value twice.
        if revision is not None and revision == self._applied_revision:
            return
        self._applied_revision = revision
        try:
            active = ActiveSource.model_validate_json(value or b"")
        except ValidationError as exc:
            self._reject(revision, f"{exc.error_count()} validation error(s): {_first_error(exc)}")
            return
        if active.feed != self.feed:
            self._reject(revision, f"it names feed {active.feed!r}")
            return
        url = active.url.rstrip("/")
        changed = (active.source, url) != (self.following, self.url)
        self.following, self.url, self.switched_at = active.source, url, active.switched_at
        if changed:
            self.switches += 1
            log.info("following %s (%s)", active.source, active.reason)

    def note_cleared(self, revision: int | None, operation: str) -> None:
        # A deleted key names no source; the last one named is still the best known choice.
        self._applied_revision = revision
        log.warning(
            "%s %s at revision %s; still following %s",
            self.key,
            operation.lower(),
            revision,
            self.following,
        )

    def _reject(self, revision: int | None, why: str) -> None:
        self.malformed_updates += 1
        log.warning(
            "ignoring malformed %s at revision %s (%s); still following %s",
            self.key,
            revision,
            why,
            self.following,
        )

    async def read_active(self, kv: KeyValue) -> None:
        try:
            entry = await kv.get(self.key)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            entry = None
        if entry is not None:
            self.apply_update(entry.value, entry.revision)
        if self.switches == 0:
            # apply_update logs only a change; say once what the consumer starts on, and why.
            if self.switched_at is not None:
                why = f"named by {self.key}"
            elif entry is not None:
                why = f"default; {self.key} unreadable"
            else:
                why = f"default; {self.key} not set"
            log.info("following %s (%s)", self.following, why)
        self.source_known.set()

    async def watch_active(self, kv: KeyValue) -> None:
        """Apply every update of the key, forever.

        The watch is an ordered consumer that re-creates itself after missed heartbeats; only
        setting it up can fail while NATS is away, and then it is set up again.
        """
        while True:
            try:
                watcher = await kv.watch(self.key)
            except _NATS_UNAVAILABLE as exc:
                self.waiting_for = f"cannot watch {self.key}: {type(exc).__name__}"
                log.warning("%s; retrying in %g s", self.waiting_for, REWATCH_DELAY_S)
                await asyncio.sleep(REWATCH_DELAY_S)
                continue
            try:
                async for entry in watcher:
                    if entry is None:
                        continue  # the marker that the current value has been delivered
                    if entry.operation in (KV_DEL, KV_PURGE):
                        self.note_cleared(entry.revision, entry.operation)
                    else:
                        self.apply_update(entry.value, entry.revision)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()

    # --- polling the followed source ----------------------------------------------------------

    async def poll_ticks(self, http: httpx.AsyncClient, interval_s: float) -> None:
        await self.source_known.wait()
        while True:
            await self.poll_once(http)
            await asyncio.sleep(interval_s)

    async def poll_once(self, http: httpx.AsyncClient) -> None:
        source, url, switches = self.following, self.url, self.switches
        try:
            response = await http.get(f"{url}/tick", timeout=TICK_TIMEOUT_S)
            response.raise_for_status()
            tick = response.json()
            if not isinstance(tick, dict):
                raise ValueError(f"expected a JSON object, got {type(tick).__name__}")
        except (httpx.HTTPError, ValueError) as exc:
            if self.switches == switches:
                self._poll_failed(source, url, exc)
            return
        if self.switches != switches:
            # The source was switched while this request was in flight: the tick comes from the
            # source just left, and recording it would make last_tick_source name that one.
            return
        self.ticks_received += 1
        self.last_tick, self.last_tick_source = tick, source
        if self._polls_failing:
            self._polls_failing = False
            log.info("ticks from %s arriving again", source)

    def _poll_failed(self, source: str, url: str, exc: Exception) -> None:
        self.errors += 1
        # One line when a run of failures starts, not one per poll.
        if not self._polls_failing:
            self._polls_failing = True
            log.warning(
                "polling %s at %s/tick failed (%s: %s); counting until it answers",
                source,
                url,
                type(exc).__name__,
                exc,
            )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    return f"{where}: {error['msg']}"


class NatsErrorLog:
    """The NATS client's error callback: note the latest error, log it now and then."""

    def __init__(self, consumer: MarketDataConsumer, nats_url: str) -> None:
        self._consumer = consumer
        self._nats_url = nats_url
        self._last_logged = float("-inf")

    # A method, not __call__: nats-py accepts only coroutine functions as callbacks.
    async def record(self, exc: Exception) -> None:
        self._consumer.waiting_for = (
            f"NATS at {self._nats_url} unreachable ({type(exc).__name__}: {exc})"
        )
        now = time.monotonic()
        if now - self._last_logged >= NATS_ERROR_LOG_EVERY_S:
            self._last_logged = now
            log.warning("%s; retrying", self._consumer.waiting_for)


async def open_bucket(nc: Client, bucket: str, consumer: MarketDataConsumer) -> KeyValue:
    """The bucket, created if missing. Right after NATS starts JetStream may not answer yet."""
    js = nc.jetstream(timeout=2.0)
    while True:
        try:
            return await js.create_key_value(bucket=bucket, history=BUCKET_HISTORY)
        except _NATS_UNAVAILABLE as exc:
            consumer.waiting_for = f"KV bucket {bucket!r} not available: {type(exc).__name__}"
            log.warning("%s; retrying in %g s", consumer.waiting_for, REWATCH_DELAY_S)
            await asyncio.sleep(REWATCH_DELAY_S)


async def follow_active_source(
    consumer: MarketDataConsumer, nc: Client, nats_url: str, bucket: str
) -> None:
    # Unlimited reconnect attempts make connect() itself retry until NATS is reachable, and keep
    # the same client through a NATS restart later on.
    await nc.connect(
        nats_url,
        connect_timeout=1.0,
        max_reconnect_attempts=-1,
        reconnect_time_wait=NATS_RECONNECT_WAIT_S,
        allow_reconnect=True,
        error_cb=NatsErrorLog(consumer, nats_url).record,
    )
    log.info("connected to NATS at %s", nats_url)
    consumer.waiting_for = f"reading {consumer.key} from bucket {bucket!r}"
    kv = await open_bucket(nc, bucket, consumer)
    await consumer.read_active(kv)
    await consumer.watch_active(kv)


def _exit_on_failure(task: asyncio.Task[None]) -> None:
    """A task that failed in a way retrying cannot fix stops the process: a consumer left
    answering 503, or following a source it no longer hears about, would hide the failure."""
    if task.cancelled() or task.exception() is None:
        return
    log.error("%s failed; stopping", task.get_name(), exc_info=task.exception())
    # uvicorn's own SIGTERM handler then shuts down as it would for `drctl lab down`.
    signal.raise_signal(signal.SIGTERM)


def create_app(
    consumer: MarketDataConsumer, nats_url: str, bucket: str, poll_interval_s: float
) -> FastAPI:
    if poll_interval_s <= 0:
        raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Connecting runs as a task, not here: a lifespan that waits for NATS would keep the
        # port closed and leave SIGTERM unanswered until NATS came back.
        nc = Client()
        async with httpx.AsyncClient() as http:
            tasks = [
                asyncio.create_task(
                    follow_active_source(consumer, nc, nats_url, bucket), name="follow-active"
                ),
                asyncio.create_task(consumer.poll_ticks(http, poll_interval_s), name="poll-ticks"),
            ]
            for task in tasks:
                task.add_done_callback(_exit_on_failure)
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await nc.close()

    app = FastAPI(title=f"lab market-data consumer for {consumer.feed}", lifespan=lifespan)
    install_latency_chaos(app)

    @app.get("/health")
    async def health() -> ConsumerHealth:
        if not consumer.source_known.is_set():
            raise HTTPException(
                status_code=503, detail=f"active source not known yet: {consumer.waiting_for}"
            )
        return consumer.health()

    return app
