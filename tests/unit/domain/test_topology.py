"""Topology validation: every bad file gets one clear message naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from domain.topology import TopologyError, load_topology, parse_topology
from lab.topology_gen import LabPorts, lab_topology_toml

GOOD = lab_topology_toml(LabPorts())


def test_the_lab_topology_loads() -> None:
    topology = parse_topology(GOOD)
    assert topology.system("lab").venues == ["alpha", "beta", "gamma"]
    assert topology.health.detection_window_s == 3.0
    assert [s.name for s in topology.feeds[0].sources] == ["md-a", "md-b", "md-c"]


def test_a_missing_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"no such topology file \(run `drctl lab up`"):
        load_topology(tmp_path / "absent.toml")


def test_broken_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "topology.toml"
    path.write_text("[lease\nttl_s = 3\n")
    with pytest.raises(TopologyError, match=rf"^{path}: not valid TOML: .*line 1"):
        load_topology(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ttl_s = 3.0", "ttl_s = -1", r"lease\.ttl_s: Input should be greater than 0"),
        ("ttl_s = 3.0", "ttl_seconds = 3.0", r"lease\.ttl_seconds: Extra inputs are not permitted"),
        (
            'primary_oms_url = "http://127.0.0.1:18101"',
            'primary_oms_url = "not a url"',
            r"systems\[0\]\.primary_oms_url: Input should be a valid URL",
        ),
        (
            'venues = ["alpha", "beta", "gamma"]',
            'venues = ["alpha", "delta"]',
            r"systems\[0\]\.venues names unknown venue\(s\) \['delta'\]",
        ),
        (
            'api_key_env = "LAB_VENUE_ALPHA_API_KEY"',
            'api_key_env = "sk-live-123"',
            r"venues\[0\]\.api_key_env: String should match pattern",
        ),
        ('record = "oms.lab.example."', 'record = "oms.other.example."', r"is not inside zone"),
        ("rank = 2", "rank = 1", r"feeds\[0\]\.sources: .*source ranks must be unique"),
        ('dr_region = "dr"', 'dr_region = "primary"', r"primary_region and dr_region must differ"),
    ],
)
def test_an_invalid_field_is_named(old: str, new: str, message: str) -> None:
    assert old in GOOD, old
    with pytest.raises(TopologyError, match=rf"^lab\.toml: .*{message}"):
        parse_topology(GOOD.replace(old, new, 1), "lab.toml")


def test_a_detection_window_shorter_than_the_lease_ttl_is_refused() -> None:
    bad = GOOD.replace("ttl_s = 3.0", "ttl_s = 10.0", 1)
    with pytest.raises(TopologyError) as caught:
        parse_topology(bad, "lab.toml")
    assert str(caught.value) == (
        "lab.toml: health.interval_s x health.confirmation_count (3 s) is shorter than "
        "lease.ttl_s (10 s): an isolated primary could still trade for 7 s after DR is promoted; "
        "lower lease.ttl_s or raise the detection window"
    )


def test_a_cooldown_shorter_than_detection_plus_ttl_is_refused() -> None:
    bad = GOOD.replace("cooldown_s = 60.0", "cooldown_s = 5.0")
    with pytest.raises(TopologyError, match=r"health\.cooldown_s \(5 s\) must exceed .* \(6 s\)"):
        parse_topology(bad, "lab.toml")


def test_a_latency_threshold_longer_than_the_interval_is_refused() -> None:
    bad = GOOD.replace("latency_threshold_ms = 250", "latency_threshold_ms = 1500")
    with pytest.raises(TopologyError, match=r"health\.latency_threshold_ms \(1500 ms\) must be"):
        parse_topology(bad, "lab.toml")


def test_no_secret_values_in_the_lab_topology() -> None:
    topology = parse_topology(GOOD)
    names = [
        getattr(v, field)
        for v in topology.venues
        for field in type(v).model_fields
        if field.endswith("_env") and getattr(v, field)
    ] + [a.url_env for a in topology.alerts]
    assert all(name.isupper() for name in names)
