"""The lab's own topology: one system (`lab`), three venues, three market-data sources, on loopback.

Written to ``<lab dir>/topology.toml`` so every drctl command, worker and lab process reads the same
file a user's deployment would. Secrets are not in it: only the names of the variables holding them.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import BaseModel

from domain.topology import Topology, parse_topology
from lab.postgres import DATABASE, SUPERUSER, PgPorts, _bin_dir, pair_layout
from lab.processes import LabError

VENUES = ("alpha", "beta", "gamma")
# What the lab primary's strategy trades.
SYMBOLS = ("AAPL", "MSFT", "NVDA", "ESZ6")
MD_SOURCES = ("md-a", "md-b", "md-c")
# Three places to probe from: a majority (two) must agree before anything fails over.
VANTAGES = ("dr", "obs-a", "obs-b")
SYSTEM = "lab"
ZONE = "lab.example."
AWS_KEY_ENV = "LAB_AWS_ACCESS_KEY_ID"
AWS_SECRET_ENV = "LAB_AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
ALERT_URL_ENV = "LAB_ALERT_WEBHOOK_URL"
LAB_CONTROL_KEY_ENV = "LAB_CONTROL_API_KEY"
# The OMS database's connection strings, by site: the primary region's PostgreSQL and the DR
# region's streaming replica (after a promotion, the names keep their site, not their role).
PRIMARY_DSN_ENV = "LAB_DB_PRIMARY_DSN"
REPLICA_DSN_ENV = "LAB_DB_REPLICA_DSN"
# The lab runs one worker process for every role.
WORKER_ROLE = "all"


def venue_key_env(venue: str) -> str:
    return f"LAB_VENUE_{venue.upper()}_API_KEY"


def venue_secret_env(venue: str) -> str:
    """The secret that signs requests to a venue's Binance-compatible face."""
    return f"LAB_VENUE_{venue.upper()}_API_SECRET"


# How the runbooks reach each lab venue. Every venue speaks all three dialects over one book;
# the lab reaches one through each, so every demo and test runs the real ccxt library and a
# real FIX session.
VENUE_ADAPTERS = {"alpha": "lab", "beta": "ccxt", "gamma": "fix44"}
RUNBOOK_COMP_ID = f"{SYSTEM}-runbooks"


class LabPorts(BaseModel):
    temporal: int = 7233
    temporal_ui: int = 8233
    nats: int = 4222
    route53: int = 18053
    alerts: int = 18090
    oms_primary: int = 18101
    oms_dr: int = 18102
    venues: list[int] = [18111, 18112, 18113]
    fix: list[int] = [18114, 18115, 18116]
    md: list[int] = [18121, 18122, 18123]
    proxies: list[int] = [18131, 18132, 18133]
    md_consumer: int = 18140
    control: int = 18150
    postgres_primary: int = 18161
    postgres_dr: int = 18162
    worker_metrics: int = 18170

    def all(self) -> dict[str, int]:
        named = {
            "temporal": self.temporal,
            "temporal-ui": self.temporal_ui,
            "nats": self.nats,
            "route53": self.route53,
            "alerts": self.alerts,
            "oms-primary": self.oms_primary,
            "oms-dr": self.oms_dr,
            "md-consumer": self.md_consumer,
            "control": self.control,
            "postgres-primary": self.postgres_primary,
            "postgres-dr": self.postgres_dr,
            "worker-metrics": self.worker_metrics,
        }
        named |= {f"venue-{v}": p for v, p in zip(VENUES, self.venues, strict=True)}
        named |= {f"fix-{v}": p for v, p in zip(VENUES, self.fix, strict=True)}
        named |= {m: p for m, p in zip(MD_SOURCES, self.md, strict=True)}
        named |= {f"proxy-{v}": p for v, p in zip(VANTAGES, self.proxies, strict=True)}
        return named

    def with_port(self, name: str, port: int) -> LabPorts:
        """A copy with the component ``name`` (as listed by ``all``) moved to ``port``."""
        names = list(self.all())
        if name not in names:
            raise LabError(f"unknown lab component {name!r}; one of: {', '.join(names)}")
        if name.startswith("venue-"):
            venues = list(self.venues)
            venues[VENUES.index(name.removeprefix("venue-"))] = port
            return self.model_copy(update={"venues": venues})
        if name.startswith("fix-"):
            fix = list(self.fix)
            fix[VENUES.index(name.removeprefix("fix-"))] = port
            return self.model_copy(update={"fix": fix})
        if name.startswith("proxy-"):
            proxies = list(self.proxies)
            proxies[VANTAGES.index(name.removeprefix("proxy-"))] = port
            return self.model_copy(update={"proxies": proxies})
        if name in MD_SOURCES:
            md = list(self.md)
            md[MD_SOURCES.index(name)] = port
            return self.model_copy(update={"md": md})
        return self.model_copy(update={name.replace("-", "_"): port})


