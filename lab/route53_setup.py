"""Create the lab's hosted zone and weighted records in the Route 53 emulator (over HTTP, boto3)."""

from __future__ import annotations

from typing import Any

import boto3

from domain.topology import DnsConfig, WeightedRecord

PRIMARY_ID = "primary"
DR_ID = "dr"


def route53_client(dns: DnsConfig, access_key_id: str, secret_access_key: str) -> Any:
    return boto3.client(
        "route53",
        endpoint_url=str(dns.endpoint_url) if dns.endpoint_url else None,
        region_name=dns.aws_region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
    )


def ensure_zone(client: Any, zone: str) -> str:
    """The hosted zone id for ``zone``, creating the zone if needed."""
    for hosted in client.list_hosted_zones_by_name(DNSName=zone)["HostedZones"]:
        if hosted["Name"] == zone:
            return str(hosted["Id"]).split("/")[-1]
    created = client.create_hosted_zone(Name=zone, CallerReference=f"failover-runbooks-{zone}")
    return str(created["HostedZone"]["Id"]).split("/")[-1]


def weighted_change(
    record: WeightedRecord, identifier: str, target: str, weight: int
) -> dict[str, Any]:
    return {
        "Action": "UPSERT",
        "ResourceRecordSet": {
            "Name": record.record,
            "Type": record.record_type,
            "SetIdentifier": identifier,
            "Weight": weight,
            "TTL": record.ttl_s,
            "ResourceRecords": [{"Value": target}],
        },
    }


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
    zone_id = ensure_zone(client, record.zone)
    sets = client.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=record.record, StartRecordType=record.record_type
    )["ResourceRecordSets"]
    return {
        str(s["SetIdentifier"]): int(s["Weight"])
        for s in sets
        if s["Name"] == record.record and s["Type"] == record.record_type and "SetIdentifier" in s
    }
