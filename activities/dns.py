"""DNS activities: point a Route 53 weighted record pair at the active side.

A protected system (or a market-data feed) is reached through a pair of weighted records with the
set identifiers ``primary`` and ``dr``; the active side has weight 100, the other 0. Moving DNS is
one UPSERT batch of both records, so no reader ever sees both sides at 0 or both at 100.

boto3 is blocking, so every call runs on a thread (``asyncio.to_thread``); only the wait for
INSYNC sleeps on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.topology import DnsConfig, Topology, WeightedRecord

PRIMARY_ID = "primary"
DR_ID = "dr"
INSYNC = "INSYNC"
CHANGE_POLL_INTERVAL_S = 0.5

Side = Literal["primary", "dr"]
T = TypeVar("T")

# Route 53 answers these when it is busy, not when the request is wrong; a retry fixes them.
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
    }
)

# Everything a boto3 call can raise that is not a bug in our code.
_BOTO_ERRORS = (
    boto_errors.ClientError,
    boto_errors.ConnectionError,
    boto_errors.HTTPClientError,
    boto_errors.NoCredentialsError,
    boto_errors.PartialCredentialsError,
)

# Temporal's retry policy is the one place retries happen (with backoff visible in the history);
# botocore's own retries would only hide an unreachable endpoint behind a long silent stall.
_CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    connect_timeout=5,
    read_timeout=15,
)


class DnsUpdateRequest(BaseModel):
    system: str
    active: Side
    # When set, the record moved is the feed's ``dns`` pair instead of the system's.
    feed: str | None = None
    wait_timeout_s: float = Field(default=60, gt=0)


class DnsChangeResult(BaseModel):
    record: str
    changed: bool
    change_id: str | None
    status: str
    weights: dict[str, int]


# --- boto3 helpers shared with the lab (lab/route53_setup.py) -----------------------------


def route53_client(dns: DnsConfig, access_key_id: str | None, secret_access_key: str | None) -> Any:
    """A Route 53 client; ``None`` credentials fall back to boto3's default chain."""
    # A fresh session per client: boto3's default session is not safe to share across threads.
    return boto3.session.Session().client(
        "route53",
        endpoint_url=str(dns.endpoint_url) if dns.endpoint_url else None,
        region_name=dns.aws_region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=_CLIENT_CONFIG,
    )


def find_zone_id(client: Any, zone: str) -> str | None:
    """The hosted zone id for ``zone``, or None if there is no such zone."""
    for hosted in client.list_hosted_zones_by_name(DNSName=zone)["HostedZones"]:
        if hosted["Name"] == zone:
            return str(hosted["Id"]).split("/")[-1]
    return None


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


def weights_in_zone(client: Any, zone_id: str, record: WeightedRecord) -> dict[str, int]:
    """Weights by set identifier for the record's name and type."""
    sets = client.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=record.record, StartRecordType=record.record_type
    )["ResourceRecordSets"]
    return {
        str(s["SetIdentifier"]): int(s["Weight"])
        for s in sets
        if s["Name"] == record.record and s["Type"] == record.record_type and "SetIdentifier" in s
    }


def desired_weights(active: Side) -> dict[str, int]:
    return {PRIMARY_ID: 100 if active == "primary" else 0, DR_ID: 100 if active == "dr" else 0}


# --- resolution from the topology ---------------------------------------------------------


def weighted_record(topology: Topology, system: str, feed: str | None = None) -> WeightedRecord:
    """The record pair to move; unknown names are non-retryable (the input or topology is wrong)."""
    try:
        system_config = topology.system(system)
    except KeyError as exc:
        raise ApplicationError(
            f"update_dns: {exc.args[0]}; fix the request or the topology file",
            type="UnknownSystem",
            non_retryable=True,
        ) from None
    if feed is None:
        return system_config.dns
    for feed_config in topology.feeds:
        if feed_config.name == feed:
            if feed_config.dns is None:
                raise ApplicationError(
                    f"update_dns: feed {feed!r} has no weighted DNS record ([feeds.dns]) in "
                    "the topology; add one or leave this feed's DNS alone",
                    type="NoDnsRecord",
                    non_retryable=True,
                )
            return feed_config.dns
    raise ApplicationError(
        f"update_dns: no feed named {feed!r}; known: {[f.name for f in topology.feeds]}; "
        "fix the request or the topology file",
        type="UnknownFeed",
        non_retryable=True,
    )