def lab_secrets(ports: LabPorts) -> dict[str, str]:
    """Fresh credentials for one lab run. The venues check the keys; moto accepts any, and the
    lab's PostgreSQL trusts loopback (its DSNs carry a password all the same, so a leak of one
    shows in the secrets scan like any other credential)."""
    values = {venue_key_env(v): secrets.token_urlsafe(24) for v in VENUES}
    values |= {venue_secret_env(v): secrets.token_hex(32) for v in VENUES}
    values[AWS_KEY_ENV] = "testing"
    values[AWS_SECRET_ENV] = secrets.token_urlsafe(24)
    values[ALERT_URL_ENV] = f"http://127.0.0.1:{ports.alerts}/alerts/{secrets.token_urlsafe(12)}"
    values[LAB_CONTROL_KEY_ENV] = secrets.token_urlsafe(24)
    password = secrets.token_hex(16)
    for variable, port in (
        (PRIMARY_DSN_ENV, ports.postgres_primary),
        (REPLICA_DSN_ENV, ports.postgres_dr),
    ):
        values[variable] = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"
    return values


def lab_topology_toml(
    ports: LabPorts, venue_cooldown_s: float = 3.0, postgres_root: Path | None = None
) -> str:
    """The lab's topology. ``postgres_root``: where the lab's PostgreSQL pair lives; given, the
    failback re-seeds a former primary by itself (the lab's one worker runs on its host)."""
    host = "127.0.0.1"
    reseed = "" if postgres_root is None else _reseed_toml(postgres_root)
    venues = "\n".join(
        _venue_toml(v, p, fix, venue_cooldown_s)
        for v, p, fix in zip(VENUES, ports.venues, ports.fix, strict=True)
    )
    gateways = "\n".join(
        f"""
[[lab.order_gateways]]
name = "{v}"
account = "{SYSTEM}"
url = "http://{host}:{p}"
api_key_env = "{venue_key_env(v)}"
reconnect_cooldown_s = {venue_cooldown_s}
"""
        for v, p in zip(VENUES, ports.venues, strict=True)
        if VENUE_ADAPTERS[v] != "lab"
    )
    sources = "\n".join(
        f"""
[[feeds.sources]]
name = "{m}"
url = "http://{host}:{p}"
rank = {i}
dns_target = "{m}.{ZONE}"
"""
        for i, (m, p) in enumerate(zip(MD_SOURCES, ports.md, strict=True), start=1)
    )
    vantages = "\n".join(
        f"""[[vantage_points]]
name = "{v}"
region = "{"dr" if v == "dr" else "observer"}"
http_proxy = "http://{host}:{p}"
"""
        for v, p in zip(VANTAGES, ports.proxies, strict=True)
    )
    return f"""# Written by `drctl lab up`. The lab's topology: edit a copy, not this file.

[temporal]
address = "{host}:{ports.temporal}"
namespace = "default"
ui_url = "http://{host}:{ports.temporal_ui}"

[lease]
backend = "nats"
url = "nats://{host}:{ports.nats}"
bucket = "dr-leases"
ttl_s = 3.0

[replication]
nats_url = "nats://{host}:{ports.nats}"
stream = "LAB_BOOK"
subject_prefix = "book"
sync_timeout_s = 20.0

[health]
interval_s = 1.0
latency_threshold_ms = 250
freshness_threshold_s = 2.0
confirmation_count = 3
recovery_count = 5
cooldown_s = 60.0

[dns]
endpoint_url = "http://{host}:{ports.route53}"
aws_region = "us-east-1"
access_key_id_env = "{AWS_KEY_ENV}"
secret_access_key_env = "{AWS_SECRET_ENV}"

[[systems]]
name = "{SYSTEM}"
production = false
primary_region = "primary"
dr_region = "dr"
primary_oms_url = "http://{host}:{ports.oms_primary}"
dr_oms_url = "http://{host}:{ports.oms_dr}"
venues = [{", ".join(f'"{v}"' for v in VENUES)}]
symbols = [{", ".join(f'"{s}"' for s in SYMBOLS)}]
discrepancy_tolerance_notional = 0.0

[systems.dns]
zone = "{ZONE}"
record = "oms.{ZONE}"
record_type = "CNAME"
primary_target = "oms.primary.{ZONE}"
dr_target = "oms.dr.{ZONE}"
ttl_s = 30

[systems.database]
adapter = "postgres"
primary_dsn_env = "{PRIMARY_DSN_ENV}"
replica_dsn_env = "{REPLICA_DSN_ENV}"
max_lag_on_failover_bytes = 1048576
max_lag_on_failover_s = 5.0
{reseed}{venues}
{vantages}
[[feeds]]
name = "lab-md"
recovery_window_s = 5.0

[feeds.dns]
zone = "{ZONE}"
record = "md.{ZONE}"
record_type = "CNAME"
primary_target = "md-a.{ZONE}"
dr_target = "md-b.{ZONE}"
ttl_s = 30
{sources}
[[alerts]]
name = "lab-oncall"
url_env = "{ALERT_URL_ENV}"

[observability]
metrics_host = "{host}"
metrics_ports = {{ {WORKER_ROLE} = {ports.worker_metrics} }}

[lab]
control_url = "http://{host}:{ports.control}"
api_key_env = "{LAB_CONTROL_KEY_ENV}"
{gateways}"""


