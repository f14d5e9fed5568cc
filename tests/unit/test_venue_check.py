"""The venues check without a lab: every typed venue error becomes one line a person can act
on, a venue nobody answers for is a failed row (never an exception), and capabilities are read
from the adapter's class without connecting or needing its credentials."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.venue_check import check_venues
from adapters.venues import declared_capabilities
from domain.topology import parse_topology
from domain.venue_check import VenueCheck, VenuesCheck, failure_reason
from domain.venues import (
    AuthRejected,
    RateLimited,
    ReconnectCooldown,
    VenueCapability,
    VenueConfigError,
    VenueUnavailable,
)
from drctl.__main__ import main
from drctl.venues_commands import check_lines
from lab import processes
from lab.topology_gen import LabPorts, lab_topology_toml, venue_key_env, venue_secret_env


def test_each_typed_error_reads_as_one_line() -> None:
    cases = [
        (ReconnectCooldown("gamma", 2.349), "reconnect cooldown: retry after 2.3 s"),
        (
            RateLimited("beta", "open orders: binance banned us (418)", 1.5),
            "rate limited: retry after 1.5 s (open orders: binance banned us (418))",
        ),
        (
            AuthRejected("beta", "signature\n refused"),
            "auth rejected: check KEY_ENV and SECRET_ENV (signature refused)",
        ),
        (VenueConfigError("beta", "variable X unset"), "configuration: variable X unset"),
        (VenueUnavailable("gamma", "connection refused"), "unavailable: connection refused"),
        (TimeoutError(), "no answer within 25 s"),
    ]
    for error, reason in cases:
        assert failure_reason(error, ["KEY_ENV", "SECRET_ENV"], 25.0) == reason


def test_capabilities_come_from_the_adapter_class_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topology = parse_topology(lab_topology_toml(LabPorts()))
    for venue in ("alpha", "beta", "gamma"):
        monkeypatch.delenv(venue_key_env(venue), raising=False)
        monkeypatch.delenv(venue_secret_env(venue), raising=False)
    declared = {v.name: declared_capabilities(v) for v in topology.venues}
    assert declared == {
        "alpha": frozenset({VenueCapability.EPOCH_REFUSAL}),
        "beta": frozenset(),
        "gamma": frozenset({VenueCapability.MASS_STATUS, VenueCapability.MASS_CANCEL}),
    }
    gamma = next(v for v in topology.venues if v.name == "gamma")
    without = gamma.model_copy(update={"mass_cancel": False})
    assert declared_capabilities(without) == frozenset({VenueCapability.MASS_STATUS})


async def test_venues_nobody_answers_for_fail_their_rows_and_the_check_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every port free: nothing listens, so every venue refuses the connection at once.
    free = LabPorts(
        venues=[processes.free_port() for _ in range(3)],
        fix=[processes.free_port() for _ in range(3)],
    )
    topology = parse_topology(lab_topology_toml(free))
    for venue in ("alpha", "beta", "gamma"):
        monkeypatch.setenv(venue_key_env(venue), "key-" + venue)
        monkeypatch.setenv(venue_secret_env(venue), "secret-" + venue)
    monkeypatch.delenv(venue_secret_env("beta"))
    result = await check_venues(topology, "lab", fills_minutes=1, timeout_s=10)
    rows = {v.venue: v for v in result.venues}
    assert not result.ok and [v.venue for v in result.failed] == ["alpha", "beta", "gamma"]
    assert rows["alpha"].error is not None and rows["alpha"].error.startswith("unavailable:")
    assert rows["gamma"].error is not None and rows["gamma"].error.startswith("unavailable:")
    # An unset credential names its variable, and the row still says what the adapter declares.
    assert rows["beta"].error == (
        f"configuration: environment variable {venue_secret_env('beta')} is unset or empty; "
        "set it to the secret"
    )
    assert rows["gamma"].capabilities == [VenueCapability.MASS_CANCEL, VenueCapability.MASS_STATUS]
    assert result.failure_summary().startswith("alpha: unavailable:")
    with pytest.raises(KeyError):
        await check_venues(topology, "no-such-system")


def test_the_table_says_ok_or_failed_per_venue_and_a_verdict() -> None:
    result = VenuesCheck(
        system="lab",
        checked_at=datetime(2026, 1, 5, tzinfo=UTC),
        fills_minutes=15,
        venues=[
            VenueCheck(venue="alpha", adapter="lab", ok=True, session_s=0.0123, open_orders=1200,
                       fills=3, malformed=1, capabilities=[VenueCapability.EPOCH_REFUSAL]),
            VenueCheck(venue="gamma", adapter="fix44", ok=False,
                       error="reconnect cooldown: retry after 2.4 s"),
        ],
    )  # fmt: skip
    assert check_lines(result) == [
        "venue  adapter  check   session  open orders  fills             capabilities   error",
        "alpha  lab      ok      0.012 s  1,200        3 (+1 malformed)  epoch_refusal",
        "gamma  fix44    FAILED  -        -            -                 none           "
        "reconnect cooldown: retry after 2.4 s",
        "1 of 2 venues of lab FAILED (fills counted over the last 15 min)",
    ]


def test_bad_arguments_and_unknown_systems_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "topology.toml"
    config.write_text(lab_topology_toml(LabPorts()))
    check = ["--config", str(config), "venues", "check"]
    assert main([*check, "--system", "lab", "--fills-minutes", "0"]) == 1
    assert capsys.readouterr().err == "drctl: --fills-minutes must be positive, got 0\n"
    assert main([*check, "--system", "mars"]) == 1
    assert "no system named 'mars'" in capsys.readouterr().err