def _env_credential(field: str, name: str | None) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise ApplicationError(
            f"Route 53 credential variable {name} (topology dns.{field}) is not set in this "
            "worker's environment; set it and restart the worker, then retry",
            type="MissingCredential",
            non_retryable=True,
        )
    return value


def client_from_env(dns: DnsConfig) -> Any:
    """A client with the credentials the topology names, read now (never stored or logged)."""
    return route53_client(
        dns,
        _env_credential("access_key_id_env", dns.access_key_id_env),
        _env_credential("secret_access_key_env", dns.secret_access_key_env),
    )


def _endpoint_label(dns: DnsConfig) -> str:
    # Host and port only: a URL's user-info part could carry a credential.
    if dns.endpoint_url is None:
        return f"the AWS default endpoint ({dns.aws_region})"
    url = dns.endpoint_url
    return f"{url.scheme}://{url.host}:{url.port}"


def route53_error(dns: DnsConfig, what: str, exc: Exception) -> ApplicationError:
    """Sort a boto failure into retryable (endpoint or service trouble) or not (our request)."""
    if isinstance(exc, boto_errors.ConnectionError | boto_errors.HTTPClientError):
        return ApplicationError(
            f"Route 53 endpoint {_endpoint_label(dns)} is unreachable while {what} "
            f"({type(exc).__name__}); will retry",
            type="Route53Unreachable",
        )
    if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
        return ApplicationError(
            "no AWS credentials for Route 53: set dns.access_key_id_env and "
            "dns.secret_access_key_env in the topology, or give the worker a default "
            "credential chain",
            type="MissingCredential",
            non_retryable=True,
        )
    assert isinstance(exc, boto_errors.ClientError)
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", ""))[:300]
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    retryable = code in _RETRYABLE_CODES or status >= 500
    return ApplicationError(
        f"Route 53 at {_endpoint_label(dns)} refused {what}: {code} (HTTP {status}) {message}",
        type=f"Route53{code}",
        non_retryable=not retryable,
    )


async def _call(dns: DnsConfig, what: str, call: Callable[[], T]) -> T:
    try:
        return await asyncio.to_thread(call)
    except _BOTO_ERRORS as exc:
        raise route53_error(dns, what, exc) from None


def current_weights(topology: Topology, system: str, feed: str | None = None) -> dict[str, int]:
    """The record pair's weights now, e.g. ``{"primary": 100, "dr": 0}`` (for drctl and tests).

    Blocking. Raises the same ApplicationErrors as the activity.
    """
    record = weighted_record(topology, system, feed)
    try:
        client = client_from_env(topology.dns)
        zone_id = find_zone_id(client, record.zone)
        if zone_id is None:
            raise _zone_missing(topology.dns, record)
        return weights_in_zone(client, zone_id, record)
    except _BOTO_ERRORS as exc:
        raise route53_error(topology.dns, "reading weights", exc) from None


def _zone_missing(dns: DnsConfig, record: WeightedRecord) -> ApplicationError:
    return ApplicationError(
        f"hosted zone {record.zone} does not exist at {_endpoint_label(dns)}; create it, or fix "
        f"the zone of {record.record} in the topology",
        type="NoSuchHostedZone",
        non_retryable=True,
    )


# --- the activity -------------------------------------------------------------------------


