"""The database port: what the promotion does with a system's OMS database.

A desk's OMS keeps state that never reaches the event stream (pending limit orders, risk
parameters changed through an operator API) in a primary database that streams to a DR replica.
The promotion checks how far the replica is behind, fences the primary's writers, promotes the
replica and has the DR OMS load that state. One adapter per database product implements
``DatabasePort`` (``adapters/databases/<name>.py``).

Pure: models, errors, the port and the lag judgement. No I/O, no clock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

# --- errors ------------------------------------------------------------------------------------


class DatabaseError(RuntimeError):
    """A database step failed. Messages never carry a DSN or a password."""


class DatabaseUnavailable(DatabaseError):
    """The database did not answer (refused, timed out, dropped) or is not yet in the state the
    step needs. Retryable: the step's retry policy decides how long to keep trying."""


class DatabaseConfigError(DatabaseError, ValueError):
    """The configuration cannot work: a DSN variable unset or not a DSN, an adapter this worker
    lacks, a schema without the epoch fence. Not retryable; the message names the variable or
    object to fix, never a secret value."""


# --- results -----------------------------------------------------------------------------------


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReplicaLag(_Result):
    """How far the DR replica is behind, measured from the DR side.

    ``bytes``: WAL received but not yet replayed. ``seconds``: age of the last replayed
    transaction when something is still waiting to be replayed, 0 when everything received has
    been replayed (with no recent writes the last replay is old, but nothing is missing).
    ``unreceived_bytes``: WAL the primary has written that the replica has not received, when
    the primary answers (None when it does not: then nobody can know, which is the RPO risk).
    """

    bytes: int = Field(ge=0)
    seconds: float = Field(ge=0)
    replica_in_recovery: bool
    primary_reachable: bool
    replay_paused: bool = False
    unreceived_bytes: int | None = None
    # Its WAL receiver streams from an upstream (None: not measured, e.g. an older reading).
    streaming: bool | None = None


class DbFence(_Result):
    """The outcome of fencing the database at ``epoch``: writes of lower epochs are refused by
    every database that was reachable. ``detail`` says where the fence holds and why not
    elsewhere (a dead primary is reported here, not raised)."""

    epoch: int
    fenced_at_primary: bool
    fenced_at_replica: bool = False
    detail: str


class DbPromotion(_Result):
    """``promoted``: the replica is now a primary accepting writes of ``epoch`` onwards.
    ``already_primary``: it was already promoted (a retry), nothing was done this time."""

    promoted: bool
    already_primary: bool
    timeline: int
    epoch: int


class PendingOrder(_Result):
    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    limit_price: Decimal | None
    epoch: int
    updated_at: datetime


class RiskParameter(_Result):
    symbol: str
    max_position: Decimal
    max_order_qty: Decimal | None
    epoch: int
    updated_at: datetime


class DbState(_Result):
    """What the DR OMS loads from the promoted database."""

    pending_orders: list[PendingOrder]
    risk_parameters: list[RiskParameter]

    @property
    def last_change_at(self) -> datetime | None:
        times = [o.updated_at for o in self.pending_orders] + [
            r.updated_at for r in self.risk_parameters
        ]
        return max(times, default=None)


class DbStateSummary(_Result):
    """A history-sized summary of ``DbState`` for the promotion report: the DR OMS loads the
    rows itself; the runbook records what there was."""

    pending_orders: int
    risk_parameters: int
    last_change_at: datetime | None
    symbols: list[str]

    @classmethod
    def of(cls, state: DbState) -> DbStateSummary:
        symbols = {o.symbol for o in state.pending_orders} | {
            r.symbol for r in state.risk_parameters
        }
        return cls(
            pending_orders=len(state.pending_orders),
            risk_parameters=len(state.risk_parameters),
            last_change_at=state.last_change_at,
            symbols=sorted(symbols),
        )


class DatabaseManualStep(DatabaseError):
    """A step the runbooks cannot take from where they run (the failback's re-seed when the
    old primary's data directory is not on this worker's host). Not retryable: the message is
    the steps for a person, after which the runbook is run again."""


