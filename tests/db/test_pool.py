"""The PostgreSQL pool on a real server: statements without a transaction, custom plans on
every connection, and a connection that died while pooled (a restart, a proxy's timeout)
replaced without a ping at every checkout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ragd.db.engine import PING_AFTER_IDLE_SECONDS, Database
from tests.postgres import PostgresServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def url(postgres: PostgresServer) -> str:
    return await postgres.fresh_database("pool")


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def db(url: str, clock: Clock) -> AsyncIterator[Database]:
    database = Database(url, clock=clock)
    try:
        yield database
    finally:
        await database.dispose()


async def _backend_pids(db: Database) -> set[int]:
    async with db.statements() as conn:
        return {int(pid) for pid in (await conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'ragd'"
        ))).scalars()}


async def _kill_pooled(db: Database, postgres: PostgresServer) -> None:
    """Terminate every server process of ``db``'s pool, as a restart would, and wait until
    they are gone (terminating is asynchronous)."""
    pids = await _backend_pids(db)
    assert pids
    database = db.url.rsplit("/", 1)[1]
    await postgres.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN "  # noqa: S608
        f"({', '.join(map(str, pids))})", database,
    )
    await postgres.execute(  # returns once none of them is listed any more
        "DO $$ BEGIN WHILE EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid IN "  # noqa: S608
        f"({', '.join(map(str, pids))})) LOOP PERFORM pg_sleep(0.01); END LOOP; END $$",
        database,
    )


async def test_statements_run_each_in_its_own_transaction(db: Database) -> None:
    async with db.statements() as conn:
        first = (await conn.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
        second = (await conn.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
    assert first != second
    async with db.read() as s:
        first = (await s.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
        second = (await s.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
    assert first == second


async def test_every_connection_plans_for_the_values_at_hand(db: Database) -> None:
    async with db.statements() as conn, db.read() as s:
        assert (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one() == (
            "force_custom_plan")
        assert (await s.execute(text("SHOW plan_cache_mode"))).scalar_one() == (
            "force_custom_plan")


async def test_a_connection_idle_past_the_limit_is_pinged_and_replaced(
    db: Database, clock: Clock, postgres: PostgresServer
) -> None:
    before = await _backend_pids(db)
    await _kill_pooled(db, postgres)
    clock.now += PING_AFTER_IDLE_SECONDS  # every pooled connection has idled long enough
    for _ in range(3):
        async with db.read() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
        async with db.statements() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    assert not (await _backend_pids(db)) & before


async def test_a_connection_used_moments_ago_is_not_pinged_and_its_loss_costs_one_statement(
    db: Database, postgres: PostgresServer
) -> None:
    await _backend_pids(db)
    await _kill_pooled(db, postgres)
    # The clock has not moved: the dead connection is handed out as it is, its statement
    # fails as a lost connection, and the pool drops it and every connection as old.
    with pytest.raises(DBAPIError) as failed:
        async with db.statements() as conn:
            await conn.execute(text("SELECT 1"))
    assert failed.value.connection_invalidated
    for _ in range(3):
        async with db.read() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
