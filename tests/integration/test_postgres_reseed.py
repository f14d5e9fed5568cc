"""The failback's database steps on real PostgreSQL: the old primary, killed after writes the
replica never got, is re-seeded by the runbooks as a replica of the new primary, streams, and
catches up; without a data directory to work on, the answer is the steps for a person."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.database import (
    DatabaseActivities,
    DbCatchUpRequest,
    DbEpochRequest,
    DbReseedRequest,
)
from domain.topology import Topology
from lab import oms_db
from lab import postgres as lab_pg
from tests.postgres_pair import (
    PASSWORD,
    PRIMARY_ENV,
    REPLICA_ENV,
    env_for,
    running_pair,
    sql,
    wait_for,
)


@pytest.fixture
def pair() -> Iterator[lab_pg.PgPair]:
    with running_pair() as started:
        yield started


def topology(reseed: dict[str, Any] | None) -> Topology:
    database: dict[str, Any] = {
        "primary_dsn_env": PRIMARY_ENV,
        "replica_dsn_env": REPLICA_ENV,
        "timeout_s": 3.0,
    }
    if reseed is not None:
        database["reseed"] = reseed
    return Topology.model_validate(
        {
            "systems": [
                {
                    "name": "alpha-desk",
                    "primary_region": "primary",
                    "dr_region": "dr",
                    "primary_oms_url": "http://127.0.0.1:1",
                    "dr_oms_url": "http://127.0.0.1:2",
                    "venues": ["alpha"],
                    "dns": {
                        "zone": "lab.test.",
                        "record": "oms.lab.test.",
                        "primary_target": "p",
                        "dr_target": "d",
                    },
                    "database": database,
                }
            ],
            "venues": [{"name": "alpha", "url": "http://127.0.0.1:3", "api_key_env": "K"}],
        }
    )


async def diverge_and_promote(pair: lab_pg.PgPair, db: DatabaseActivities) -> None:
    """The primary writes what the replica never gets, dies; DR is promoted and writes on."""
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(100))
    lab_pg.wait_caught_up(pair, pair.dr)
    lab_pg.chaos_pause_replay(pair)
    await oms_db.set_risk_limit(pair.primary.dsn(), 1, "AAPL", Decimal(150))
    lab_pg.chaos_kill_primary(pair)
    await ActivityEnvironment().run(
        db.promote_db_replica, DbEpochRequest(system="alpha-desk", epoch=2)
    )
    await oms_db.set_risk_limit(pair.dr.dsn(), 2, "AAPL", Decimal(500))


async def test_the_runbooks_reseed_the_killed_old_primary_and_it_streams_the_new_timeline(
    pair: lab_pg.PgPair,
) -> None:
    db = DatabaseActivities(
        topology(
            {
                "data_dirs": {"primary": str(pair.primary.datadir)},
                "bin_dir": str(lab_pg._bin_dir()),
                "slot_prefix": "standby_",
            }
        ),
        env_for(pair),
    )
    await diverge_and_promote(pair, db)
    request = DbReseedRequest(system="alpha-desk", direction="failback", region="primary")

    reseed = await ActivityEnvironment().run(db.reseed_old_primary, request)

    assert reseed.method in ("pg_rewind", "pg_basebackup"), reseed
    assert PASSWORD not in reseed.detail
    caught_up = await ActivityEnvironment().run(
        db.await_db_caught_up,
        DbCatchUpRequest(system="alpha-desk", direction="failback", timeout_s=30),
    )
    assert caught_up.lag.replica_in_recovery and caught_up.lag.streaming
    assert caught_up.beyond_maximum is None
    await oms_db.set_risk_limit(pair.dr.dsn(), 2, "MSFT", Decimal(7))
    everything = "SELECT symbol, max_position, epoch FROM risk_parameters ORDER BY symbol"
    wait_for(lambda: sql(pair.primary, everything) == sql(pair.dr, everything))
    # Nothing of the old timeline survives (the 150 the replica never got is gone).
    assert (Decimal(150),) not in sql(pair.primary, "SELECT max_position FROM risk_parameters")
    # A retry finds it streaming and does nothing.
    again = await ActivityEnvironment().run(db.reseed_old_primary, request)
    assert again.method == "already_streaming"
    print(f"\n[reseed by the runbooks] {reseed.method}")


async def test_without_the_data_directory_the_reseed_is_the_steps_for_a_person(
    pair: lab_pg.PgPair,
) -> None:
    db = DatabaseActivities(topology(None), env_for(pair))
    await diverge_and_promote(pair, db)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            db.reseed_old_primary,
            DbReseedRequest(system="alpha-desk", direction="failback", region="primary"),
        )
    assert raised.value.non_retryable and raised.value.type == "DatabaseManualStep"
    assert "re-seed the old primary by hand" in raised.value.message
    assert "pg_rewind" in raised.value.message and PASSWORD not in raised.value.message
