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
from typing import Annotated, ClassVar, Literal, NamedTuple, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
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
# A host name or an IP address (IPv6 in brackets), as a connection string names it.
HostName = Annotated[
    str, Field(pattern=r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])$")
]


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


class ConsulAddress(NamedTuple):
    scheme: str
    host: str
    port: int


# Consul's own defaults for its HTTP and HTTPS listeners.
_CONSUL_DEFAULT_PORTS = {"http": 8500, "https": 8501}
_CONSUL_SCHEMES = {"http": "http", "https": "https", "consul": "http"}


def parse_consul_address(address: str) -> ConsulAddress:
    """``http://host:port``, ``https://host:port`` or ``consul://host:port`` (plain HTTP)."""
    expected = "expected http://host:port, https://host:port or consul://host:port"
    parts = urlsplit(address.strip())
    scheme = _CONSUL_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"{address!r} is not a Consul HTTP address: {expected}")
    if parts.username is not None or parts.password is not None:
        # Do not echo the address: the userinfo may be a secret.
        raise ValueError(
            "a Consul address must not carry credentials; name the environment variable that "
            "holds the ACL token in token_env"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{address!r} has a path, query or fragment; {expected} (key_prefix sets the "
            "key prefix)"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{address!r} has an invalid port; {expected}") from None
    # The client builds its URL from "host:port", so an IPv6 literal needs its brackets back.
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ConsulAddress(scheme, host, port if port is not None else _CONSUL_DEFAULT_PORTS[scheme])


class NatsStoreConfig(_Model):
    """A store on NATS JetStream KV: ``url`` of the server, ``bucket`` holding the keys."""

    backend: Literal["nats"] = "nats"
    url: NatsUrl = "nats://127.0.0.1:4222"
    bucket: Name = "dr-leases"
    token_env: EnvVarName | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_spelling(cls, raw: object) -> object:
        # Before stores had one config model per backend, ``address`` held the NATS URL. Old
        # files keep loading; new ones write ``url``.
        if isinstance(raw, dict) and "address" in raw:
            if "url" in raw:
                raise ValueError("give the NATS server as url only (address is its old spelling)")
            raw = {("url" if k == "address" else k): v for k, v in raw.items()}
        return raw


class ConsulStoreConfig(_Model):
    """A store on Consul KV: keys live under ``key_prefix``; ``token_env`` names the variable
    holding the ACL token."""

    backend: Literal["consul"]
    address: str
    key_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")] = "dr-leases"
    token_env: EnvVarName | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_spelling(cls, raw: object) -> object:
        # Before stores had one config model per backend, ``bucket`` was Consul's key prefix.
        if isinstance(raw, dict) and "bucket" in raw:
            if "key_prefix" in raw:
                raise ValueError("give the key prefix as key_prefix only (bucket is its old name)")
            raw = {("key_prefix" if k == "bucket" else k): v for k, v in raw.items()}
        return raw

    @field_validator("address")
    @classmethod
    def _consul_address(cls, address: str) -> str:
        parse_consul_address(address)
        return address


STORE_BACKENDS = ("nats", "consul")


def _store_backend(raw: object) -> str:
    # ``backend`` may be left out: NATS is the default store.
    if isinstance(raw, dict):
        return str(raw.get("backend", "nats"))
    return str(getattr(raw, "backend", "nats"))


_STORE_DISCRIMINATOR = Discriminator(
    _store_backend,
    custom_error_type="unknown_backend",
    custom_error_message=f"must be one of {', '.join(STORE_BACKENDS)}",
)

StoreConfig = Annotated[
    Annotated[NatsStoreConfig, Tag("nats")] | Annotated[ConsulStoreConfig, Tag("consul")],
    _STORE_DISCRIMINATOR,
]


class _LeaseTiming(_Model):
    """``ttl_s`` bounds how long an isolated primary can keep trading."""

    ttl_s: Seconds = 3.0

    @property
    def renew_interval_s(self) -> float:
        # Three renewal chances per TTL: one lost renewal is a blip, not a self-fence.
        return self.ttl_s / 3


class NatsLeaseConfig(_LeaseTiming, NatsStoreConfig):
    """The fencing lease on NATS JetStream KV."""


class ConsulLeaseConfig(_LeaseTiming, ConsulStoreConfig):
    """The fencing lease on Consul KV."""


# The fencing store: its timing beside the settings of its backend, in one [lease] table.
LeaseConfig = Annotated[
    Annotated[NatsLeaseConfig, Tag("nats")] | Annotated[ConsulLeaseConfig, Tag("consul")],
    _STORE_DISCRIMINATOR,
]


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
    # DR readiness, measured from the standby side by the SystemMonitor: stream events stored
    # but not applied there, and the age of the oldest of them (the database, where there is
    # one, is judged against its max_lag_on_failover_*). Beyond a bound for dr_ready_intervals
    # checks in a row (one per interval_s): "DR not ready", and a promotion the monitor starts
    # then stops at its gate.
    dr_ready_max_stream_lag_events: Annotated[int, Field(ge=0)] = 1000
    dr_ready_max_stream_lag_s: Seconds = 5.0
    dr_ready_intervals: Annotated[int, Field(ge=1)] = 3

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


class PostgresReseedConfig(_Model):
    """Where the failback may re-seed a former primary by itself. pg_rewind and pg_basebackup
    write the server's data directory, so they run on that server's host: the region's worker
    (queue ``region-<region>``) must run there, as root or as the directory's owner. A region
    not listed here is re-seeded by hand; the failback stops and says how."""

    # region -> the data directory of that site's server, on that region's worker host.
    data_dirs: dict[Name, Path]
    # PostgreSQL's bin directory (pg_ctl, pg_rewind, pg_basebackup); PATH when absent.
    bin_dir: Path | None = None
    # Each site streams through the slot <slot_prefix><region> on the other (created if absent).
    slot_prefix: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")] = "standby_"


class PostgresDatabaseConfig(_Model):
    """The system's OMS database on PostgreSQL: a primary streaming to a DR replica.

    The DSNs are secrets (they may carry a password), so the topology names the environment
    variables holding them; the activity that connects resolves them at call time.
    ``max_lag_on_failover_*`` (Patroni's ``maximum_lag_on_failover``): a replica further behind
    than either bound is promoted only after an operator accepts the data loss.
    """

    adapter: Literal["postgres"] = "postgres"
    primary_dsn_env: EnvVarName
    replica_dsn_env: EnvVarName
    max_lag_on_failover_bytes: Annotated[int, Field(ge=0)] = 1_048_576
    max_lag_on_failover_s: Annotated[float, Field(ge=0)] = 5.0
    # How long one connection attempt or statement may take before the database counts as
    # unreachable for this attempt (the step's retry policy decides what happens next).
    timeout_s: Seconds = 5.0
    reseed: PostgresReseedConfig | None = None


DATABASE_ADAPTERS = ("postgres",)

# A union of one for now; a second adapter is one more Tag here.
DatabaseConfig = Annotated[
    Annotated[PostgresDatabaseConfig, Tag("postgres")],
    Discriminator(
        lambda raw: str(
            raw.get("adapter", "postgres")
            if isinstance(raw, dict)
            else getattr(raw, "adapter", "postgres")
        ),
        custom_error_type="unknown_adapter",
        custom_error_message=f"must be one of {', '.join(DATABASE_ADAPTERS)}",
    ),
]


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
    # The OMS database (pending orders, risk parameters). Absent: the promotion's database
    # steps are skipped and say so.
    database: DatabaseConfig | None = None

    @model_validator(mode="after")
    def _regions_differ(self) -> Self:
        if self.primary_region == self.dr_region:
            raise ValueError("primary_region and dr_region must differ")
        return self


class _VenueBase(_Model):
    """What every venue has, whatever its dialect. ``account`` is who we are at the venue (the
    member, sub-account or trading account the orders belong to); it defaults to the venue's
    own name only for the lab, so a real topology must say it."""

    name: Name
    kind: Literal["equities", "futures", "options", "fx", "crypto"] = "equities"
    account: Annotated[str, Field(pattern=r"^\S{1,128}$")] | None = None
    reconnect_cooldown_s: Annotated[float, Field(ge=0)] = 3.0
    # How long one call to the venue may take before it counts as unanswered.
    timeout_s: Seconds = 5.0

    # The dialect reads orders and fills only inside a logged-on session, and a venue holds
    # one session per account: two steps of one runbook must then never log on at once, or
    # each replaces the other (an unclean end, so a reconnect cooldown).
    session_bound_reads: ClassVar[bool] = False

    def account_for(self, system: str) -> str:
        # Before accounts existed every runbook logged on as the system's name; the lab's
        # venues still know their member by it.
        return self.account or system


class LabVenueConfig(_VenueBase):
    """The lab's own order-gateway dialect (REST + JSON). It models a desk-owned gateway: the
    one kind of venue that refuses stale epochs."""

    adapter: Literal["lab"] = "lab"
    url: AnyHttpUrl
    api_key_env: EnvVarName
    # Fills asked for per request (the lab venue answers up to 5,000).
    page_size: Annotated[int, Field(ge=1, le=5000)] = 500


class CcxtVenueConfig(_VenueBase):
    """Any exchange ccxt knows (``exchange = "binance"``). ``api_url`` replaces every API URL of
    the exchange (a testnet, or the lab's Binance face) so nothing can reach anything else."""

    adapter: Literal["ccxt"]
    exchange: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")]
    api_url: AnyHttpUrl | None = None
    api_key_env: EnvVarName
    secret_env: EnvVarName
    symbols: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1)
    # ccxt's own throttle; keep it on for real exchanges (their limits are per IP and per key).
    rate_limit: bool = True
    # Trades and orders asked for per request: Binance's maximum is 1,000; some exchanges
    # allow fewer, and a bigger page than the exchange allows is cut short or refused.
    page_size: Annotated[int, Field(ge=1, le=5000)] = 1000


class Fix44VenueConfig(_VenueBase):
    """A FIX 4.4 order-entry session. Runbook sessions are short: log on with
    ResetSeqNumFlag=Y, do the step, log out."""

    adapter: Literal["fix44"]
    session_bound_reads: ClassVar[bool] = True
    host: HostName
    port: Annotated[int, Field(ge=1, le=65535)]
    # FIX CompIDs: one token, as every rules of engagement spells them.
    sender_comp_id: Annotated[str, Field(pattern=r"^\S{1,64}$")]
    target_comp_id: Annotated[str, Field(pattern=r"^\S{1,64}$")]
    password_env: EnvVarName | None = None
    heartbeat_s: Annotated[int, Field(ge=1, le=300)] = 30
    # Whether the venue answers OrderMassStatusRequest (AF) and OrderMassCancelRequest (q), as
    # its rules of engagement say.
    mass_status: bool = True
    mass_cancel: bool = True


VENUE_ADAPTERS = ("lab", "ccxt", "fix44")


def _venue_adapter(raw: object) -> str:
    # A venue without ``adapter`` is the lab dialect: every topology written before adapters
    # existed keeps loading unchanged.
    if isinstance(raw, dict):
        return str(raw.get("adapter", "lab"))
    return str(getattr(raw, "adapter", "lab"))


VenueConfig = Annotated[
    Annotated[LabVenueConfig, Tag("lab")]
    | Annotated[CcxtVenueConfig, Tag("ccxt")]
    | Annotated[Fix44VenueConfig, Tag("fix44")],
    Discriminator(
        _venue_adapter,
        custom_error_type="unknown_adapter",
        custom_error_message=f"must be one of {', '.join(VENUE_ADAPTERS)}",
    ),
]


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


WorkerRole = Annotated[str, Field(pattern=r"^(all|region-[a-z0-9-]+|vantage-[a-z0-9-]+)$")]
Port = Annotated[int, Field(ge=1, le=65535)]


class ObservabilityConfig(_Model):
    """Where each worker serves Prometheus ``/metrics``: ``metrics_ports`` maps a worker role
    (``region-dr``, ``vantage-east``, ``all``) to its port on ``metrics_host``. A role not
    listed serves no metrics. Traces need no entry here: the standard ``OTEL_*`` environment
    variables configure them."""

    metrics_host: str = "127.0.0.1"
    metrics_ports: dict[WorkerRole, Port] = Field(default_factory=dict)

    def metrics_address(self, role: str) -> str | None:
        port = self.metrics_ports.get(role)
        return None if port is None else f"{self.metrics_host}:{port}"


class LabControlConfig(_Model):
    """The embedded lab's control API: how a drill injects a real fault. Absent elsewhere, where
    a drill runs a planned switchover instead."""

    control_url: AnyHttpUrl
    api_key_env: EnvVarName
    # The lab's simulated OMS trades on every venue through the venue's own REST dialect, even
    # where the runbooks reach that venue through ccxt or FIX: one entry per such venue.
    order_gateways: list[LabVenueConfig] = Field(default_factory=list)

    def order_gateway(self, venue: str) -> LabVenueConfig | None:
        return next((g for g in self.order_gateways if g.name == venue), None)


class Topology(_Model):
    temporal: TemporalConfig = TemporalConfig()
    lease: LeaseConfig = NatsLeaseConfig()
    # Where each feed's active source is published. Absent: the lease's store. One store to
    # run is one fewer to lose, and it is the store the DR side can already reach; a desk whose
    # consumers cannot read the fencing store (ACLs, another cluster) gives it its own.
    active_source: StoreConfig | None = None
    replication: ReplicationConfig = ReplicationConfig()
    health: HealthConfig = HealthConfig()
    dns: DnsConfig = DnsConfig()
    systems: list[SystemConfig] = Field(min_length=1)
    venues: list[VenueConfig] = Field(min_length=1)
    vantage_points: list[VantagePoint] = Field(default_factory=list)
    feeds: list[FeedConfig] = Field(default_factory=list)
    alerts: list[AlertWebhook] = Field(default_factory=list)
    lab: LabControlConfig | None = None
    observability: ObservabilityConfig = ObservabilityConfig()

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

    @property
    def active_source_store(self) -> NatsStoreConfig | ConsulStoreConfig:
        return self.active_source if self.active_source is not None else self.lease

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


_TAG_FIELDS = {"unknown_adapter": "adapter", "unknown_backend": "backend"}


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each as ``dotted.path[index].field: message``."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        location = _dotted(error["loc"])
        # A tagged union reports a bad tag at the table; the person fixes the tag's field.
        tag_field = _TAG_FIELDS.get(error["type"])
        if tag_field is not None:
            location = f"{location}.{tag_field}" if location else tag_field
        message = re.sub(r"^Value error, ", "", error["msg"])
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        # A tagged union puts its tag in the path (``venues[1].ccxt.exchange``); the person
        # editing the file knows it as ``venues[1].exchange``.
        if i > 0 and isinstance(loc[i - 1], int) and part in VENUE_ADAPTERS:
            continue
        # The same for a store's backend tag: ``lease.nats.url`` is ``lease.url`` in the file.
        if i == 1 and loc[0] in ("lease", "active_source") and part in STORE_BACKENDS:
            continue
        # And a system's database adapter: ``systems[0].database.primary_dsn_env``.
        if i > 0 and loc[i - 1] == "database" and part in DATABASE_ADAPTERS:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
