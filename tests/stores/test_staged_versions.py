"""A large document version is written in batches (each a short transaction, so a huge
document never holds the writer lane for long) and activated by one final transaction: it
becomes searchable in one step, never half, whatever happens between two batches (the lease
lost, the document replaced or deleted, the job failed).

The SQL catalog is driven with a batch of 3 chunks and stopped between batches through a
subclass hook, so every interleaving below is exact rather than hoped for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.tables import ChunkRow, utcnow
from ragd.jobs.queue import Job, SqlJobQueue
from ragd.stores.catalog import INGEST_JOB, CommitOutcome, NewChunk, VersionCommit
from ragd.stores.identity import SqlIdentityStore
from ragd.stores.sql_catalog import SqlCatalog, finalise_ingest_job
from tests.contracts.content import chunks, upload, version_commit

BATCH = 3
Pause = Callable[[int], Awaitable[None]]


class PausingCatalog(SqlCatalog):
    """Runs ``between(index)`` after staged batch ``index`` (0-based) committed."""

    between: Pause | None = None

    async def _stage(
        self, commit: VersionCommit, batch: Sequence[NewChunk], *, first: bool
    ) -> CommitOutcome | None:
        outcome = await super()._stage(commit, batch, first=first)
        self._staged = 0 if first else self._staged + 1
        if outcome is None and self.between is not None:
            await self.between(self._staged)
        return outcome


class Clock:
    """The queue's clock: starts at the wall time (the catalog stamps the jobs it enqueues
    with it) and then moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now


class World:
    def __init__(self, db: Database, tenant: str, collection_id: str) -> None:
        self.db = db
        self.tenant = tenant
        self.collection_id = collection_id
        self.catalog = PausingCatalog(db, commit_batch=BATCH)
        self.clock = Clock()
        self.queue = SqlJobQueue(db, lease_seconds=30, clock=self.clock,
                                 finalisers={INGEST_JOB: finalise_ingest_job})

    async def claim(self, worker: str) -> Job:
        job = await self.queue.claim(worker, [INGEST_JOB])
        assert job is not None
        return job

    async def visible(self, document_id: str) -> dict[str, Any]:
        """What readers of the catalog see of the document: its chunks (viewer), the keys a
        rebuild or verify would index, and the change log."""
        listed = await self.catalog.list_chunks(self.tenant, document_id, limit=500)
        keys = await self.catalog.chunk_keys(self.tenant, after=0, limit=10_000)
        changes = await self.catalog.changes_after(self.tenant, 0, limit=10_000)
        document = await self.catalog.get_document(self.tenant, document_id)
        assert document is not None
        return {
            "texts": [c.text for c in listed],
            "keys": sorted(keys) == sorted(c.key for c in listed),
            "logged": _net_upserts(changes) == {c.key for c in listed},
            "version": document.active_version,
            "chunk_count": document.chunk_count,
        }


def _net_upserts(changes: Sequence[Any]) -> set[int]:
    live: set[int] = set()
    for change in changes:
        if change.op == "upsert":
            live.add(change.chunk_key)
        else:
            live.discard(change.chunk_key)
    return live


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = Database(f"sqlite+aiosqlite:///{(tmp_path / 'ragd.db').resolve()}")
    await migrate.upgrade(db)
    try:
        tenant = (await SqlIdentityStore(db).create_tenant("acme")).id
        catalog = SqlCatalog(db)
        collection = await catalog.create_collection(tenant, "docs", description=None,
                                                     metadata={})
        yield World(db, tenant, collection.id)
    finally:
        await db.dispose()


def _texts(version: int, count: int) -> list[str]:
    return [f"version {version} chunk {n}" for n in range(count)]


async def _new_document(world: World, text: str = "v1") -> str:
    accepted = await world.catalog.add_document(
        world.tenant, world.collection_id, upload(text), max_attempts=3
    )
    return accepted.document.id


async def _commit(world: World, job: Job, document_id: str, version: int, count: int,
                  worker: str) -> CommitOutcome:
    new = chunks(document_id, version, _texts(version, count))
    return await world.catalog.commit_version(
        version_commit(job, document_id, version, new, worker=worker)
    )


async def _version_one(world: World, count: int = 4) -> str:
    """A document whose version 1 (``count`` chunks, staged) is active."""
    document_id = await _new_document(world)
    job = await world.claim("w1")
    assert await _commit(world, job, document_id, 1, count, "w1") is CommitOutcome.COMMITTED
    assert await world.queue.complete(job.id, "w1")
    return document_id


