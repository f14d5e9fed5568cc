"""The lab's market-data consumer: it follows whichever source the health monitor made active.

The monitor publishes its choice under ``md/<feed>/active`` in the active-source store (the
topology's ``[active_source]``, by default the lease's store: NATS JetStream KV in the lab). The
consumer watches that key through the store port (``domain.stores.ActiveSourceStore``), so a
switch reaches it as one pushed update instead of at its next poll. Until the watch has
delivered the key's current state it does not know which source is active, so it polls nothing
and ``/health`` answers 503: ticks from a guessed source would look exactly like ticks from the
right one.
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
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from adapters.stores import open_active_source_store
from domain.feeds import active_source_key
from domain.stores import ActiveSourceState, StoreUnavailable
from domain.topology import ConsulStoreConfig, NatsStoreConfig
from lab.service import install_latency_chaos

log = logging.getLogger(__name__)

TICK_TIMEOUT_S = 1.0
# While the store is unreachable every attempt fails; one line per failure would bury the rest
# of the log.
STORE_ERROR_LOG_EVERY_S = 10.0
REWATCH_DELAY_S = 1.0


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
        self.waiting_for = "active-source store not contacted yet"
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

    def apply(self, state: ActiveSourceState) -> None:
        """Follow the source one state of the key names; keep the current one if it names none
        or cannot be read. The first state a watch delivers makes the active source known."""
        # A watch starts by delivering the current state (again after every re-watch); applying
        # it twice would count a malformed value twice.
        if state.revision is not None and state.revision == self._applied_revision:
            self._known(state)
            return
        self._applied_revision = state.revision
        if state.unreadable is not None:
            self._reject(state.revision, state.unreadable)
        elif state.active is not None:
            active = state.active
            url = active.url.rstrip("/")
            changed = (active.source, url) != (self.following, self.url)
            self.following, self.url, self.switched_at = active.source, url, active.switched_at
            if changed:
                self.switches += 1
                log.info("following %s (%s)", active.source, active.reason)
        elif state.cleared:
            # A deleted key names no source; the last one named is still the best known choice.
            log.warning(
                "%s deleted at revision %s; still following %s",
                self.key,
                state.revision,
                self.following,
            )
        self._known(state)

    def _known(self, state: ActiveSourceState) -> None:
        if self.source_known.is_set():
            return
        if self.switches == 0:
            # apply logs only a change; say once what the consumer starts on, and why.
            if self.switched_at is not None:
                why = f"named by {self.key}"
            elif state.revision is not None:
                why = f"default; {self.key} unreadable"
            else:
                why = f"default; {self.key} not set"
            log.info("following %s (%s)", self.following, why)
        self.source_known.set()

    def _reject(self, revision: int | None, why: str) -> None:
        self.malformed_updates += 1
        log.warning(
            "ignoring malformed %s at revision %s (%s); still following %s",
            self.key,
            revision,
            why,
            self.following,
        )

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


class StoreOutageLog:
    """Notes why the active source is not followed now; logs it now and then."""

    def __init__(self, consumer: MarketDataConsumer) -> None:
        self._consumer = consumer
        self._last_logged = float("-inf")

    def record(self, why: str) -> None:
        self._consumer.waiting_for = why
        now = time.monotonic()
        if now - self._last_logged >= STORE_ERROR_LOG_EVERY_S:
            self._last_logged = now
            log.warning("%s; retrying every %g s", why, REWATCH_DELAY_S)


async def follow_active_source(
    consumer: MarketDataConsumer, store_config: NatsStoreConfig | ConsulStoreConfig
) -> None:
    """Watch the feed's key, forever: through store outages (re-open, re-watch), never
    through anything else (a refusal, a bucket of another configuration), which ends the task
    loudly."""
    outage = StoreOutageLog(consumer)
    while True:
        try:
            store = await open_active_source_store(store_config)
        except StoreUnavailable as exc:
            outage.record(str(exc))
            await asyncio.sleep(REWATCH_DELAY_S)  # poll: retry until the store answers
            continue
        log.info("watching %s in the active-source store", consumer.key)
        consumer.waiting_for = f"reading {consumer.key}"
        try:
            while True:
                try:
                    async for state in store.watch(consumer.feed):
                        consumer.apply(state)
                except StoreUnavailable as exc:
                    outage.record(str(exc))
                    await asyncio.sleep(REWATCH_DELAY_S)  # poll: re-watch once it answers
        finally:
            await store.close()


def _exit_on_failure(task: asyncio.Task[None]) -> None:
    """A task that failed in a way retrying cannot fix stops the process: a consumer left
    answering 503, or following a source it no longer hears about, would hide the failure."""
    if task.cancelled() or task.exception() is None:
        return
    log.error("%s failed; stopping", task.get_name(), exc_info=task.exception())
    # uvicorn's own SIGTERM handler then shuts down as it would for `drctl lab down`.
    signal.raise_signal(signal.SIGTERM)


def create_app(
    consumer: MarketDataConsumer,
    store_config: NatsStoreConfig | ConsulStoreConfig,
    poll_interval_s: float,
) -> FastAPI:
    if poll_interval_s <= 0:
        raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Connecting runs as a task, not here: a lifespan that waits for the store would keep
        # the port closed and leave SIGTERM unanswered until the store came back.
        async with httpx.AsyncClient() as http:
            tasks = [
                asyncio.create_task(
                    follow_active_source(consumer, store_config), name="follow-active"
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
