"""The lab's PostgreSQL pair and the database activities, on real servers from the wheel.

Scenarios: the pair streams; ``chaos lag db`` shows as lag and heals; the fence is enforced by
the database over plain SQL; an old primary brought back after a promotion cannot commit a
write; the failback re-seeds it and it streams; the activities turn errors into retry
decisions without a secret in sight.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.database import DatabaseActivities, DbEpochRequest, DbStepRequest
from domain.topology import Topology
from lab import oms_db
from lab import postgres as lab_pg
from lab.oms_schema import STALE_EPOCH_SQLSTATE
from tests.postgres_pair import (
    PASSWORD,
    PRIMARY_ENV,
    REPLICA_ENV,
    Timings,
    env_for,
    running_pair,
    sql,
    wait_for,
)

READ_ONLY_SQL_TRANSACTION = "25006"


@pytest.fixture
def pair() -> Iterator[lab_pg.PgPair]:
    with running_pair() as started:
        yield started


def replica_has(pair: lab_pg.PgPair, symbol: str, max_position: int) -> bool:
    rows = sql(pair.dr, "SELECT max_position FROM risk_parameters WHERE symbol = %s", symbol)
    return rows == [(Decimal(max_position),)]


def topology(max_lag_bytes: int = 1_048_576) -> Topology:
    return Topology.model_validate(
        {
            "systems": [
                {
                    "name": "alpha-desk",
                    "primary_oms_url": "http://127.0.0.1:1",
                    "dr_oms_url": "http://127.0.0.1:2",
                    "venues": ["alpha"],
                    "dns": {
                        "zone": "lab.test.",
                        "record": "oms.lab.test.",
                        "primary_target": "p",
                        "dr_target": "d",
                    },
                    "database": {
                        "primary_dsn_env": PRIMARY_ENV,
                        "replica_dsn_env": REPLICA_ENV,
                        "max_lag_on_failover_bytes": max_lag_bytes,
                        "timeout_s": 3.0,
                    },
                }
            ],
            "venues": [{"name": "alpha", "url": "http://127.0.0.1:3", "api_key_env": "K"}],
        }
    )


async def test_a_write_on_the_primary_appears_on_the_replica(pair: lab_pg.PgPair) -> None:
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(100))
    took = wait_for(lambda: replica_has(pair, "AAPL", 100), timeout_s=10)
    assert [s.role for s in lab_pg.pair_status(pair)] == ["primary", "replica"]
    print(f"\n[replication] visible on the replica after {took * 1000:.0f} ms")


async def test_lag_shows_while_replay_is_paused_and_clears_after_resume(
    pair: lab_pg.PgPair,
) -> None:
    db = DatabaseActivities(topology(max_lag_bytes=100), env_for(pair))
    request = DbStepRequest(system="alpha-desk")
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(100))
    lab_pg.wait_caught_up(pair, pair.dr)
    lab_pg.chaos_pause_replay(pair)
    try:
        await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(200))
        # Received (streaming continues) but not replayed.
        wait_for(lambda: (lab_pg.replica_lag(pair.dr) or _no_lag()).bytes > 0)
        paused = await ActivityEnvironment().run(db.check_db_replica, request)
        assert paused.lag.bytes > 0 and paused.lag.seconds > 0 and paused.lag.replay_paused
        assert paused.beyond_maximum is not None and "not yet replayed" in paused.beyond_maximum
        assert not replica_has(pair, "AAPL", 200)
    finally:
        lab_pg.resume_replay(pair)
    wait_for(lambda: replica_has(pair, "AAPL", 200))
    healed = await ActivityEnvironment().run(db.check_db_replica, request)
    assert healed.lag.bytes == 0 and healed.lag.seconds == 0.0 and not healed.lag.replay_paused
    assert healed.beyond_maximum is None


def _no_lag() -> lab_pg.ReplicaLag:
    raise AssertionError("the DR node is not running as a replica")


async def test_after_the_fence_an_old_epoch_write_is_refused_over_sql_and_the_new_accepted(
    pair: lab_pg.PgPair,
) -> None:
    db = DatabaseActivities(topology(), env_for(pair))
    sql(pair.primary, "SELECT * FROM oms_write_risk_limit(1, 'AAPL', 100)")
    fence = await ActivityEnvironment().run(
        db.fence_db_primary, DbEpochRequest(system="alpha-desk", epoch=2)
    )
    assert fence.fenced_at_primary and fence.epoch == 2
    for statement in (
        "SELECT * FROM oms_write_risk_limit(1, 'AAPL', 1)",
        # Straight to the table, bypassing the function: the trigger holds the same line.
        "INSERT INTO risk_parameters (symbol, max_position, epoch) VALUES ('MSFT', 1, 1)",
        "UPDATE risk_parameters SET max_position = 1 WHERE symbol = 'AAPL'",
    ):
        with pytest.raises(psycopg.Error) as refused:
            sql(pair.primary, statement)
        assert refused.value.sqlstate == STALE_EPOCH_SQLSTATE, statement
        assert refused.value.diag.message_primary == (
            "stale epoch 1: this database is fenced at epoch 2"
        )
    with pytest.raises(psycopg.Error) as no_epoch:
        sql(pair.primary, "DELETE FROM risk_parameters")
    assert no_epoch.value.sqlstate == "DR002"
    sql(pair.primary, "SELECT * FROM oms_write_risk_limit(2, 'AAPL', 300)")
    assert sql(pair.primary, "SELECT max_position, epoch FROM risk_parameters") == [
        (Decimal(300), 2)
    ]
    # The fence replicates: the replica, once promoted, refuses epoch 1 as well.
    wait_for(lambda: sql(pair.dr, "SELECT epoch FROM dr_epoch") == [(2,)])


async def test_the_old_primary_brought_back_after_promotion_cannot_commit_an_old_epoch_write(
    pair: lab_pg.PgPair, capsys: pytest.CaptureFixture[str]
) -> None:
    timings = Timings()
    db = DatabaseActivities(topology(), env_for(pair))
    request = DbEpochRequest(system="alpha-desk", epoch=2)
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(100))
    lab_pg.wait_caught_up(pair, pair.dr)
    lab_pg.chaos_kill_primary(pair)  # killed before the fence: its dr_epoch stays at 0
    env = ActivityEnvironment()
    with timings.measure("check"):
        check = await env.run(db.check_db_replica, DbStepRequest(system="alpha-desk"))
    with timings.measure("fence"):
        fence = await env.run(db.fence_db_primary, request)
    with timings.measure("promote"):
        promotion = await env.run(db.promote_db_replica, request)
    with timings.measure("load"):
        state = await env.run(db.load_db_state, DbStepRequest(system="alpha-desk"))
    assert not check.lag.primary_reachable and not fence.fenced_at_primary
    assert promotion.promoted and state.risk_parameters == 1 and state.symbols == ["AAPL"]

    # heal: the lab brings the old primary back only as a standby of the promoted node.
    assert lab_pg.start_node(pair, pair.primary) == "replica"
    assert sql(pair.primary, "SELECT epoch FROM dr_epoch") == [(0,)]  # its table is stale...
    for statement in (
        "SELECT * FROM oms_write_risk_limit(1, 'AAPL', 1)",
        "INSERT INTO risk_parameters (symbol, max_position, epoch) VALUES ('X', 1, 1)",
    ):
        with pytest.raises(psycopg.Error) as refused:  # ...yet nothing commits there
            sql(pair.primary, statement)
        assert refused.value.sqlstate == READ_ONLY_SQL_TRANSACTION
    # Not a setting a client can turn off (unlike default_transaction_read_only).
    with (
        psycopg.connect(pair.primary.dsn(), autocommit=False) as conn,
        pytest.raises(psycopg.Error) as unset,
    ):
        conn.execute("SET transaction_read_only = off")
    assert "cannot set transaction read-write mode during recovery" in str(unset.value)
    # The new primary took the write path over at the new epoch.
    await oms_db.set_risk_limit(pair.dr.dsn(), 2, "AAPL", Decimal(400))
    with pytest.raises(oms_db.StaleEpoch):
        await oms_db.set_risk_limit(pair.dr.dsn(), 1, "AAPL", Decimal(1))
    with capsys.disabled():
        print(f"\n[database activity timings, primary killed] {timings.line()}")


async def test_the_old_primary_is_reseeded_as_a_replica_of_the_new_primary_and_streams(
    pair: lab_pg.PgPair,
) -> None:
    db = DatabaseActivities(topology(), env_for(pair))
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(100))
    lab_pg.wait_caught_up(pair, pair.dr)
    # Writes the replica never gets: the old primary diverges from the new timeline.
    lab_pg.chaos_pause_replay(pair)
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(150))
    lab_pg.chaos_kill_primary(pair)
    await ActivityEnvironment().run(
        db.promote_db_replica, DbEpochRequest(system="alpha-desk", epoch=2)
    )
    await oms_db.set_risk_limit(pair.dr.dsn(), 2, "AAPL", Decimal(500))

    method = lab_pg.reseed_as_replica(pair, pair.primary)
    assert method in ("pg_rewind", "pg_basebackup")
    assert [s.role for s in lab_pg.pair_status(pair)] == ["replica", "primary"]
    await oms_db.set_risk_limit(pair.dr.dsn(), 2, "MSFT", Decimal(7))
    wait_for(
        lambda: (
            sql(pair.primary, "SELECT max_position FROM risk_parameters ORDER BY symbol")
            == [(Decimal(500),), (Decimal(7),)]
        )
    )
    # Nothing of the old timeline survives on it: it holds exactly what the new primary holds.
    everything = "SELECT symbol, max_position, epoch FROM risk_parameters ORDER BY symbol"
    assert sql(pair.primary, everything) == sql(pair.dr, everything)
    # Failback's check from the other side: the re-seeded primary-site node is the replica.
    failback = await ActivityEnvironment().run(
        db.check_db_replica, DbStepRequest(system="alpha-desk", direction="failback")
    )
    assert failback.lag.replica_in_recovery and failback.lag.primary_reachable
    print(f"\n[reseed] {method}")


async def test_an_unset_dsn_variable_fails_the_step_for_good_naming_it() -> None:
    db = DatabaseActivities(topology(), {REPLICA_ENV: "host=127.0.0.1 port=1"})
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(db.check_db_replica, DbStepRequest(system="alpha-desk"))
    assert raised.value.non_retryable and raised.value.type == "DatabaseConfigError"
    assert f"environment variable {PRIMARY_ENV} is not set" in raised.value.message


async def test_an_unreachable_replica_is_retried_and_its_password_never_shows() -> None:
    env = {
        PRIMARY_ENV: f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/oms",
        REPLICA_ENV: f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/oms",
    }
    db = DatabaseActivities(topology(), env)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            db.promote_db_replica, DbEpochRequest(system="alpha-desk", epoch=2)
        )
    assert not raised.value.non_retryable and raised.value.type == "DatabaseUnavailable"
    assert REPLICA_ENV in raised.value.message and PASSWORD not in raised.value.message
    fence = await ActivityEnvironment().run(
        db.fence_db_primary, DbEpochRequest(system="alpha-desk", epoch=2)
    )
    assert PASSWORD not in fence.model_dump_json()
