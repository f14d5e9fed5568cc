"""Create the lab's hosted zone and weighted records in the Route 53 emulator (over HTTP, boto3).

The boto3 pieces the runbooks also need (client, zone lookup, weighted UPSERT, weights) live in
``activities.dns``; this module adds only what a lab needs and a real deployment must not do:
creating the zone and installing the records.
"""

from __future__ import annotations

from typing import Any

from activities.dns import (
    DR_ID,
    PRIMARY_ID,
    find_zone_id,
    route53_client,
    weighted_change,
    weights_in_zone,
)
from domain.topology import FeedConfig, WeightedRecord

__all__ = [
    "DR_ID",
    "PRIMARY_ID",
    "ensure_zone",
    "install_weighted_pair",
    "read_weights",
    "route53_client",
    "weighted_change",
]


def ensure_zone(client: Any, zone: str) -> str:
    """The hosted zone id for ``zone``, creating the zone if needed."""
    existing = find_zone_id(client, zone)
    if existing is not None:
        return existing
    created = client.create_hosted_zone(Name=zone, CallerReference=f"failover-runbooks-{zone}")
    return str(created["HostedZone"]["Id"]).split("/")[-1]


def install_weighted_pair(client: Any, record: WeightedRecord) -> str:
    """Primary weight 100, DR weight 0. Returns the zone id."""
    zone_id = ensure_zone(client, record.zone)
    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Comment": "failover-runbooks lab: primary active",
            "Changes": [
                weighted_change(record, PRIMARY_ID, record.primary_target, 100),
                weighted_change(record, DR_ID, record.dr_target, 0),
            ],
        },
    )
    return zone_id


def read_weights(client: Any, record: WeightedRecord) -> dict[str, int]:
    """Weights by set identifier for the record's name and type."""
    return weights_in_zone(client, ensure_zone(client, record.zone), record)


def install_source_records(client: Any, feed: FeedConfig) -> str:
    """One weighted entry per market-data source, the rank-1 source at weight 100."""
    record = feed.dns
    assert record is not None
    zone_id = ensure_zone(client, record.zone)
    client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Comment": f"failover-runbooks lab: feed {feed.name} on its rank-1 source",
            "Changes": [
                weighted_change(record, s.name, s.dns_target, 100 if s.rank == 1 else 0)
                for s in feed.sources
            ],
        },
    )
    return zone_id
