"""Switching a feed's active market-data source: the KV key consumers watch, and DNS.

Idempotent: writing the same source again changes nothing a consumer would notice, and DNS is
changed only when its weights differ from the wanted ones.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import nats
import nats.errors
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.dns import (
    INSYNC,
    client_from_env,
    find_zone_id,
    route53_error,
    weighted_change,
    weights_in_zone,
)
from domain.feeds import ActiveSource, active_source_key
from domain.topology import FeedConfig, Topology


class FeedSwitchRequest(BaseModel):
    feed: str
    source: str
    reason: str
    wait_timeout_s: float = 60.0


class FeedSwitchResult(BaseModel):
    feed: str
    source: str
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
        revision = await self._write_active(feed.name, value)
        changed: bool | None = None
        weights: dict[str, int] = {}
        if feed.dns is not None:
            changed, weights = await asyncio.to_thread(
                self._set_weights, feed, source.name, request.wait_timeout_s
            )
        return FeedSwitchResult(
            feed=feed.name,
            source=source.name,
            kv_revision=revision,
            dns_changed=changed,
            weights=weights,
            attempt=activity.info().attempt,
        )

    async def _write_active(self, feed: str, value: ActiveSource) -> int:
        lease = self._topology.lease
        if lease.backend != "nats":
            raise ApplicationError(
                "switching a feed needs the NATS KV store; the Consul variant is not built yet",
                non_retryable=True,
            )
        try:
            nc = await nats.connect(lease.address, connect_timeout=3, max_reconnect_attempts=1)
        except (nats.errors.Error, OSError) as exc:
            raise ApplicationError(
                f"KV store at {lease.address} unreachable: {type(exc).__name__}"
            ) from None
        try:
            kv = await nc.jetstream(timeout=3).create_key_value(bucket=lease.bucket, history=16)
            return int(await kv.put(active_source_key(feed), value.model_dump_json().encode()))
        finally:
            await nc.close()

    def _set_weights(
        self, feed: FeedConfig, active: str, wait_timeout_s: float
    ) -> tuple[bool, dict[str, int]]:
        record = feed.dns
        assert record is not None
        dns = self._topology.dns
        client = client_from_env(dns)
        wanted = {s.name: 100 if s.name == active else 0 for s in feed.sources}
        try:
            zone_id = find_zone_id(client, record.zone)
            if zone_id is None:
                raise ApplicationError(
                    f"hosted zone {record.zone!r} not found for feed {feed.name!r}",
                    non_retryable=True,
                )
            if weights_in_zone(client, zone_id, record) == wanted:
                return False, wanted
            info = client.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={
                    "Comment": f"failover-runbooks: feed {feed.name} on {active}",
                    "Changes": [
                        weighted_change(record, s.name, s.dns_target, wanted[s.name])
                        for s in feed.sources
                    ],
                },
            )["ChangeInfo"]
            deadline = time.monotonic() + wait_timeout_s
            status = str(info["Status"])
            while status != INSYNC:
                if time.monotonic() >= deadline:
                    raise ApplicationError(f"DNS change {info['Id']} not INSYNC in time")
                time.sleep(0.5)
                status = str(client.get_change(Id=info["Id"])["ChangeInfo"]["Status"])
        except ApplicationError:
            raise
        except Exception as exc:
            raise route53_error(dns, f"switching feed {feed.name}", exc) from None
        return True, wanted
