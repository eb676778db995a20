"""The change logs, run against every backend: the index change log
(:class:`~ragd.stores.catalog.ChangeLog`) per tenant, and the auth event log; and the promise
both make to a consumer that reads "after seq N" and moves its watermark to the last seq it
read: it never skips a committed entry, however the writers of two processes interleave.

(On SQLite the database-wide write lock already orders appends; on PostgreSQL sequence
order is not commit order, and this is where a backend must prove its ordering.)
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from ragd.db.tables import utcnow
from ragd.jobs.factory import ManagedJobQueue
from ragd.stores.base import IdentityStore
from ragd.stores.catalog import Catalog
from tests.contracts.content import Ingested, ingest, new_collection
from tests.contracts.site import Site

WRITERS_PER_PROCESS = 12


async def test_each_tenant_has_its_own_log_in_seq_order(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str, other_tenant: str
) -> None:
    assert await catalog.last_change(tenant) == 0
    assert await catalog.changes_after(tenant, 0, limit=10) == []
    assert await catalog.tenants_with_changes() == []
    mine = await new_collection(catalog, tenant)
    theirs = await new_collection(catalog, other_tenant)
    first = await ingest(catalog, queue, tenant, mine, ["a", "b", "c"])
    their = await ingest(catalog, queue, other_tenant, theirs, ["x", "y"])
    second = await ingest(catalog, queue, tenant, mine, ["d"], seed=3)

    changes = await catalog.changes_after(tenant, 0, limit=100)
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [c.chunk_key for c in changes] == [*first.keys, *second.keys]
    assert {c.op for c in changes} == {"upsert"}
    assert await catalog.last_change(tenant) == seqs[-1]
    assert [c.chunk_key for c in await catalog.changes_after(other_tenant, 0, limit=100)] == list(
        their.keys
    )
    # Paging by seq: after any entry, the rest; at most ``limit``.
    assert await catalog.changes_after(tenant, seqs[1], limit=100) == changes[2:]
    assert await catalog.changes_after(tenant, seqs[0], limit=2) == changes[1:3]
    assert await catalog.changes_after(tenant, seqs[-1], limit=100) == []
    assert sorted(await catalog.tenants_with_changes()) == sorted({tenant, other_tenant})


async def test_every_removal_is_logged_and_its_entries_are_gone(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    kept = await ingest(catalog, queue, tenant, collection_id, ["keep me"])
    removed = await ingest(catalog, queue, tenant, collection_id, ["drop", "me"], seed=1)
    mark = await catalog.last_change(tenant)
    assert await catalog.delete_document(tenant, removed.document.id)
    logged = await catalog.changes_after(tenant, mark, limit=100)
    assert sorted((c.op, c.chunk_key) for c in logged) == [
        ("delete", key) for key in sorted(removed.keys)
    ]
    everything = [*kept.keys, *removed.keys]
    assert [e.key for e in await catalog.index_entries(tenant, everything)] == list(kept.keys)
    assert await catalog.index_entries(tenant, []) == []
    assert await catalog.chunks_by_keys(tenant, list(removed.keys)) == []


async def test_chunk_keys_page_in_ascending_order(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str, other_tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    keys: list[int] = []
    for n in range(3):
        keys.extend((await ingest(
            catalog, queue, tenant, collection_id, [f"doc {n} a", f"doc {n} b"], seed=n
        )).keys)
    elsewhere = await new_collection(catalog, other_tenant)
    await ingest(catalog, queue, other_tenant, elsewhere, ["theirs"])
    paged: list[int] = []
    after = 0
    while batch := await catalog.chunk_keys(tenant, after=after, limit=4):
        assert len(batch) <= 4
        paged.extend(batch)
        after = batch[-1]
    assert paged == sorted(keys)


# -- a consumer never skips -------------------------------------------------------------------


async def _follow(
    read_after: Callable[[int], Awaitable[list[int]]], start: int, done: asyncio.Event,
    seen: list[int],
) -> None:
    """A consumer: read after the watermark, move it to the last seq read; until the writers
    are done and one more read finds nothing new."""
    watermark = start
    while True:
        finished = done.is_set()
        batch = await read_after(watermark)
        seen.extend(batch)
        if batch:
            watermark = batch[-1]
        elif finished:
            return
        await asyncio.sleep(0)


async def _race(
    writes: Sequence[Awaitable[object]], read_after: Callable[[int], Awaitable[list[int]]],
    start: int,
) -> list[int]:
    """Run ``writes`` together (in a shuffled order) while a consumer follows the log."""
    order = list(writes)
    random.Random(20261205).shuffle(order)
    done = asyncio.Event()
    seen: list[int] = []
    consumer = asyncio.create_task(_follow(read_after, start, done, seen))
    await asyncio.gather(*order)
    done.set()
    await consumer
    return seen


async def test_an_index_change_consumer_never_skips_a_committed_change(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    documents: list[Ingested] = [
        await ingest(catalog, queue, tenant, collection_id, [f"doc {n} a", f"doc {n} b"], seed=n)
        for n in range(2 * WRITERS_PER_PROCESS)
    ]
    start = await catalog.last_change(tenant)
    processes = [site.catalog(), site.another_process().catalog()]

    async def read_after(seq: int) -> list[int]:
        return [c.seq for c in await catalog.changes_after(tenant, seq, limit=5)]

    seen = await _race(
        [processes[n % 2].delete_document(tenant, doc.document.id)
         for n, doc in enumerate(documents)],
        read_after, start,
    )
    everything = [c.seq for c in await catalog.changes_after(tenant, start, limit=1000)]
    assert len(everything) == sum(len(doc.keys) for doc in documents)
    assert seen == everything  # every change, once, in order


async def test_an_auth_event_consumer_never_skips_a_committed_event(
    site: Site, identity: IdentityStore, tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", "hash")
    sessions = []
    for _ in range(2 * WRITERS_PER_PROCESS):
        session_id = str(uuid.uuid4())
        await identity.create_session(
            tenant, user.id, session_id=session_id, refresh_jti=str(uuid.uuid4()),
            expires_at=utcnow() + timedelta(days=365),
        )
        sessions.append(session_id)
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    processes = [site.identity(), site.another_process().identity()]

    async def read_after(seq: int) -> list[int]:
        return [event.seq for event in await identity.events_since(seq, limit=5)]

    seen = await _race(
        [processes[n % 2].revoke_session(tenant, session_id, "logout")
         for n, session_id in enumerate(sessions)],
        read_after, start,
    )
    everything = [event.seq for event in await identity.events_since(start)]
    assert len(everything) == len(sessions)
    assert seen == everything