def _venue_toml(venue: str, port: int, fix_port: int, cooldown_s: float) -> str:
    host = "127.0.0.1"
    common = f"""
[[venues]]
name = "{venue}"
adapter = "{VENUE_ADAPTERS[venue]}"
account = "{SYSTEM}"
kind = "equities"
reconnect_cooldown_s = {cooldown_s}
"""
    if VENUE_ADAPTERS[venue] == "ccxt":
        # The whole API URL is replaced, so nothing can reach the real exchange; ccxt's own
        # throttle is off, as the lab venue applies its own rate limits.
        return (
            common
            + f"""exchange = "binance"
api_url = "http://{host}:{port}"
api_key_env = "{venue_key_env(venue)}"
secret_env = "{venue_secret_env(venue)}"
symbols = [{", ".join(f'"{s}"' for s in SYMBOLS)}]
rate_limit = false
"""
        )
    if VENUE_ADAPTERS[venue] == "fix44":
        # The runbooks' own FIX session (CompID), apart from the OMS's order-entry session on
        # the same account, as a venue's rules of engagement grant a desk: a logon here never
        # ends the trading session, so a pre-flight check can run while the primary trades.
        return (
            common
            + f"""host = "{host}"
port = {fix_port}
sender_comp_id = "{RUNBOOK_COMP_ID}"
target_comp_id = "{venue}"
password_env = "{venue_key_env(venue)}"
heartbeat_s = 5
"""
        )
    return (
        common
        + f"""url = "http://{host}:{port}"
api_key_env = "{venue_key_env(venue)}"
"""
    )


def _reseed_toml(postgres_root: Path) -> str:
    pair = pair_layout(postgres_root, PgPorts(0, 0))
    # Each node streams through the slot named for its site (lab/postgres.py PgNode.slot).
    return f"""
[systems.database.reseed]
bin_dir = "{_bin_dir()}"
slot_prefix = "standby_"

[systems.database.reseed.data_dirs]
primary = "{pair.primary.datadir}"
dr = "{pair.dr.datadir}"
"""


def lab_topology(ports: LabPorts) -> Topology:
    return parse_topology(lab_topology_toml(ports), "<lab topology>")