class DnsActivities:
    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    @activity.defn(name="update_dns")
    async def update_dns(self, request: DnsUpdateRequest) -> DnsChangeResult:
        """Make ``request.active`` the 100-weight side and wait until Route 53 is INSYNC.

        Idempotent: if the weights already point at ``active`` nothing is submitted, so a retry
        or a repeat causes no second change. A retry after the INSYNC wait timed out resumes
        waiting on the change the earlier attempt submitted (kept in the heartbeat details)
        rather than reporting the half-propagated change as done.
        """
        record = weighted_record(self._topology, request.system, request.feed)
        return await move_weights(
            self._topology.dns,
            record,
            targets={PRIMARY_ID: record.primary_target, DR_ID: record.dr_target},
            wanted=desired_weights(request.active),
            comment=f"failover-runbooks: {request.active} active",
            wait_timeout_s=request.wait_timeout_s,
        )


async def move_weights(
    dns: DnsConfig,
    record: WeightedRecord,
    targets: dict[str, str],
    wanted: dict[str, int],
    comment: str,
    wait_timeout_s: float,
) -> DnsChangeResult:
    """Give ``record``'s weighted entries (set identifier -> target) the ``wanted`` weights in
    one batch and wait until Route 53 is INSYNC. Runs inside an activity: the promotion's DNS
    step and a feed's source switch both move DNS through it.

    Idempotent: if the weights already are ``wanted`` nothing is submitted, so a retry or a
    repeat causes no second change. A retry after the INSYNC wait timed out resumes waiting on
    the change the earlier attempt submitted (kept in the heartbeat details) rather than
    reporting the half-propagated change as done.
    """
    client = await asyncio.to_thread(client_from_env, dns)

    zone_id = await _call(dns, "looking up the zone", lambda: find_zone_id(client, record.zone))
    if zone_id is None:
        raise _zone_missing(dns, record)

    weights = await _call(dns, "reading weights", lambda: weights_in_zone(client, zone_id, record))
    earlier = _change_of_earlier_attempt()
    if weights != wanted:
        change_id, status = await _call(
            dns,
            f"changing {record.record}",
            lambda: _submit(client, zone_id, record, targets, wanted, comment),
        )
        # Kept in the heartbeat details so that a retry waits for this change, not a new one.
        activity.heartbeat(change_id)
        activity.logger.info("DNS %s %s submitted as change %s", record.record, wanted, change_id)
    elif earlier is not None:
        change_id = earlier
        status = await _call(dns, f"checking change {change_id}", _change_status(client, earlier))
    else:
        activity.logger.info("DNS %s already has weights %s", record.record, wanted)
        return DnsChangeResult(
            record=record.record, changed=False, change_id=None, status=INSYNC, weights=weights
        )
    await _wait_insync(dns, client, change_id, status, wait_timeout_s)
    weights = await _call(dns, "reading weights", lambda: weights_in_zone(client, zone_id, record))
    return DnsChangeResult(
        record=record.record,
        changed=True,
        change_id=change_id,
        status=INSYNC,
        weights=weights,
    )


def _change_of_earlier_attempt() -> str | None:
    details = activity.info().heartbeat_details
    if details and isinstance(details[-1], str):
        return details[-1]
    return None


def _submit(
    client: Any,
    zone_id: str,
    record: WeightedRecord,
    targets: dict[str, str],
    wanted: dict[str, int],
    comment: str,
) -> tuple[str, str]:
    info = client.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={
            "Comment": comment,
            "Changes": [
                weighted_change(record, identifier, targets[identifier], weight)
                for identifier, weight in wanted.items()
            ],
        },
    )["ChangeInfo"]
    return str(info["Id"]).split("/")[-1], str(info["Status"])


async def _wait_insync(
    dns: DnsConfig, client: Any, change_id: str, status: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while status != INSYNC:
        if time.monotonic() >= deadline:
            raise ApplicationError(
                f"Route 53 change {change_id} still {status} after {timeout_s:g} s; the weights "
                "are submitted, a retry waits for this change again",
                type="DnsChangeNotInSync",
            )
        await asyncio.sleep(CHANGE_POLL_INTERVAL_S)
        activity.heartbeat(change_id)
        status = await _call(
            dns, f"waiting for change {change_id}", _change_status(client, change_id)
        )


def _change_status(client: Any, change_id: str) -> Callable[[], str]:
    return lambda: str(client.get_change(Id=change_id)["ChangeInfo"]["Status"])