async def test_a_staged_version_is_invisible_until_it_is_activated_in_one_step(
    world: World,
) -> None:
    document_id = await _version_one(world)
    before = await world.visible(document_id)
    assert before == {"texts": _texts(1, 4), "keys": True, "logged": True, "version": 1,
                      "chunk_count": 4}
    replaced = await world.catalog.replace_document(world.tenant, document_id, upload("v2"),
                                                    max_attempts=3)
    assert replaced is not None
    job = await world.claim("w1")
    seen: list[dict[str, Any]] = []

    async def look(index: int) -> None:
        seen.append(await world.visible(document_id))

    world.catalog.between = look
    assert await _commit(world, job, document_id, 2, 10, "w1") is CommitOutcome.COMMITTED
    # Four batches of 3: every pause in between saw exactly version 1, whole.
    assert [state["version"] for state in seen] == [1, 1, 1, 1]
    assert all(state == before for state in seen)
    after = await world.visible(document_id)
    assert after == {"texts": _texts(2, 10), "keys": True, "logged": True, "version": 2,
                     "chunk_count": 10}


async def test_a_lost_lease_between_batches_stops_the_writer_and_the_new_owner_wins(
    world: World,
) -> None:
    document_id = await _new_document(world)
    first = await world.claim("w1")

    async def lose_the_lease(index: int) -> None:
        if index == 1:
            world.clock.now += timedelta(seconds=31)  # w1 stalls past its lease
            assert (await world.claim("w2")).id == first.id

    world.catalog.between = lose_the_lease
    assert await _commit(world, first, document_id, 1, 10, "w1") is CommitOutcome.LEASE_LOST
    world.catalog.between = None
    stale = await world.visible(document_id)
    assert (stale["texts"], stale["version"], stale["logged"]) == ([], None, True)
    # The new owner writes the same version with other text: nothing of w1's batches stays.
    again = (await world.queue.get(world.tenant, first.id))
    assert again is not None and again.lease_owner == "w2"
    new = chunks(document_id, 1, [f"owner two {n}" for n in range(7)])
    outcome = await world.catalog.commit_version(
        version_commit(again, document_id, 1, new, worker="w2")
    )
    assert outcome is CommitOutcome.COMMITTED
    final = await world.visible(document_id)
    assert final["texts"] == [f"owner two {n}" for n in range(7)]
    assert final["logged"] and final["keys"] and final["chunk_count"] == 7


async def test_a_replacement_between_batches_supersedes_and_its_commit_cleans_up(
    world: World,
) -> None:
    document_id = await _version_one(world)
    await world.catalog.replace_document(world.tenant, document_id, upload("v2"),
                                         max_attempts=3)
    job = await world.claim("w1")

    async def replace(index: int) -> None:
        if index == 0:
            assert await world.catalog.replace_document(
                world.tenant, document_id, upload("v3"), max_attempts=3
            ) is not None

    world.catalog.between = replace
    assert await _commit(world, job, document_id, 2, 10, "w1") is CommitOutcome.SUPERSEDED
    world.catalog.between = None
    assert (await world.visible(document_id))["texts"] == _texts(1, 4)
    await world.queue.complete(job.id, "w1")
    newest = await world.claim("w1")
    assert await _commit(world, newest, document_id, 3, 5, "w1") is CommitOutcome.COMMITTED
    final = await world.visible(document_id)
    assert final["texts"] == _texts(3, 5) and final["logged"] and final["keys"]
    assert await _rows(world, document_id) == 5  # version 2's staged rows are gone too


async def test_a_job_ended_by_the_queue_removes_what_it_staged(world: World) -> None:
    document_id = await _new_document(world)
    job = await world.claim("w1")
    stop = asyncio.Event()

    async def die(index: int) -> None:
        if index == 1:
            stop.set()
            await asyncio.Event().wait()  # the worker hangs here until cancelled (killed)

    world.catalog.between = die
    writer = asyncio.create_task(_commit(world, job, document_id, 1, 10, "w1"))
    await stop.wait()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert await _rows(world, document_id) == 6  # two batches staged, invisible
    # Cancelled on its lease-holder's behalf: the queue's finaliser ends the document and
    # removes the staged rows.
    assert await world.queue.fail(job.id, "w1", "boom", retryable=False)
    assert await _rows(world, document_id) == 0
    document = await world.catalog.get_document(world.tenant, document_id)
    assert document is not None and document.status == "failed"


async def test_a_deleted_document_takes_its_staged_rows_with_it(world: World) -> None:
    document_id = await _new_document(world)
    job = await world.claim("w1")

    async def delete(index: int) -> None:
        if index == 0:
            assert await world.catalog.delete_document(world.tenant, document_id)

    world.catalog.between = delete
    assert await _commit(world, job, document_id, 1, 10, "w1") is CommitOutcome.GONE
    assert await _rows(world, document_id) == 0


async def _rows(world: World, document_id: str) -> int:
    """Chunk rows of the document, staged ones included (what no catalog read shows)."""
    async with world.db.read() as s:
        count = await s.scalar(
            select(func.count()).select_from(ChunkRow).where(ChunkRow.document_id == document_id)
        )
    return int(count or 0)
