"""Advisory locks on a real PostgreSQL, between engines (as between processes on two hosts):
one holder at a time, waiters get their turn, a holder's dropped connection frees the lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from ragd.db.engine import Database
from ragd.db.locks import AdvisoryLeadership, advisory_lock
from tests.postgres import PostgresServer
from tests.waiting import HANG_TIMEOUT, eventually

NAME = "test:lock"


@pytest.fixture
async def engines(postgres: PostgresServer) -> AsyncIterator[list[Database]]:
    url = await postgres.fresh_database("locks")
    dbs = [Database(url) for _ in range(4)]
    try:
        yield dbs
    finally:
        for db in dbs:
            await db.dispose()


async def test_advisory_lock_admits_one_holder_at_a_time(engines: list[Database]) -> None:
    inside: list[int] = []
    most = 0

    async def hold(db: Database, n: int) -> None:
        nonlocal most
        async with advisory_lock(db, NAME):
            inside.append(n)
            most = max(most, len(inside))
            async with db.read() as s:  # real I/O while holding: the others run meanwhile
                await s.execute(text("SELECT pg_sleep(0)"))
            inside.remove(n)

    async with asyncio.timeout(HANG_TIMEOUT):
        await asyncio.gather(*(hold(db, n) for n, db in enumerate(engines) for _ in range(3)))
    assert most == 1 and not inside


async def test_a_waiter_gets_the_lock_when_the_holder_lets_go(engines: list[Database]) -> None:
    first, second = engines[:2]
    entered = asyncio.Event()
    async with advisory_lock(first, NAME):
        waiter = asyncio.create_task(_enter(second, entered))
        probe = AdvisoryLeadership(engines[2], NAME)
        assert await probe.acquire() is False  # held, and the waiter is still waiting
        assert not entered.is_set()
    async with asyncio.timeout(HANG_TIMEOUT):
        await waiter
    assert entered.is_set()
    assert await probe.acquire() is True  # released after the waiter's block as well
    await probe.release()


async def _enter(db: Database, entered: asyncio.Event) -> None:
    async with advisory_lock(db, NAME):
        entered.set()


async def test_a_lock_whose_connection_dies_is_free_again(
    engines: list[Database], postgres: PostgresServer
) -> None:
    leader, other = AdvisoryLeadership(engines[0], NAME), AdvisoryLeadership(engines[1], NAME)
    assert await leader.acquire() is True
    assert await other.acquire() is False
    database = engines[0].engine.url.database
    assert database is not None
    await postgres.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks "
        "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()",
        database,
    )
    assert await eventually(other.acquire, what="the lock is free once its session ended")
    assert await leader.acquire() is False
    assert not leader.held
    await other.release()
    assert await leader.acquire() is True  # released properly: free for the next one
    await leader.release()
