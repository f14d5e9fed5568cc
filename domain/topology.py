"""The topology: every system, venue, store and threshold the runbooks act on.

One pydantic model, loaded from TOML. It is the single home of every configuration value and its
default; workflows and activities read thresholds from here, never from literals.

Credentials never appear in this file's values: the topology names the environment variable that
holds a secret (``*_env`` fields) and the activity that needs it resolves it at call time.
"""

from __future__ import annotations

import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_TOPOLOGY_PATH = Path(".lab/topology.toml")

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
EnvVarName = Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")]
Seconds = Annotated[float, Field(gt=0)]
NatsUrl = Annotated[str, Field(pattern=r"^(nats|tls)://[^\s/]+$")]
DnsName = Annotated[str, Field(pattern=r"^([A-Za-z0-9_-]+\.)+$")]


class TopologyError(ValueError):
    """The topology file is missing, unreadable or invalid. The message names file and field."""


class _Model(BaseModel):
    # Unknown keys are errors: a misspelt threshold must not silently fall back to its default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemporalConfig(_Model):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    ui_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8233")
    api_key_env: EnvVarName | None = None


class LeaseConfig(_Model):
    """The fencing store. ``ttl_s`` bounds how long an isolated primary can keep trading."""

    backend: Literal["nats", "consul"] = "nats"
    address: str = "nats://127.0.0.1:4222"
    bucket: Name = "dr-leases"
    ttl_s: Seconds = 3.0
    token_env: EnvVarName | None = None

    @property
    def renew_interval_s(self) -> float:
        # Three renewal chances per TTL: one lost renewal is a blip, not a self-fence.
        return self.ttl_s / 3


class ReplicationConfig(_Model):
    """The position stream. System ``S`` publishes on ``<subject_prefix>.S.<order|fill|position>``
    and the stream captures ``<subject_prefix>.>``."""

    nats_url: NatsUrl = "nats://127.0.0.1:4222"
    stream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "DR_BOOK"
    subject_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = "book"
    sync_timeout_s: Seconds = 30.0


class HealthConfig(_Model):
    """Thresholds for the three-stage probe and the monitor's state machine."""

    interval_s: Seconds = 1.0
    latency_threshold_ms: Annotated[float, Field(gt=0)] = 250.0
    freshness_threshold_s: Seconds = 2.0
    confirmation_count: Annotated[int, Field(ge=1)] = 3
    recovery_count: Annotated[int, Field(ge=1)] = 5
    cooldown_s: Seconds = 300.0

    @property
    def detection_window_s(self) -> float:
        return self.interval_s * self.confirmation_count


class DnsConfig(_Model):
    """Route 53 access. ``endpoint_url`` points boto3 at an emulator (the lab's moto server)."""

    endpoint_url: AnyHttpUrl | None = None
    aws_region: str = "us-east-1"
    access_key_id_env: EnvVarName | None = None
    secret_access_key_env: EnvVarName | None = None


