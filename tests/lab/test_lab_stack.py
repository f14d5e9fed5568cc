"""The lab as a user sees it after `drctl lab up`: everything healthy, trading, replicating."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from domain.book import BookSnapshot, epoch_of_client_order_id
from lab.processes import wait_until
from lab.stack import LabPaths, read_secrets
from lab.topology_gen import venue_key_env
from tests.lab.conftest import LabRun, route53


def test_every_component_is_healthy_and_dr_is_within_1s_of_the_primary(lab: LabRun) -> None:
    result = lab.drctl("status", "--json", "--wait", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)  # the settled status itself, not a later reading
    assert status["healthy"] is True
    names = {c["name"] for c in status["components"]}
    assert names == {
        "temporal", "nats", "route53", "venue-alpha", "venue-beta", "venue-gamma",
        "md-a", "md-b", "md-c", "oms-primary", "oms-dr", "worker", "alerts",
        "proxy-dr", "proxy-obs-a", "proxy-obs-b", "md-consumer", "control",
        "postgres-primary", "postgres-dr",
    }  # fmt: skip
    assert status["replication"]["in_sync_within_1s"] is True
    assert status["temporal_ui"].startswith("http://127.0.0.1:")


def test_the_primary_trades_and_every_order_carries_its_epoch(lab: LabRun) -> None:
    assert wait_until(lambda: len(lab.get("oms-primary", "/book")["open_orders"]) >= 3, 30)
    book = BookSnapshot.model_validate(lab.get("oms-primary", "/book"))
    assert {o.epoch for o in book.open_orders} == {1}
    assert all(epoch_of_client_order_id(o.client_order_id) == 1 for o in book.open_orders)
    health = lab.get("oms-primary", "/health")
    assert (health["role"], health["trading_state"], health["epoch"]) == ("active", "trading", 1)
    dr = lab.get("oms-dr", "/health")
    assert (dr["role"], dr["trading_state"]) == ("standby", "standby")


def test_venues_hold_only_orders_of_the_current_epoch(lab: LabRun) -> None:
    key = read_secrets(LabPaths(lab.root))[venue_key_env("alpha")]
    orders = httpx.get(
        lab.url("venue-alpha") + "/orders/open", headers={"X-Api-Key": key}, timeout=2
    ).json()["orders"]
    assert all(o["client_order_id"].startswith(f"E{o['epoch']}-") for o in orders)


def test_the_dr_book_equals_the_primary_book_after_many_events(lab: LabRun) -> None:
    assert wait_until(lambda: lab.get("oms-primary", "/health")["last_published_seq"] >= 150, 90)
    deadline = time.monotonic() + 30
    compared = False
    while time.monotonic() < deadline and not compared:
        primary = BookSnapshot.model_validate(lab.get("oms-primary", "/book"))
        if primary.unpublished_events:
            continue
        # DR applies within milliseconds; take the first DR view at the same sequence.
        target = primary.watermark.seq
        if not wait_until(lambda t=target: dr_seq(lab) >= t, 5):
            continue
        dr = BookSnapshot.model_validate(lab.get("oms-dr", "/book"))
        if dr.watermark.seq != primary.watermark.seq:
            continue  # the primary published again in between: try another point
        assert dr.open_orders == primary.open_orders
        assert dr.positions == primary.positions
        compared = True
    assert compared, "never caught primary and DR at the same sequence"
    assert lab.get("oms-dr", "/health")["position_mismatches"] == 0


def test_route53_has_the_weighted_records_primary_100_dr_0(lab: LabRun) -> None:
    client = route53(lab)
    zones = client.list_hosted_zones_by_name(DNSName="lab.example.")["HostedZones"]
    zone_id = zones[0]["Id"]
    records = client.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    weights = {
        (r["Name"], r["SetIdentifier"]): r["Weight"] for r in records if "SetIdentifier" in r
    }
    assert weights[("oms.lab.example.", "primary")] == 100
    assert weights[("oms.lab.example.", "dr")] == 0
    # The feed has one weighted entry per market-data source, its rank-1 source active.
    assert weights[("md.lab.example.", "md-a")] == 100
    assert weights[("md.lab.example.", "md-b")] == weights[("md.lab.example.", "md-c")] == 0


def test_temporal_has_the_review_search_attributes(lab: LabRun) -> None:
    async def custom_attributes() -> dict[str, int]:
        client = await Client.connect(f"127.0.0.1:{lab.state.ports.temporal}")
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace="default")
        )
        return dict(response.custom_attributes)

    attributes = asyncio.run(custom_attributes())
    assert {"DrSystem", "DrKind", "DrOutcome"} <= set(attributes)


def test_the_temporal_ui_answers(lab: LabRun) -> None:
    response = httpx.get(f"http://127.0.0.1:{lab.state.ports.temporal_ui}/", timeout=5)
    assert response.status_code == 200
    assert "<html" in response.text.lower()


def dr_seq(lab: LabRun) -> int:
    return int(lab.get("oms-dr", "/book")["watermark"]["seq"])
