"""The database port contract (``DatabasePort`` in domain/database.py), run against every
database adapter on its lab counterpart. Adding an adapter = one parameter below.

Each scenario reads as what a person on call would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from adapters.databases import database_adapters, open_database
from domain.database import DatabaseConfigError, DatabasePort, DatabaseUnavailable
from lab import oms_db
from lab import postgres as lab_pg
from lab.oms_schema import STALE_EPOCH_SQLSTATE
from tests.postgres_pair import (
    PASSWORD,
    PRIMARY_ENV,
    REPLICA_ENV,
    Timings,
    config,
    env_for,
    running_pair,
    sql,
    wait_for,
)

ADAPTERS = ["postgres"]


def test_every_adapter_is_in_this_suite() -> None:
    assert sorted(ADAPTERS) == database_adapters()


@pytest.fixture(params=ADAPTERS)
def pair(request: pytest.FixtureRequest) -> Iterator[lab_pg.PgPair]:
    # Every scenario gets its own pair: promotion and kills do not undo.
    with running_pair() as started:
        yield started


def database(pair: lab_pg.PgPair) -> DatabasePort:
    return open_database(config(), env_for(pair))


async def test_a_healthy_replica_reports_no_lag(pair: lab_pg.PgPair) -> None:
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(100))
    lab_pg.wait_caught_up(pair, pair.dr)
    lag = await database(pair).replica_lag()
    assert lag.replica_in_recovery and lag.primary_reachable
    assert lag.bytes == 0 and lag.seconds == 0.0
    assert lag.unreceived_bytes == 0


async def test_the_fence_refuses_older_epochs_in_the_database_and_never_goes_back(
    pair: lab_pg.PgPair,
) -> None:
    db = database(pair)
    await oms_db.set_risk_limit(pair.primary.dsn(), 3, "AAPL", Decimal(100))
    fence = await db.fence_primary(4)
    assert fence.epoch == 4 and fence.fenced_at_primary and not fence.fenced_at_replica
    with pytest.raises(oms_db.StaleEpoch, match=r"stale epoch 3: .* fenced at epoch 4"):
        await oms_db.set_risk_limit(pair.primary.dsn(), 3, "AAPL", Decimal(1))
    # A fence with an older epoch (a late retry of an earlier promotion) lowers nothing.
    again = await db.fence_primary(2)
    assert again.fenced_at_primary and "below 4" in again.detail
    assert sql(pair.primary, "SELECT epoch FROM dr_epoch") == [(4,)]


async def test_a_dead_primary_is_reported_not_raised_when_fencing(pair: lab_pg.PgPair) -> None:
    lab_pg.chaos_kill(pair.primary)
    fence = await database(pair).fence_primary(2)
    assert not fence.fenced_at_primary
    assert f"primary database ({PRIMARY_ENV}) unreachable" in fence.detail
    assert "replica" in fence.detail and PASSWORD not in fence.detail


async def test_promotion_happens_once_and_fences_the_promoted_side(
    pair: lab_pg.PgPair, capsys: pytest.CaptureFixture[str]
) -> None:
    timings = Timings()
    db = database(pair)
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "MSFT", Decimal(50))
    await oms_db.add_pending_order(
        pair.primary.dsn(), 1, "E1-a", "MSFT", "buy", Decimal(5), Decimal("10.5")
    )
    lab_pg.wait_caught_up(pair, pair.dr)
    with timings.measure("check"):
        lag = await db.replica_lag()
    assert lag.replica_in_recovery
    with timings.measure("fence"):
        await db.fence_primary(2)
    lab_pg.chaos_kill(pair.primary)
    with timings.measure("promote"):
        first = await db.promote_replica(2)
    second = await db.promote_replica(2)
    with timings.measure("load"):
        state = await db.load_state()
    assert first.promoted and not first.already_primary and first.timeline == 2
    assert second.promoted and second.already_primary and second.timeline == 2
    assert [r.symbol for r in state.risk_parameters] == ["MSFT"]
    assert [o.client_order_id for o in state.pending_orders] == ["E1-a"]
    # The promoted side refuses the old epoch even though the primary died.
    with pytest.raises(psycopg.Error) as refused:
        sql(pair.dr, "SELECT * FROM oms_write_risk_limit(1, 'MSFT', 1)")
    assert refused.value.sqlstate == STALE_EPOCH_SQLSTATE
    assert (await db.replica_lag()).replica_in_recovery is False
    with capsys.disabled():
        print(f"\n[database timings] {timings.line()}")


async def test_an_unreachable_replica_is_retryable_and_names_no_secret(
    pair: lab_pg.PgPair,
) -> None:
    lab_pg.chaos_kill(pair.dr)
    with pytest.raises(DatabaseUnavailable) as raised:
        await database(pair).promote_replica(2)
    assert f"replica database ({REPLICA_ENV}) unreachable" in str(raised.value)
    assert PASSWORD not in str(raised.value) and "postgresql://" not in str(raised.value)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("variable", [PRIMARY_ENV, REPLICA_ENV])
def test_an_unset_dsn_variable_is_named(adapter: str, variable: str) -> None:
    env = {PRIMARY_ENV: "postgresql://u@127.0.0.1:1/db", REPLICA_ENV: "host=127.0.0.1 port=1"}
    del env[variable]
    with pytest.raises(DatabaseConfigError, match=f"environment variable {variable} is not set"):
        open_database(config(adapter=adapter), env)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_invalid_dsn_is_named_without_its_value(adapter: str) -> None:
    bad = f"host=127.0.0.1 password={PASSWORD} port"
    env = {PRIMARY_ENV: bad, REPLICA_ENV: "host=127.0.0.1"}
    with pytest.raises(DatabaseConfigError) as raised:
        open_database(config(adapter=adapter), env)
    assert PRIMARY_ENV in str(raised.value) and PASSWORD not in str(raised.value)


def test_wait_helper_fails_when_the_condition_never_holds() -> None:
    with pytest.raises(AssertionError):
        wait_for(lambda: False, timeout_s=0.05)