class WeightedRecord(_Model):
    """A Route 53 weighted record pair: the active side has weight 100, the other 0."""

    zone: DnsName
    record: DnsName
    record_type: Literal["A", "AAAA", "CNAME"] = "CNAME"
    primary_target: str
    dr_target: str
    ttl_s: Annotated[int, Field(ge=1, le=86400)] = 30

    @model_validator(mode="after")
    def _record_inside_zone(self) -> Self:
        if not self.record.endswith(self.zone):
            raise ValueError(f"record {self.record!r} is not inside zone {self.zone!r}")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class BlackoutWindow(_Model):
    """A time no drill may start, such as market hours: ``start`` to ``end`` (HH:MM, local to
    the system's drill timezone) on each of ``days``. A window may not cross midnight; write
    an overnight window as two."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS[:5]), min_length=1)
    start: time
    end: time
    reason: Annotated[str, Field(max_length=200)] = ""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError(
                f"blackout end {self.end:%H:%M} is not after start {self.start:%H:%M}; "
                "a window that crosses midnight is written as two windows"
            )
        return self

    def describe(self) -> str:
        days = ",".join(self.days)
        why = f" ({self.reason})" if self.reason else ""
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M}{why}"


class DrillConfig(_Model):
    """When drills may run. ``catchup_window_s``: how late a scheduled drill may still start
    after a Temporal outage; later than that it is skipped, never fired stale."""

    timezone: str = "UTC"
    blackouts: list[BlackoutWindow] = Field(default_factory=list)
    catchup_window_s: Seconds = 300.0

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {name!r} (use an IANA name such as Europe/London)"
            ) from None
        return name


class SystemConfig(_Model):
    """A protected trading system: one primary OMS, one warm DR OMS."""

    name: Name
    production: bool = False
    primary_region: Name = "primary"
    dr_region: Name = "dr"
    primary_oms_url: AnyHttpUrl
    dr_oms_url: AnyHttpUrl
    venues: list[Name] = Field(min_length=1)
    dns: WeightedRecord
    discrepancy_tolerance_notional: Annotated[float, Field(ge=0)] = 0.0
    # The instruments this system trades. When listed, a venue report naming any other symbol
    # is an invalid report for a person to judge, never a position booked unseen.
    symbols: list[Annotated[str, Field(min_length=1, max_length=64)]] = []
    fill_lookback_margin_s: Seconds = 5.0
    # How long a planned promotion waits for its second operator, and a discrepancy gate for
    # a decision, before giving up (approval) or paging and holding reduce-only (decision).
    approval_timeout_s: Seconds = 3600.0
    decision_timeout_s: Seconds = 900.0
    drill: DrillConfig = DrillConfig()

    @model_validator(mode="after")
    def _regions_differ(self) -> Self:
        if self.primary_region == self.dr_region:
            raise ValueError("primary_region and dr_region must differ")
        return self


class VenueConfig(_Model):
    name: Name
    kind: Literal["equities", "futures", "options", "fx", "crypto"] = "equities"
    url: AnyHttpUrl
    api_key_env: EnvVarName
    reconnect_cooldown_s: Annotated[float, Field(ge=0)] = 3.0


class VantagePoint(_Model):
    """A place probes run from. Its worker polls the task queue ``vantage-<name>``.

    ``http_proxy`` routes its probes through a proxy: its own network path (the lab gives each
    vantage point one, so partitioning a vantage point is a real network fault).
    """

    name: Name
    region: Name
    http_proxy: AnyHttpUrl | None = None

    @property
    def task_queue(self) -> str:
        return f"vantage-{self.name}"


class MarketDataSource(_Model):
    name: Name
    url: AnyHttpUrl
    rank: Annotated[int, Field(ge=1)]
    dns_target: str


class FeedConfig(_Model):
    """Ranked market-data sources; rank 1 is the preferred one.

    ``dns`` names the feed's weighted record; failover keeps one weighted entry per source (set
    identifier = source name, target = its ``dns_target``), weight 100 on the active one. Its
    ``primary_target`` / ``dr_target`` are the rank-1 and rank-2 targets.
    ``recovery_window_s``: how long a better-ranked source must stay healthy before the feed
    returns to it.
    """

    name: Name
    dns: WeightedRecord | None = None
    sources: list[MarketDataSource] = Field(min_length=2)
    recovery_window_s: Seconds = 30.0

    @field_validator("sources")
    @classmethod
    def _ranks_unique(cls, sources: list[MarketDataSource]) -> list[MarketDataSource]:
        ranks = [s.rank for s in sources]
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"source ranks must be unique, got {ranks}")
        return sorted(sources, key=lambda s: s.rank)


class AlertWebhook(_Model):
    name: Name
    url_env: EnvVarName


class LabControlConfig(_Model):
    """The embedded lab's control API: how a drill injects a real fault. Absent elsewhere, where
    a drill runs a planned switchover instead."""

    control_url: AnyHttpUrl
    api_key_env: EnvVarName


class Topology(_Model):
    temporal: TemporalConfig = TemporalConfig()
    lease: LeaseConfig = LeaseConfig()
    replication: ReplicationConfig = ReplicationConfig()
    health: HealthConfig = HealthConfig()
    dns: DnsConfig = DnsConfig()
    systems: list[SystemConfig] = Field(min_length=1)
    venues: list[VenueConfig] = Field(min_length=1)
    vantage_points: list[VantagePoint] = Field(default_factory=list)
    feeds: list[FeedConfig] = Field(default_factory=list)
    alerts: list[AlertWebhook] = Field(default_factory=list)
    lab: LabControlConfig | None = None

    @model_validator(mode="after")
    def _names_resolve(self) -> Self:
        _require_unique("systems", [s.name for s in self.systems])
        _require_unique("venues", [v.name for v in self.venues])
        _require_unique("vantage_points", [v.name for v in self.vantage_points])
        _require_unique("feeds", [f.name for f in self.feeds])
        known = {v.name for v in self.venues}
        for i, system in enumerate(self.systems):
            unknown = [v for v in system.venues if v not in known]
            if unknown:
                raise ValueError(
                    f"systems[{i}].venues names unknown venue(s) {unknown}; "
                    f"defined venues are {sorted(known)}"
                )
        return self

    @model_validator(mode="after")
    def _timing_invariants(self) -> Self:
        check_timing_invariants(self.health, self.lease)
        return self

    def system(self, name: str) -> SystemConfig:
        for system in self.systems:
            if system.name == name:
                return system
        raise KeyError(f"no system named {name!r}; known: {[s.name for s in self.systems]}")

    def venue(self, name: str) -> VenueConfig:
        for venue in self.venues:
            if venue.name == name:
                return venue
        raise KeyError(f"no venue named {name!r}; known: {[v.name for v in self.venues]}")

    def venues_of(self, system: SystemConfig) -> list[VenueConfig]:
        return [self.venue(name) for name in system.venues]


def _require_unique(field: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{field}: duplicate name(s) {duplicates}")


def check_timing_invariants(health: HealthConfig, lease: LeaseConfig) -> None:
    """Reject timings that make fencing or anti-flapping unsound.

    1. The probe's latency budget must fit inside one probe interval, or probes overlap.
    2. The detection window must be at least the lease TTL: a primary cut off from the lease
       store stops trading by itself only after the TTL, so a promotion confirmed sooner than
       that could overlap an isolated primary that still trades.
    3. The cooldown must exceed detection plus lease TTL, or a second automatic failover could
       start before the first one's fencing has even taken effect.
    """
    latency_s = health.latency_threshold_ms / 1000
    if latency_s >= health.interval_s:
        raise ValueError(
            f"health.latency_threshold_ms ({health.latency_threshold_ms:g} ms) must be shorter "
            f"than health.interval_s ({health.interval_s:g} s): a probe must finish within "
            "its interval"
        )
    window = health.detection_window_s
    if window < lease.ttl_s:
        raise ValueError(
            f"health.interval_s x health.confirmation_count ({window:g} s) is shorter than "
            f"lease.ttl_s ({lease.ttl_s:g} s): an isolated primary could still trade for "
            f"{lease.ttl_s - window:g} s after DR is promoted; lower lease.ttl_s or raise "
            "the detection window"
        )
    if health.cooldown_s <= window + lease.ttl_s:
        raise ValueError(
            f"health.cooldown_s ({health.cooldown_s:g} s) must exceed the detection window "
            f"plus lease.ttl_s ({window + lease.ttl_s:g} s), or failovers could flap"
        )


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse TOML text into a Topology; errors name ``source`` and the offending field."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Topology.model_validate(raw)
    except ValidationError as exc:
        raise TopologyError(f"{source}: {describe_validation_error(exc)}") from None


def load_topology(path: Path) -> Topology:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TopologyError(
            f"{path}: no such topology file (run `drctl lab up`, or pass --config / set "
            "DRCTL_CONFIG)"
        ) from None
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TopologyError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None
    return parse_topology(text, str(path))


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each as ``dotted.path[index].field: message``."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = _dotted(error["loc"])
        message = re.sub(r"^Value error, ", "", error["msg"])
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
