"""Database activities for the promotion: check the DR replica, fence the primary's writers,
promote the replica, load the state the DR OMS needs. They run where the DR side runs.

Each is a thin wrapper: topology -> the system's ``[systems.database]`` -> the adapter named
there -> one call -> a small result that is safe for workflow history (no DSN, no password:
the DSNs stay in the worker's environment). The one place a database's typed errors become
Temporal's retry decisions:

- ``DatabaseUnavailable`` (refused, timed out, promotion still running): retryable; the step's
  retry policy, written next to the call in the workflow, decides how long before paging.
- ``DatabaseConfigError`` (a DSN variable unset or invalid, no epoch fence installed): not
  retryable; the message names the variable or object to fix.

Every activity is idempotent: the check and the load only read; the fence is monotonic (the
same epoch twice changes nothing); a second promotion reports ``already_primary``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from adapters.databases import open_database
from domain.database import (
    DatabaseConfigError,
    DatabaseManualStep,
    DatabasePort,
    DatabaseUnavailable,
    DbFence,
    DbPromotion,
    DbReseed,
    DbStateSummary,
    ReplicaLag,
    ReseedTarget,
    lag_beyond_maximum,
)
from domain.topology import DatabaseConfig, Topology

DATABASE_UNAVAILABLE_ERROR = "DatabaseUnavailable"
DATABASE_CONFIG_ERROR = "DatabaseConfigError"
DATABASE_MANUAL_STEP = "DatabaseManualStep"
# How often the failback's catch-up wait reads the re-seeded replica's lag.
CATCH_UP_POLL_S = 0.5


class DbStepRequest(BaseModel):
    system: str
    # A failback runs the same steps the other way: the DR database is the one fenced and the
    # primary site's (re-seeded) database the one promoted.
    direction: Literal["failover", "failback"] = "failover"


class DbEpochRequest(DbStepRequest):
    epoch: int = Field(ge=1)


class DbReseedRequest(DbStepRequest):
    # The region whose database is re-seeded (for the failback: the primary's); its data
    # directory is looked up in ``[systems.database.reseed]``.
    region: str


class DbCatchUpRequest(DbStepRequest):
    timeout_s: float = Field(gt=0)


def directed(config: DatabaseConfig, direction: Literal["failover", "failback"]) -> DatabaseConfig:
    """The pair as a step sees it: a failback's primary is the DR site's database (promoted),
    its replica the primary site's."""
    if direction == "failover":
        return config
    return config.model_copy(
        update={
            "primary_dsn_env": config.replica_dsn_env,
            "replica_dsn_env": config.primary_dsn_env,
        }
    )


class DbReplicaCheck(BaseModel):
    """``check_db_replica``'s answer: the lag, the system's maxima, and why promoting would
    lose more than they allow (None: within them). The gate asks an operator on a reason."""

    lag: ReplicaLag
    max_lag_bytes: int
    max_lag_s: float
    beyond_maximum: str | None


def database_failure(
    exc: DatabaseUnavailable | DatabaseConfigError | DatabaseManualStep,
) -> ApplicationError:
    if isinstance(exc, DatabaseManualStep):
        return ApplicationError(str(exc), type=DATABASE_MANUAL_STEP, non_retryable=True)
    if isinstance(exc, DatabaseConfigError):
        return ApplicationError(
            f"{exc}; fix the topology or this worker's environment, then retry the step",
            type=DATABASE_CONFIG_ERROR,
            non_retryable=True,
        )
    return ApplicationError(str(exc), type=DATABASE_UNAVAILABLE_ERROR)