class ReseedTarget(_Result):
    """Where the server to re-seed keeps its data, on the host the re-seed runs on."""

    data_dir: str
    # PostgreSQL's programs (pg_ctl, pg_rewind, pg_basebackup); None: found on PATH.
    bin_dir: str | None = None
    # The physical replication slot it streams through on the primary (created if absent).
    slot: str


class DbReseed(_Result):
    """The failback's re-seed: how the old primary became a replica of the new primary.

    ``already_streaming``: nothing to do. ``pg_rewind``: only what diverged was copied.
    ``pg_basebackup``: a fresh copy (rewind could not; the old directory is kept beside it).
    ``no_database``: the system has none; the step was skipped."""

    method: Literal["already_streaming", "pg_rewind", "pg_basebackup", "no_database"]
    detail: str


def manual_reseed_steps(replica_variable: str) -> str:
    """What a person does when the runbooks cannot re-seed the old primary themselves."""
    return (
        f"re-seed the old primary by hand (the database named by {replica_variable}), then run "
        "the failback again: 1. stop its server; 2. on its host, as its OS user: pg_rewind -D "
        "<data dir> --source-server='<new primary conninfo>' (if that fails: move the data dir "
        "aside and pg_basebackup -d '<new primary conninfo>' -D <data dir> -X stream -S <slot> "
        "-c fast); 3. restore its own postgresql.conf/pg_hba.conf, set primary_conninfo and "
        "primary_slot_name, touch standby.signal; 4. start it and check pg_stat_wal_receiver "
        "says streaming. To let the runbooks do this, run the region's worker on that host and "
        "name the data directory in [systems.database.reseed]"
    )


def lag_beyond_maximum(lag: ReplicaLag, max_bytes: int, max_seconds: float) -> str | None:
    """Why promoting this replica would lose more than the system tolerates, or None.

    The promotion's gate asks an operator when this returns a reason; it never decides alone.
    """
    reasons = []
    if lag.bytes > max_bytes:
        reasons.append(f"{lag.bytes} bytes not yet replayed (maximum {max_bytes})")
    if lag.unreceived_bytes is not None and lag.unreceived_bytes > max_bytes:
        reasons.append(f"{lag.unreceived_bytes} bytes not yet received (maximum {max_bytes})")
    if lag.seconds > max_seconds:
        reasons.append(f"replay {lag.seconds:.1f} s behind (maximum {max_seconds:g} s)")
    return "; ".join(reasons) or None


# --- the port ----------------------------------------------------------------------------------


class DatabasePort(Protocol):
    """A system's primary database and its DR replica, sorted by what each call guarantees.

    Read-only, safe to repeat:
        ``replica_lag``      measured from the replica; the primary is asked only for how much
                             WAL it has written, and may be dead.
        ``load_state``       pending orders and risk parameters from the (promoted) replica.
    Idempotent writes (repeating one with the same epoch changes nothing):
        ``fence_primary``    raise the minimum writer epoch to ``epoch`` on every reachable
                             database, checked by the database inside each write transaction.
                             Best effort on the primary: a dead primary is reported in the
                             result, not raised.
        ``promote_replica``  promote the replica and fence it at ``epoch``; a replica already
                             promoted reports ``already_primary``.
        ``reseed_replica``   (the failback) make the replica side a streaming replica of the
                             primary side again: nothing if it already streams from it, else
                             rewound or copied afresh on ``target``'s host. Without a target the
                             runbooks cannot reach its data: DatabaseManualStep with the steps.
    Best effort:
        ``close``            never raises.

    Unreachable databases raise DatabaseUnavailable; configuration problems DatabaseConfigError;
    a step only a person can take DatabaseManualStep.
    """

    async def replica_lag(self) -> ReplicaLag: ...

    async def fence_primary(self, epoch: int) -> DbFence: ...

    async def promote_replica(self, epoch: int) -> DbPromotion: ...

    async def load_state(self) -> DbState: ...

    async def reseed_replica(self, target: ReseedTarget | None) -> DbReseed: ...

    async def close(self) -> None: ...
