"""The PostgreSQL database adapter (psycopg 3, async): a primary streaming to a DR replica.

Fencing the database, in layers (DESIGN.md, fencing layer 4), and what holds when:

1. **Epoch checked in the write transaction.** The OMS schema's ``dr_epoch`` row holds the
   lowest epoch allowed to write, and a trigger on every OMS table refuses (SQLSTATE DR001) a
   write of an older epoch in the same transaction (``lab/oms_schema.py``). ``fence_primary``
   raises it on the primary when the primary answers; the fence then reaches the replica by
   replication. ``promote_replica`` raises it again on the promoted replica, so the new primary
   refuses the old epoch whether or not the primary's fence reached it.
   (``default_transaction_read_only`` is not a fence: any client can turn it off.)
2. **A primary that was down at fence time** comes back with its old ``dr_epoch``: its own table
   cannot refuse the old epoch. What holds then: the old OMS has lost the lease (fencing layers
   1-2: it stops writing by itself when it cannot renew), and the old primary must come back
   only as a replica. A server in recovery cannot commit any write at all, whatever a client
   sets; that is a fence. The lab enforces it (``lab/postgres.py`` starts a former primary
   only as a standby once the other side is promoted); a desk does the same with its
   restart tooling (Patroni does it by design), and the failback re-seeds it as a replica
   (pg_rewind, else a fresh pg_basebackup) before it can ever be promoted again.
3. **What the database cannot do**: refuse a hostile writer that claims a newer epoch, or a
   superuser that drops the trigger. The fence stops the stale honest writer, which is the
   split-brain case.

Connection strings are secrets: they are read from the environment variables the topology
names, at call time, and never appear in results, errors or logs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from domain.database import (
    DatabaseConfigError,
    DatabaseManualStep,
    DatabaseUnavailable,
    DbFence,
    DbPromotion,
    DbReseed,
    DbState,
    PendingOrder,
    ReplicaLag,
    ReseedTarget,
    RiskParameter,
    manual_reseed_steps,
)
from domain.topology import PostgresDatabaseConfig

# Measured from the replica. Every value is NULL-safe: a promoted server has no receive LSN.
REPLICA_LAG_SQL = """
SELECT pg_is_in_recovery() AS in_recovery,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       greatest(coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                         pg_last_wal_replay_lsn()), 0), 0)::bigint AS bytes,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age_s,
       CASE WHEN pg_is_in_recovery()
            THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END AS paused,
       coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false) AS streaming
"""

# One PostgreSQL program run by the failback's re-seed (a pg_basebackup of a big database).
TOOL_TIMEOUT_S = 3600.0

PENDING_ORDERS_SQL = """
SELECT client_order_id, symbol, side, quantity, limit_price, epoch, updated_at
  FROM pending_orders WHERE status = 'pending' ORDER BY updated_at, client_order_id
"""

RISK_PARAMETERS_SQL = """
SELECT symbol, max_position, max_order_qty, epoch, updated_at
  FROM risk_parameters ORDER BY symbol
"""


def lsn_to_int(lsn: str) -> int:
    """A PostgreSQL LSN (``16/B374D848``) as a byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def replica_lag_from_row(
    row: Mapping[str, Any], primary_lsn: int | None, primary_reachable: bool
) -> ReplicaLag:
    """The lag from one row of ``REPLICA_LAG_SQL`` (and the primary's WAL position, if known).

    Seconds are the age of the last replayed transaction only while something received is
    still waiting for replay: with no recent writes that age grows forever, yet nothing is
    missing.
    """
    in_recovery = bool(row["in_recovery"])
    lag_bytes = int(row["bytes"]) if in_recovery else 0
    age = row["replay_age_s"]
    seconds = max(float(age), 0.0) if lag_bytes > 0 and age is not None else 0.0
    unreceived = None
    if in_recovery and primary_lsn is not None and row["receive_lsn"] is not None:
        unreceived = max(primary_lsn - lsn_to_int(row["receive_lsn"]), 0)
    return ReplicaLag(
        bytes=lag_bytes,
        seconds=seconds,
        replica_in_recovery=in_recovery,
        primary_reachable=primary_reachable,
        replay_paused=bool(row["paused"]),
        unreceived_bytes=unreceived,
        streaming=bool(row["streaming"]) if "streaming" in row else None,
    )


