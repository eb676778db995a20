"""Change logs are read "after seq N": a consumer must never move past an entry whose
transaction has not committed yet. Writers in two processes (two engines on one database)
append while a consumer follows each log with the stores' own read methods, moving its
watermark as a real consumer does; at the end it must have seen every committed entry.

(On SQLite the database-wide write lock already orders appends; the same tests run against
every backend the suite knows, and they are where PostgreSQL must prove its ordering.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES, lock_id, take_append_turn
from ragd.db.tables import AuthEventRow, IndexChangeRow
from ragd.stores.identity import SqlIdentityStore
from ragd.stores.sql_catalog import SqlCatalog

WRITERS_PER_PROCESS = 12
TENANT = "tenant-a"


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[Database, Database]]:
    """Two engines on one database: the writers of two processes."""
    url = f"sqlite+aiosqlite:///{(tmp_path / 'ragd.db').resolve()}"
    first, second = Database(url, busy_timeout_ms=60_000), Database(url, busy_timeout_ms=60_000)
    await migrate.upgrade(first)
    try:
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()


Append = Callable[[Database, int], Awaitable[None]]


async def _append_index_change(db: Database, n: int) -> None:
    async with db.transaction() as s:
        await asyncio.sleep(0)  # let other writers interleave between begin and the append
        await take_append_turn(s, INDEX_CHANGES, TENANT)
        s.add(IndexChangeRow(tenant_id=TENANT, op="upsert", chunk_key=n))
        await s.flush()
        await asyncio.sleep(0)  # ...and between drawing the seq and the commit


async def _append_auth_event(db: Database, n: int) -> None:
    async with db.transaction() as s:
        await asyncio.sleep(0)
        await take_append_turn(s, AUTH_EVENTS)
        s.add(AuthEventRow(kind="session", subject=f"s{n}"))
        await s.flush()
        await asyncio.sleep(0)


async def _follow(read_after: Callable[[int], Awaitable[list[int]]], done: asyncio.Event,
                  seen: list[int]) -> None:
    """A consumer: read after the watermark, move it to the last seq read; until the writers
    are done and one more read finds nothing new."""
    watermark = 0
    while True:
        finished = done.is_set()
        batch = await read_after(watermark)
        seen.extend(batch)
        if batch:
            watermark = batch[-1]
        elif finished:
            return
        await asyncio.sleep(0)


async def _race(engines: tuple[Database, Database], append: Append,
                read_after: Callable[[int], Awaitable[list[int]]]) -> tuple[list[int], int]:
    rng = random.Random(20261205)
    order = [(engines[i % 2], n) for i, n in enumerate(range(2 * WRITERS_PER_PROCESS))]
    rng.shuffle(order)
    done = asyncio.Event()
    seen: list[int] = []
    consumer = asyncio.create_task(_follow(read_after, done, seen))
    await asyncio.gather(*(append(db, n) for db, n in order))
    done.set()
    await consumer
    return seen, len(order)


async def test_index_change_consumer_never_skips_a_committed_entry(
    engines: tuple[Database, Database],
) -> None:
    catalog = SqlCatalog(engines[0])

    async def read_after(seq: int) -> list[int]:
        return [change.seq for change in await catalog.changes_after(TENANT, seq, limit=5)]

    seen, written = await _race(engines, _append_index_change, read_after)
    everything = [c.seq for c in await catalog.changes_after(TENANT, 0, limit=1000)]
    assert len(everything) == written
    assert seen == everything  # every entry, once, in order


async def test_auth_event_consumer_never_skips_a_committed_entry(
    engines: tuple[Database, Database],
) -> None:
    store = SqlIdentityStore(engines[0])

    async def read_after(seq: int) -> list[int]:
        return [event.seq for event in await store.events_since(seq, limit=5)]

    seen, written = await _race(engines, _append_auth_event, read_after)
    everything = [event.seq for event in await store.events_since(0)]
    assert len(everything) == written
    assert seen == everything


@given(st.text(max_size=40), st.text(max_size=40))
def test_append_turns_are_stable_signed_64_bit_ids(log: str, key: str) -> None:
    value = lock_id(log, key)
    assert value == lock_id(log, key)
    assert -(2**63) <= value < 2**63


def test_logs_and_tenants_take_different_turns() -> None:
    ids = {lock_id(AUTH_EVENTS), lock_id(INDEX_CHANGES, "a"), lock_id(INDEX_CHANGES, "b"),
           lock_id(INDEX_CHANGES)}
    assert len(ids) == 4
