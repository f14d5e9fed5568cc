"""Bring the whole lab up, report on it, break it, heal it, and take it down.

``up`` records every process it starts (pid and launch spec) in ``<lab dir>/state.json``; ``down``
stops exactly those. If anything fails during ``up``, what was started is stopped again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field

from domain.topology import Topology, load_topology
from lab import processes
from lab.processes import LabError, ProcessSpec
from lab.route53_setup import install_source_records, install_weighted_pair, route53_client
from lab.topology_gen import (
    ALERT_URL_ENV,
    AWS_KEY_ENV,
    AWS_SECRET_ENV,
    LAB_CONTROL_KEY_ENV,
    MD_SOURCES,
    SYSTEM,
    VANTAGES,
    VENUES,
    LabPorts,
    lab_secrets,
    lab_topology_toml,
    venue_key_env,
)

SEARCH_ATTRIBUTES = {"DrSystem": "Keyword", "DrKind": "Keyword", "DrOutcome": "Keyword"}
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


class LabPaths:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.state = self.root / "state.json"
        self.topology = self.root / "topology.toml"
        self.secrets = self.root / "secrets.env"
        self.logs = self.root / "logs"
        self.data = self.root / "data"


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
    for venue, port in zip(VENUES, ports.venues, strict=True):
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
                    "--reconnect-cooldown-s",
                    f"{venue_cooldown_s:g}",
                ),
                port=port,
                health_url=f"http://127.0.0.1:{port}/health",
                log_path=logs / f"venue-{venue}.log",
                secret_env=[venue_key_env(venue)],
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
    venue_secrets = [venue_key_env(v) for v in VENUES]
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
                secret_env=venue_secrets,
            ),
        )
    specs["worker"] = (
        "worker",
        ProcessSpec(
            name="worker",
            argv=_python("workers", "--config", topo, "--role", "all"),
            port=0,
            log_path=logs / "worker.log",
            secret_env=[
                *venue_secrets,
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
            secret_env=[*venue_secrets, ALERT_URL_ENV, LAB_CONTROL_KEY_ENV],
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
            venues=[processes.free_port() for _ in VENUES],
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


def up(root: Path, ports: LabPorts, venue_cooldown_s: float = 3.0) -> LabState:
    paths = LabPaths(root)
    existing = read_state(paths)
    if existing is not None:
        running = [n for n, c in existing.components.items() if processes.alive(c.pid)]
        if running:
            raise LabError(
                f"a lab is already running from {paths.root} ({', '.join(running)}); "
                "run `drctl lab down` first"
            )
    busy = [f"{name} ({port})" for name, port in ports.all().items() if processes.port_in_use(port)]
    if busy:
        raise LabError(
            f"port(s) already in use: {', '.join(busy)}; stop what holds them, or run "
            "`drctl lab up --ports auto`"
        )
    # Finds the binaries before anything starts.
    specs = build_specs(paths, ports, venue_cooldown_s)
    for directory in (paths.logs, paths.data):
        directory.mkdir(parents=True, exist_ok=True)
    paths.topology.write_text(lab_topology_toml(ports, venue_cooldown_s))
    secrets = lab_secrets(ports.alerts)
    write_secrets(paths, secrets)
    state = LabState(dir=paths.root, topology_path=paths.topology, ports=ports)
    try:
        for stage in STAGES:
            for name in stage:
                kind, spec = specs[name]
                pid = processes.start(spec, secrets)
                state.components[name] = Component(spec=spec, pid=pid, kind=kind)  # type: ignore[arg-type]
                write_state(paths, state)
            for name in stage:
                component = state.components[name]
                if component.kind == "worker":
                    continue
                processes.wait_ready(component.spec, component.pid, READY_TIMEOUT_S)
            if "route53" in stage:
                _install_dns(load_topology(paths.topology), secrets)
        _wait_primary_trading(state)
    except BaseException:
        down(root)
        raise
    return state


def _install_dns(topology: Topology, secrets: dict[str, str]) -> None:
    client = route53_client(topology.dns, secrets[AWS_KEY_ENV], secrets[AWS_SECRET_ENV])
    for system in topology.systems:
        install_weighted_pair(client, system.dns)
    for feed in topology.feeds:
        if feed.dns is not None:
            install_source_records(client, feed)


def _wait_primary_trading(state: LabState) -> None:
    url = f"http://127.0.0.1:{state.ports.oms_primary}/health"

    def trading() -> bool:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            return httpx.get(url, timeout=1).json().get("trading_state") == "trading"
        return False

    if not processes.wait_until(trading, READY_TIMEOUT_S, poll_s=0.2):
        raise LabError(f"the primary OMS did not start trading; see {state.dir / 'logs'}")


def down(root: Path) -> list[str]:
    """Stop every process the lab started; returns their names. Safe to repeat."""
    paths = LabPaths(root)
    state = read_state(paths)
    if state is None:
        return []
    stopped = []
    for name, component in reversed(list(state.components.items())):
        if processes.alive(component.pid):
            processes.stop(component.pid)
            stopped.append(name)
    paths.state.unlink(missing_ok=True)
    return stopped


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
            healthy, detail = False, {}
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
    replication = _replication(details.get("oms-primary", {}), details.get("oms-dr", {}))
    return LabStatus(
        dir=state.dir,
        topology=state.topology_path,
        temporal_ui=f"http://127.0.0.1:{state.ports.temporal_ui}",
        healthy=all(c.healthy for c in components),
        components=components,
        replication=replication,
    )


def _probe(http: httpx.Client, component: Component) -> tuple[bool, dict[str, Any]]:
    spec = component.spec
    if component.kind == "worker":
        return True, {}
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
    "kill", "hang", "slow", "heal", "stale", "dup-seq", "reversed-seq", "partition"
]


def component_name(target: str, name: str | None) -> str:
    """Map a chaos target (`primary`, `venue alpha`, `md md-a`, `nats`) to a component."""
    if target in ("primary", "dr"):
        return f"oms-{target}"
    if target in ("nats", "worker"):
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
        f"unknown chaos target {target!r}; use primary, dr, nats, worker, venue NAME or md NAME"
    )


def chaos(root: Path, action: ChaosAction, target: str, name: str | None, ms: int) -> str:
    state = require_state(root)
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


def heal(root: Path, state: LabState, component_id: str) -> str:
    component = state.components[component_id]
    if not processes.alive(component.pid):
        pid = processes.start(component.spec, read_secrets(LabPaths(root)))
        state.components[component_id] = component.model_copy(update={"pid": pid})
        write_state(LabPaths(root), state)
        # A worker serves no port: it is ready once it polls, which nothing outside can see.
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