async def fetch_state(conn: psycopg.AsyncConnection[Any]) -> DbState:
    """Pending orders and risk parameters, read in one snapshot."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await cur.execute(PENDING_ORDERS_SQL)
        orders = [PendingOrder.model_validate(r) for r in await cur.fetchall()]
        await cur.execute(RISK_PARAMETERS_SQL)
        risk = [RiskParameter.model_validate(r) for r in await cur.fetchall()]
    return DbState(pending_orders=orders, risk_parameters=risk)


class _Unreachable(DatabaseUnavailable):
    """No connection could be made at all (as opposed to one failing part-way)."""


def resolve_dsn(variable: str, env: Mapping[str, str]) -> str:
    """The DSN held by ``variable``. Errors name the variable, never its value."""
    dsn = env.get(variable, "").strip()
    if not dsn:
        raise DatabaseConfigError(
            f"environment variable {variable} is not set on this worker; it must hold the "
            "database's connection string (postgresql://... or key=value)"
        )
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise DatabaseConfigError(
            f"environment variable {variable} does not hold a valid PostgreSQL connection "
            "string (postgresql://user@host:port/db or key=value pairs)"
        ) from None
    return dsn


class _Side:
    """One end of the pair: its DSN, the variable it came from, and how to say so safely."""

    def __init__(self, role: str, variable: str, dsn: str) -> None:
        self.role = role
        self.variable = variable
        self.dsn = dsn
        self._secrets = [v for k, v in conninfo_to_dict(dsn).items() if k == "password" and v] + [
            dsn
        ]

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"{self.role} database ({self.variable}): {self.scrub(exc)}")

    def unreachable(self, exc: BaseException) -> _Unreachable:
        return _Unreachable(
            f"{self.role} database ({self.variable}) unreachable: {self.scrub(exc)}"
        )

    def scrub(self, exc: BaseException) -> str:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, TimeoutError):
            text = "did not answer in time"
        return self.scrub_text(text)

    def scrub_text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(str(secret), "***")
        return text


class PostgresDatabase:
    """``DatabasePort`` on PostgreSQL streaming replication. One connection per call: a step
    runs once per promotion, and a connection kept across a failover would point at a server
    whose role has changed."""

    def __init__(
        self, config: PostgresDatabaseConfig, env: Mapping[str, str] | None = None
    ) -> None:
        environ = os.environ if env is None else env
        self._primary = _Side(
            "primary", config.primary_dsn_env, resolve_dsn(config.primary_dsn_env, environ)
        )
        self._replica = _Side(
            "replica", config.replica_dsn_env, resolve_dsn(config.replica_dsn_env, environ)
        )
        self._timeout_s = config.timeout_s

    @asynccontextmanager
    async def _connect(self, side: _Side) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await psycopg.AsyncConnection.connect(
                    side.dsn,
                    autocommit=True,
                    # libpq's own bound; asyncio.timeout above bounds the rest.
                    connect_timeout=max(2, int(self._timeout_s)),
                    application_name="failover-runbooks",
                )
        except (psycopg.OperationalError, TimeoutError, OSError) as exc:
            raise side.unreachable(exc) from None
        try:
            yield conn
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise side.unavailable(exc) from None
        except pg_errors.UndefinedFunction:
            raise DatabaseConfigError(
                f"the {side.role} database ({side.variable}) has no epoch fence: install "
                "dr_epoch, dr_fence() and the write-path trigger (see lab/oms_schema.py)"
            ) from None
        except pg_errors.UndefinedTable as exc:
            raise DatabaseConfigError(
                f"the {side.role} database ({side.variable}) lacks the OMS schema: "
                f"{side.scrub(exc)}"
            ) from None
        finally:
            await conn.close()

    async def _one(
        self, conn: psycopg.AsyncConnection[Any], sql: str, params: tuple[Any, ...] = ()
    ) -> dict[str, Any]:
        async with asyncio.timeout(self._timeout_s), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            row = await cur.fetchone()
        if row is None:
            raise DatabaseConfigError(f"{sql.split()[0]} returned no row")
        return row

    async def _primary_wal_position(self) -> int | None:
        """The primary's WAL insert position, or None if it does not answer as a primary."""
        try:
            async with self._connect(self._primary) as conn:
                row = await self._one(
                    conn,
                    "SELECT pg_is_in_recovery() AS in_recovery, "
                    "CASE WHEN pg_is_in_recovery() THEN NULL "
                    "ELSE pg_current_wal_lsn()::text END AS lsn",
                )
        except DatabaseUnavailable:
            # Unreachable, or answering too slowly to count on: either way unknown.
            return None
        return None if row["lsn"] is None else lsn_to_int(row["lsn"])

    # --- read-only -----------------------------------------------------------------------------

    async def replica_lag(self) -> ReplicaLag:
        # The primary first: its position read before the replica's makes the unreceived
        # figure an underestimate by at most what was written in between, never negative.
        primary_lsn = await self._primary_wal_position()
        async with self._connect(self._replica) as conn:
            row = await self._one(conn, REPLICA_LAG_SQL)
        return replica_lag_from_row(row, primary_lsn, primary_reachable=primary_lsn is not None)

    async def load_state(self) -> DbState:
        async with self._connect(self._replica) as conn:
            async with asyncio.timeout(self._timeout_s):
                return await fetch_state(conn)

    # --- idempotent writes ---------------------------------------------------------------------

    async def _fence(self, conn: psycopg.AsyncConnection[Any], epoch: int) -> int:
        # lock_timeout: a writer idling inside a transaction past the epoch check holds the
        # fence row; give up this attempt (retryable) rather than hang the step.
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('lock_timeout', %s, true)", (f"{int(self._timeout_s * 1000)}",)
            )
            row = await self._one(conn, "SELECT dr_fence(%s) AS epoch", (epoch,))
        return int(row["epoch"])

    async def fence_primary(self, epoch: int) -> DbFence:
        notes: list[str] = []
        at_primary = False
        try:
            async with self._connect(self._primary) as conn:
                state = await self._one(conn, "SELECT pg_is_in_recovery() AS in_recovery")
                if state["in_recovery"]:
                    at_primary = True
                    notes.append("primary is in recovery: it cannot commit any write")
                else:
                    fenced = await self._fence(conn, epoch)
                    at_primary = True
                    notes.append(f"primary refuses epochs below {fenced}")
        except _Unreachable as exc:
            # A primary that answers but fails part-way raises (retryable): only one that
            # cannot be reached at all is reported as not fenced.
            notes.append(
                f"{exc}; not fenced there: it must come back only as a replica (the failback "
                "re-seeds it), and its OMS has lost the lease"
            )
        at_replica = False
        try:
            async with self._connect(self._replica) as conn:
                state = await self._one(conn, "SELECT pg_is_in_recovery() AS in_recovery")
                if state["in_recovery"]:
                    notes.append(
                        "replica still in recovery: it receives the fence by replication"
                        if at_primary
                        else "replica still in recovery: promotion fences it"
                    )
                else:
                    fenced = await self._fence(conn, epoch)
                    at_replica = True
                    notes.append(f"promoted replica refuses epochs below {fenced}")
        except _Unreachable as exc:
            notes.append(f"{exc}; promotion fences it")
        return DbFence(
            epoch=epoch,
            fenced_at_primary=at_primary,
            fenced_at_replica=at_replica,
            detail="; ".join(notes),
        )

    async def promote_replica(self, epoch: int) -> DbPromotion:
        async with self._connect(self._replica) as conn:
            state = await self._one(conn, "SELECT pg_is_in_recovery() AS in_recovery")
            already = not state["in_recovery"]
            if not already:
                try:
                    done = await self._one(
                        conn,
                        "SELECT pg_promote(wait => true, wait_seconds => %s) AS done",
                        (max(1, int(self._timeout_s)),),
                    )
                except pg_errors.ObjectNotInPrerequisiteState:
                    # Another attempt promoted it between our check and our call.
                    already = True
                else:
                    if not done["done"]:
                        raise DatabaseUnavailable(
                            f"replica database ({self._replica.variable}) did not finish "
                            f"promoting within {self._timeout_s:g} s; retry the step"
                        )
            # The promoted side is fenced at the new epoch whether or not the fence written on
            # the old primary replicated before it stopped.
            await self._fence(conn, epoch)
            row = await self._one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn()) AS wal")
        return DbPromotion(
            promoted=True,
            already_primary=already,
            timeline=int(str(row["wal"])[:8], 16),
            epoch=epoch,
        )

    # --- the failback: the former primary becomes a replica of the new primary ------------------

    async def reseed_replica(self, target: ReseedTarget | None) -> DbReseed:
        """Make the replica side stream from the primary side again (see ``DatabasePort``).

        Already streaming from it: nothing to do. Otherwise the data directory is rewound
        (pg_rewind: only what diverged is copied) or, when rewind cannot, copied afresh
        (pg_basebackup; the old directory is kept beside it, renamed). Both write the data
        directory, so they run here only when ``target`` says where it is on this host;
        without it the answer is the steps for a person (``DatabaseManualStep``).
        """
        async with self._connect(self._primary) as conn:
            row = await self._one(conn, "SELECT pg_is_in_recovery() AS in_recovery")
        if row["in_recovery"]:
            raise DatabaseUnavailable(
                f"primary database ({self._primary.variable}) is still in recovery: promote "
                "it before re-seeding the other side from it"
            )
        if await self._replica_streams_from_primary():
            return DbReseed(method="already_streaming", detail="already streams from the primary")
        if target is None:
            raise DatabaseManualStep(manual_reseed_steps(self._replica.variable))
        method, why = await asyncio.to_thread(self._reseed_locally, target)
        detail = f"{target.data_dir} re-seeded with {method}; it streams through slot {target.slot}"
        if why:
            detail += f" (pg_rewind could not: {why})"
        return DbReseed(method=method, detail=detail)

    async def _replica_streams_from_primary(self) -> bool:
        primary = conninfo_to_dict(self._primary.dsn)
        try:
            async with self._connect(self._replica) as conn:
                row = await self._one(
                    conn,
                    "SELECT pg_is_in_recovery() AS in_recovery, "
                    "(SELECT status FROM pg_stat_wal_receiver) AS status, "
                    "(SELECT sender_host FROM pg_stat_wal_receiver) AS host, "
                    "(SELECT sender_port FROM pg_stat_wal_receiver) AS port",
                )
        except DatabaseUnavailable:
            return False
        if not row["in_recovery"] or row["status"] != "streaming":
            return False
        port = str(primary.get("port") or "5432")
        host = str(primary.get("host") or primary.get("hostaddr") or "")
        return str(row["port"]) == port and (not host or str(row["host"]) in (host, "127.0.0.1"))

    def _reseed_locally(
        self, target: ReseedTarget
    ) -> tuple[Literal["pg_rewind", "pg_basebackup"], str]:
        """Blocking: run in a thread. Stop the server, rewind it (else copy it afresh), give it
        back its own configuration plus the standby settings, start it."""
        tools = _LocalTools(target, self._primary.scrub_text)
        datadir = Path(target.data_dir)
        primary = conninfo_to_dict(self._primary.dsn)
        password = str(primary.pop("password", "") or "")
        # The password goes by environment, never on a command line (ps shows those).
        source = make_conninfo(**{k: str(v) for k, v in primary.items() if v is not None})
        env = {"PGPASSWORD": password} if password else {}
        self._ensure_slot_sync(target.slot)
        aside = datadir.with_name(f"{datadir.name}.before-reseed")
        has_data = (datadir / "PG_VERSION").exists()
        if has_data:
            tools.stop()
        # The server's own settings, to give back after the copy. From the copy set aside when
        # an earlier attempt got that far and no further.
        source_of_conf = datadir if has_data else aside
        kept = {p.name: p.read_bytes() for p in source_of_conf.glob("*.conf")}
        method: Literal["pg_rewind", "pg_basebackup"] = "pg_rewind"
        why = ""
        try:
            if not has_data:
                raise DatabaseUnavailable("no data directory to rewind")
            tools.run("pg_rewind", "-D", str(datadir), f"--source-server={source}", env=env)
        except DatabaseUnavailable as exc:
            method, why = "pg_basebackup", " ".join(str(exc).split())
            if has_data:
                # Kept, not deleted: a person may still want what only the old primary had.
                if aside.exists():
                    shutil.rmtree(aside)
                datadir.rename(aside)
            elif datadir.exists():
                # No PG_VERSION: what an interrupted copy left.
                shutil.rmtree(datadir)
            # Made here, as its owner's: the parent need not be writable by the server's user.
            datadir.mkdir(mode=0o700)
            tools.own(datadir)
            tools.run(
                "pg_basebackup", "-d", source, "-D", str(datadir), "-X", "stream",
                "-S", target.slot, "-c", "fast", env=env,
            )  # fmt: skip
        # Both copy the primary's configuration along: the server gets its own back.
        for name, content in kept.items():
            (datadir / name).write_bytes(content)
        auto = datadir / "postgresql.auto.conf"
        auto.write_text(
            standby_settings(auto.read_text() if auto.exists() else "", source, target.slot)
        )
        signal = datadir / "standby.signal"
        signal.touch()
        tools.own(*(datadir / name for name in kept), auto, signal)
        tools.start()
        return method, why

    def _ensure_slot_sync(self, slot: str) -> None:
        try:
            with psycopg.connect(
                self._primary.dsn, autocommit=True, connect_timeout=max(2, int(self._timeout_s))
            ) as conn:
                conn.execute(
                    "SELECT pg_create_physical_replication_slot(%s, true) WHERE NOT EXISTS "
                    "(SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                    (slot, slot),
                )
        except psycopg.OperationalError as exc:
            raise self._primary.unavailable(exc) from None

    async def close(self) -> None:
        # Nothing held between calls.
        return None


