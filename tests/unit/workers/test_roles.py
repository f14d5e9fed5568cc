"""Which queues a role polls and what it registers there."""

from __future__ import annotations

import pytest
from temporalio import activity

from domain.topology import parse_topology
from lab.topology_gen import LabPorts, lab_topology_toml
from workers.roles import Queues, queues_of, role_name, vantage_activities

TOPOLOGY = parse_topology(lab_topology_toml(LabPorts()))


def test_both_spellings_of_a_vantage_role_name_the_same_queue() -> None:
    assert role_name(["vantage", "dr"]) == role_name(["vantage-dr"]) == "vantage-dr"
    assert queues_of(TOPOLOGY, "vantage-dr") == Queues(regions=[], vantages=["vantage-dr"])


def test_a_vantage_role_needs_no_lease_store_and_a_region_role_does() -> None:
    assert not queues_of(TOPOLOGY, "vantage-dr").needs_lease_store
    assert queues_of(TOPOLOGY, "region-dr").needs_lease_store
    assert queues_of(TOPOLOGY, "region-primary") == Queues(regions=["region-primary"], vantages=[])


def test_all_is_every_region_and_every_vantage_point() -> None:
    queues = queues_of(TOPOLOGY, "all")
    assert queues.regions == ["region-dr", "region-primary"]
    assert queues.vantages == sorted(v.task_queue for v in TOPOLOGY.vantage_points)


def test_an_unknown_role_is_refused_with_the_roles_there_are() -> None:
    with pytest.raises(ValueError, match="unknown role 'vantage-mars'") as refused:
        queues_of(TOPOLOGY, "vantage-mars")
    assert "region-dr" in str(refused.value) and "vantage dr" in str(refused.value)


def test_a_vantage_point_runs_only_the_probe_watch() -> None:
    names = [activity._Definition.must_from_callable(a).name for a in vantage_activities()]
    assert names == ["watch_target"]
