"""Switching a feed's active market-data source: the active-source store consumers watch, and DNS.

Idempotent: writing the same source again changes nothing a consumer would notice (the store
port's promise), and DNS is changed only when its weights differ from the wanted ones, through
the promotion's resumable change-and-wait (``activities.dns.move_weights``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dns import move_weights
from adapters.stores import open_active_source_store
from domain.feeds import ActiveSource
from domain.stores import StoreConfigError, StoreError, StoreUnavailable
from domain.topology import FeedConfig, Topology


class FeedSwitchRequest(BaseModel):
    feed: str
    source: str
    reason: str
    wait_timeout_s: float = 60.0


class FeedSwitchResult(BaseModel):
    feed: str
    source: str
    # The active-source store's revision of the feed's key. Named when NATS KV was the only
    # store; recorded histories carry the name, so it stays.
    kv_revision: int
    dns_changed: bool | None
    weights: dict[str, int]
    attempt: int = 1


class FeedActivities:
    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    def _feed(self, name: str) -> FeedConfig:
        for feed in self._topology.feeds:
            if feed.name == name:
                return feed
        known = [f.name for f in self._topology.feeds]
        raise ApplicationError(f"no feed named {name!r}; known: {known}", non_retryable=True)

    @activity.defn(name="switch_feed_source")
    async def switch_feed_source(self, request: FeedSwitchRequest) -> FeedSwitchResult:
        feed = self._feed(request.feed)
        source = next((s for s in feed.sources if s.name == request.source), None)
        if source is None:
            raise ApplicationError(
                f"feed {feed.name!r} has no source {request.source!r}", non_retryable=True
            )
        value = ActiveSource(
            feed=feed.name,
            source=source.name,
            url=str(source.url).rstrip("/"),
            switched_at=datetime.now(UTC),
            reason=request.reason,
        )
        revision = await self._write_active(value)
        changed: bool | None = None
        weights: dict[str, int] = {}
        if feed.dns is not None:
            moved = await move_weights(
                self._topology.dns,
                feed.dns,
                targets={s.name: s.dns_target for s in feed.sources},
                wanted={s.name: 100 if s.name == source.name else 0 for s in feed.sources},
                comment=f"failover-runbooks: feed {feed.name} on {source.name}",
                wait_timeout_s=request.wait_timeout_s,
            )
            changed, weights = moved.changed, moved.weights
        return FeedSwitchResult(
            feed=feed.name,
            source=source.name,
            kv_revision=revision,
            dns_changed=changed,
            weights=weights,
            attempt=activity.info().attempt,
        )

    async def _write_active(self, value: ActiveSource) -> int:
        """Publish ``value`` in the active-source store; store errors sorted for the retry
        policy (an outage retries, a refusal or bad config waits for a person)."""
        config = self._topology.active_source_store
        where = "[active_source]" if self._topology.active_source is not None else "[lease]"
        try:
            store = await open_active_source_store(config)
            try:
                return await store.write(value)
            finally:
                await store.close()
        except StoreUnavailable as exc:
            raise ApplicationError(
                f"switching feed {value.feed!r}: {exc}; will retry",
                type="StoreUnavailable",
            ) from None
        except StoreConfigError as exc:
            raise ApplicationError(
                f"switching feed {value.feed!r}: {exc}; fix {where} in the topology",
                type="StoreConfigError",
                non_retryable=True,
            ) from None
        except StoreError as exc:
            raise ApplicationError(
                f"switching feed {value.feed!r}: {exc}",
                type="StoreError",
                non_retryable=True,
            ) from None