def standby_settings(auto_conf: str, conninfo: str, slot: str) -> str:
    """``postgresql.auto.conf`` with the standby's upstream set: earlier primary_conninfo and
    primary_slot_name lines replaced, everything else kept. ``conninfo`` carries no password:
    the server authenticates its replication connection by its own means (its OS user's
    ``.pgpass``, a certificate), so no secret is written into its configuration."""
    kept = [
        line
        for line in auto_conf.splitlines()
        if line.split("=", 1)[0].strip() not in ("primary_conninfo", "primary_slot_name")
    ]
    quoted = conninfo.replace("'", "''")
    return (
        "\n".join([*kept, f"primary_conninfo = '{quoted}'", f"primary_slot_name = '{slot}'"]) + "\n"
    )


class _LocalTools:
    """PostgreSQL's programs on this host, run as the owner of the data directory (they refuse
    root). Output goes to files, not pipes: a started postmaster inherits them."""

    def __init__(self, target: ReseedTarget, scrub: Callable[[str], str]) -> None:
        self._bin = Path(target.bin_dir) if target.bin_dir else None
        self._datadir = Path(target.data_dir)
        self._scrub = scrub
        self._owner = self._owner_of(self._datadir)

    @staticmethod
    def _owner_of(datadir: Path) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        # An attempt interrupted after setting the old data aside left only that copy.
        aside = datadir.with_name(f"{datadir.name}.before-reseed")
        where = next(p for p in (datadir, aside, datadir.parent) if p.exists())
        stat = where.stat()
        if stat.st_uid == 0:
            raise DatabaseConfigError(
                f"{where} is owned by root: PostgreSQL's programs refuse to run as root; give "
                "the data directory to the server's own user"
            )
        return stat.st_uid, stat.st_gid

    def run(self, tool: str, *args: str, env: Mapping[str, str] | None = None) -> str:
        program = str(self._bin / tool) if self._bin else (shutil.which(tool) or tool)
        user, group = self._owner if self._owner else (None, None)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            try:
                subprocess.run(
                    [program, *args],
                    check=True,
                    stdout=out,
                    stderr=err,
                    user=user,
                    group=group,
                    extra_groups=[] if user is not None else None,
                    env={**os.environ, **(env or {})},
                    timeout=TOOL_TIMEOUT_S,
                    cwd="/",
                )
            except FileNotFoundError:
                raise DatabaseConfigError(
                    f"{tool} not found ({'in ' + str(self._bin) if self._bin else 'on PATH'}): "
                    "set [systems.database.reseed] bin_dir to PostgreSQL's bin directory"
                ) from None
            except subprocess.CalledProcessError:
                err.seek(0)
                raise DatabaseUnavailable(
                    f"{tool} failed: {self._scrub(err.read().strip()[-1000:])}"
                ) from None
            except subprocess.TimeoutExpired:
                raise DatabaseUnavailable(
                    f"{tool} did not finish within {TOOL_TIMEOUT_S:g} s"
                ) from None
            out.seek(0)
            return out.read()

    def stop(self) -> None:
        """Stop the server if it runs; a crashed one (a stale pid file) is left to pg_rewind,
        which finishes its crash recovery itself."""
        if not (self._datadir / "postmaster.pid").exists():
            return
        for mode in ("fast", "immediate"):
            try:
                self.run("pg_ctl", "-D", str(self._datadir), "-m", mode, "-w", "-t", "60", "stop")
            except DatabaseUnavailable:
                continue
            return

    def start(self) -> None:
        log = self._datadir.with_name(f"{self._datadir.name}.log")
        self.run("pg_ctl", "-D", str(self._datadir), "-l", str(log), "-w", "-t", "60", "start")

    def own(self, *paths: Path) -> None:
        if self._owner is None:
            return
        for path in paths:
            if path.exists():
                os.chown(path, *self._owner)