class DatabaseActivities:
    def __init__(self, topology: Topology, env: Mapping[str, str] | None = None) -> None:
        self._topology = topology
        # Where the DSN variables are read: the worker's environment unless a test says so.
        self._env = env

    @asynccontextmanager
    async def _database(self, request: DbStepRequest) -> AsyncIterator[DatabasePort]:
        try:
            system = self._topology.system(request.system)
        except KeyError as exc:
            raise ApplicationError(
                f"{exc.args[0]}; the topology this worker loaded does not know the system",
                type="UnknownSystem",
                non_retryable=True,
            ) from None
        config = system.database
        if config is None:
            raise ApplicationError(
                f"system {request.system!r} has no [systems.database]; the promotion skips "
                "the database steps for it",
                type=DATABASE_CONFIG_ERROR,
                non_retryable=True,
            )
        config = directed(config, request.direction)
        try:
            database = open_database(config, self._env)
        except (DatabaseUnavailable, DatabaseConfigError) as exc:
            raise database_failure(exc) from None
        try:
            yield database
        except (DatabaseUnavailable, DatabaseConfigError, DatabaseManualStep) as exc:
            raise database_failure(exc) from None
        finally:
            await database.close()

    def _maxima(self, system: str) -> tuple[int, float]:
        config = self._topology.system(system).database
        assert config is not None  # _database() refused a system without one
        return config.max_lag_on_failover_bytes, config.max_lag_on_failover_s

    @activity.defn(name="check_db_replica")
    async def check_db_replica(self, request: DbStepRequest) -> DbReplicaCheck:
        """The DR replica's lag, from the DR side, against the system's maxima. Read-only."""
        async with self._database(request) as database:
            lag = await database.replica_lag()
        max_bytes, max_s = self._maxima(request.system)
        return DbReplicaCheck(
            lag=lag,
            max_lag_bytes=max_bytes,
            max_lag_s=max_s,
            beyond_maximum=lag_beyond_maximum(lag, max_bytes, max_s),
        )

    @activity.defn(name="fence_db_primary")
    async def fence_db_primary(self, request: DbEpochRequest) -> DbFence:
        """Writes below ``epoch`` refused by every reachable database; a dead primary is
        reported in the result (the lease and its return as a replica fence it)."""
        async with self._database(request) as database:
            return await database.fence_primary(request.epoch)

    @activity.defn(name="promote_db_replica")
    async def promote_db_replica(self, request: DbEpochRequest) -> DbPromotion:
        """Promote the replica and fence it at ``epoch``. A retry after a promotion whose
        result was lost reports ``already_primary``: the replica is promoted once."""
        async with self._database(request) as database:
            return await database.promote_replica(request.epoch)

    @activity.defn(name="load_db_state")
    async def load_db_state(self, request: DbStepRequest) -> DbStateSummary:
        """What the promoted database holds for the DR OMS (counts, symbols, last change).
        The DR OMS loads the rows itself; this records what there was for the report."""
        async with self._database(request) as database:
            state = await database.load_state()
        return DbStateSummary.of(state)

    @activity.defn(name="reseed_old_primary")
    async def reseed_old_primary(self, request: DbReseedRequest) -> DbReseed:
        """Make the old primary's database a streaming replica of the new primary (the
        failback's first database step). A system without a database: nothing to do, said so.
        Without ``[systems.database.reseed]`` for the region the answer is the manual steps."""
        try:
            config = self._topology.system(request.system).database
        except KeyError as exc:
            raise ApplicationError(str(exc.args[0]), non_retryable=True) from None
        if config is None:
            return DbReseed(
                method="no_database",
                detail=f"system {request.system!r} has no [systems.database]: nothing to re-seed",
            )
        target = reseed_target(config, request.region)
        async with self._database(request) as database:
            return await database.reseed_replica(target)

    @activity.defn(name="await_db_caught_up")
    async def await_db_caught_up(self, request: DbCatchUpRequest) -> DbReplicaCheck:
        """Wait until the replica streams and its lag is within the system's maxima; retryable
        when it is not there by ``timeout_s`` (the step's retry policy bounds the whole wait)."""
        max_bytes, max_s = self._maxima(request.system)
        deadline = time.monotonic() + request.timeout_s
        async with self._database(request) as database:
            while True:
                lag = await database.replica_lag()
                beyond = lag_beyond_maximum(lag, max_bytes, max_s)
                waiting = _not_caught_up(lag, beyond)
                activity.heartbeat(waiting)
                if waiting is None:
                    return DbReplicaCheck(
                        lag=lag, max_lag_bytes=max_bytes, max_lag_s=max_s, beyond_maximum=None
                    )
                if time.monotonic() >= deadline:
                    raise DatabaseUnavailable(
                        f"the re-seeded replica has not caught up within {request.timeout_s:g} "
                        f"s: {waiting}"
                    )
                await asyncio.sleep(CATCH_UP_POLL_S)


def _not_caught_up(lag: ReplicaLag, beyond: str | None) -> str | None:
    if not lag.replica_in_recovery:
        return "the replica is not in recovery (it runs as a primary)"
    if lag.streaming is False:
        return "the replica does not stream from the primary yet"
    if lag.replay_paused:
        return "replay is paused on the replica"
    return beyond


def reseed_target(config: DatabaseConfig, region: str) -> ReseedTarget | None:
    """Where the region's server keeps its data on that region's worker host, if configured."""
    reseed = config.reseed
    if reseed is None or region not in reseed.data_dirs:
        return None
    return ReseedTarget(
        data_dir=str(reseed.data_dirs[region]),
        bin_dir=str(reseed.bin_dir) if reseed.bin_dir else None,
        slot=f"{reseed.slot_prefix}{region}",
    )
