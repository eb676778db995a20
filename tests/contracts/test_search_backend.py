"""The search backend contract (:class:`~ragd.index.base.SearchBackend`), run against every
backend: committed chunks become searchable (by replaying the catalog's change log, upserts
and deletes idempotently, in the embedded backend; at once on PostgreSQL, which searches the
rows themselves); the lexical and dense legs return the tenant's chunks only, within a scope
when given; another process sees notified changes before it searches; verify compares with
the chunk rows, rebuild refills from them, and sync_all catches every tenant up. Vectors are
random unit vectors of the collection's dimension: no model runs here."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from ragd.index.base import Hit, Scope, SearchBackend
from ragd.jobs.factory import ManagedJobQueue
from ragd.stores.catalog import Catalog, CommitOutcome
from tests.contracts.content import (
    Ingested,
    chunks,
    claim,
    ingest,
    new_collection,
    unit_vector,
    upload,
    version_commit,
)
from tests.contracts.site import Site

HARBOUR = ["Cranes unload containers in the harbour at dawn", "Pilots guide ships into port"]
GLACIER = ["Glaciers carve fjords over millennia", "Meltwater feeds the rivers below"]
VOLCANO = ["Basalt flows from the volcano cool into columns", "Ash falls on the harbour town"]


def _keys(hits: list[Hit]) -> set[int]:
    return {hit.key for hit in hits}


@contextmanager
def _opened(backend: SearchBackend) -> Iterator[SearchBackend]:
    try:
        yield backend
    finally:
        backend.close()


async def test_each_leg_finds_the_tenants_committed_chunks_only(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str,
    other_tenant: str,
) -> None:
    mine = await new_collection(catalog, tenant)
    harbour = await ingest(catalog, queue, tenant, mine, HARBOUR, seed=1)
    theirs = await ingest(
        catalog, queue, other_tenant, await new_collection(catalog, other_tenant), VOLCANO, seed=10
    )
    await search.sync(tenant)
    await search.sync(other_tenant)

    lexical = await search.lexical_search(tenant, "harbour", 10)
    assert _keys(lexical) == {harbour.keys[0]}
    assert _keys(await search.lexical_search(other_tenant, "harbour", 10)) == {theirs.keys[1]}
    assert await search.lexical_search(tenant, "basalt volcano", 10) == []
    # Dense: a chunk's own vector finds it first; another tenant's vector finds only ours.
    own = await search.dense_search(tenant, unit_vector(1), 10)
    assert own[0].key == harbour.keys[0] and own[0].score > 0.99
    assert _keys(own) <= set(harbour.keys)
    foreign = await search.dense_search(tenant, unit_vector(10), 10)
    assert _keys(foreign) <= set(harbour.keys)
    scores = [hit.score for hit in own]
    assert scores == sorted(scores, reverse=True)
    # A tenant with nothing indexed is an empty index, not an error.
    nobody = str(uuid.uuid4())
    assert await search.lexical_search(nobody, "harbour", 10) == []
    assert await search.dense_search(nobody, unit_vector(1), 10) == []


async def test_odd_query_text_never_raises(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    await ingest(catalog, queue, tenant, await new_collection(catalog, tenant), HARBOUR)
    await search.sync(tenant)
    for query in ['"unbalanced', "AND OR NOT", "title:(x", "*", "harbour^2 ~", "", "\u00e9\u4e2d"]:
        assert isinstance(await search.lexical_search(tenant, query, 5), list)


async def test_a_scope_narrows_each_leg(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    first = await new_collection(catalog, tenant, "First")
    second = await new_collection(catalog, tenant, "Second")
    harbour = await ingest(catalog, queue, tenant, first, HARBOUR, seed=1)
    volcano = await ingest(catalog, queue, tenant, second, VOLCANO, seed=5)
    await search.sync(tenant)
    assert _keys(await search.lexical_search(tenant, "harbour", 10)) == {
        harbour.keys[0], volcano.keys[1]
    }
    in_second = Scope(collection_ids={second})
    assert _keys(await search.lexical_search(tenant, "harbour", 10, in_second)) == {
        volcano.keys[1]
    }
    assert _keys(await search.dense_search(tenant, unit_vector(1), 10, in_second)) <= set(
        volcano.keys
    )
    of_harbour = Scope(document_ids={harbour.document.id})
    assert _keys(await search.dense_search(tenant, unit_vector(5), 10, of_harbour)) <= set(
        harbour.keys
    )
    assert _keys(await search.lexical_search(tenant, "harbour", 10, of_harbour)) == {
        harbour.keys[0]
    }


async def test_continuing_names_the_hits_that_continue_their_section(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str,
    other_tenant: str,
) -> None:
    collection_id = await new_collection(catalog, tenant)
    accepted = await catalog.add_document(tenant, collection_id, upload("faq"), max_attempts=3)
    assert accepted.job is not None
    job = await claim(queue, accepted.job.id)
    paths = [(), (), ("Q1",), ("Q1",), ("Q1",), ("Q2",), ("Q1",)]
    texts = [f"harbour part {n}" for n in range(len(paths))]
    new = [
        dataclasses.replace(chunk, heading_path=path)
        for chunk, path in zip(chunks(accepted.document.id, 1, texts, seed=20), paths,
                               strict=True)
    ]
    await catalog.commit_version(version_commit(job, accepted.document.id, 1, new))
    theirs = await ingest(catalog, queue, other_tenant,
                          await new_collection(catalog, other_tenant), VOLCANO, seed=10)
    await search.sync(tenant)
    await search.sync(other_tenant)
    keys = [c.key for c in await catalog.list_chunks(tenant, accepted.document.id, limit=50)]
    expected = {keys[1], keys[3], keys[4]}
    assert await search.continuing(tenant, keys) == expected
    assert await search.continuing(tenant, [keys[0], keys[4]]) == {keys[4]}
    assert await search.continuing(tenant, []) == set()
    # The answer agrees with the chunk rows, and another tenant's keys are never named.
    assert await catalog.continuing(tenant, keys) == expected
    assert await search.continuing(tenant, list(theirs.keys)) == set()
    assert await search.continuing(other_tenant, keys) == set()
    assert await search.continuing(other_tenant, list(theirs.keys)) == {theirs.keys[1]}
    # A rebuild from the rows keeps the answer.
    await search.rebuild(tenant)
    assert await search.continuing(tenant, keys) == expected


async def test_deletes_and_new_versions_are_replayed(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    harbour = await ingest(catalog, queue, tenant, collection_id, HARBOUR, seed=1)
    glacier = await ingest(catalog, queue, tenant, collection_id, GLACIER, seed=3)
    await search.sync(tenant)
    assert await catalog.delete_document(tenant, glacier.document.id)
    await search.sync(tenant)
    assert await search.lexical_search(tenant, "glaciers fjords", 10) == []
    assert not _keys(await search.dense_search(tenant, unit_vector(3), 10)) & set(glacier.keys)
    # A new version replaces the old one's entries.
    replaced = await catalog.replace_document(
        tenant, harbour.document.id, upload("v2"), max_attempts=3
    )
    assert replaced is not None and replaced.job is not None
    job = await claim(queue, replaced.job.id)
    new = chunks(harbour.document.id, 2, VOLCANO, seed=7)
    outcome = await catalog.commit_version(version_commit(job, harbour.document.id, 2, new))
    assert outcome is CommitOutcome.COMMITTED
    await search.sync(tenant)
    current = {c.key for c in await catalog.list_chunks(tenant, harbour.document.id)}
    assert await search.lexical_search(tenant, "cranes containers", 10) == []
    assert _keys(await search.lexical_search(tenant, "basalt", 10)) <= current
    assert _keys(await search.dense_search(tenant, unit_vector(7), 10)) == current
    verification = await search.verify(tenant)
    assert verification.ok and verification.chunks == len(current)


async def test_replaying_again_changes_nothing(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    await ingest(catalog, queue, tenant, await new_collection(catalog, tenant), HARBOUR, seed=1)
    await search.sync(tenant)
    before = (
        await search.lexical_search(tenant, "harbour ships", 10),
        await search.dense_search(tenant, unit_vector(1), 10),
    )
    assert await search.sync(tenant) == 0
    assert (
        await search.lexical_search(tenant, "harbour ships", 10),
        await search.dense_search(tenant, unit_vector(1), 10),
    ) == before


async def test_another_process_applies_notified_changes_before_it_searches(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    await ingest(catalog, queue, tenant, collection_id, HARBOUR, seed=1)
    await search.sync(tenant)
    with _opened(site.another_process().search()) as there:
        assert _keys(await there.lexical_search(tenant, "harbour", 10))  # opened and in step
        glacier = await ingest(catalog, queue, tenant, collection_id, GLACIER, seed=3)
        await search.sync(tenant)
        search.notify()
        assert _keys(await there.lexical_search(tenant, "glaciers", 10)) == {glacier.keys[0]}
        assert await catalog.delete_document(tenant, glacier.document.id)
        await search.sync(tenant)
        search.notify()
        assert not _keys(await there.dense_search(tenant, unit_vector(3), 10)) & set(
            glacier.keys
        )


async def test_a_search_after_notify_sees_the_commit_in_every_process(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    """The pipeline notifies right after the commit that makes a document "ready", before
    it syncs: a search that follows, here or in another process, must not miss it."""
    collection_id = await new_collection(catalog, tenant)
    await ingest(catalog, queue, tenant, collection_id, HARBOUR, seed=1)
    await search.sync(tenant)
    with _opened(site.another_process().search()) as there:
        assert _keys(await there.lexical_search(tenant, "harbour", 10))  # opened and in step
        assert _keys(await search.lexical_search(tenant, "harbour", 10))
        glacier = await ingest(catalog, queue, tenant, collection_id, GLACIER, seed=3)
        search.notify()  # no sync
        for backend in (search, there):
            assert _keys(await backend.lexical_search(tenant, "glaciers", 10)) == {
                glacier.keys[0]
            }
            assert (await backend.dense_search(tenant, unit_vector(3), 1))[0].key == (
                glacier.keys[0]
            )


async def test_verify_compares_with_the_chunk_rows_and_rebuild_refills_from_them(
    catalog: Catalog, queue: ManagedJobQueue, search: SearchBackend, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    harbour = await ingest(catalog, queue, tenant, collection_id, HARBOUR, seed=1)
    await search.sync(tenant)
    in_step = await search.verify(tenant)
    assert in_step.ok and in_step.chunks == 2
    assert in_step.last_change == await catalog.last_change(tenant)
    # Committed and not synced (a crash between the commit and the index write, where the
    # backend applies changes after the commit): rebuild refills from the rows either way.
    glacier = await ingest(catalog, queue, tenant, collection_id, GLACIER, seed=3)
    assert (await search.verify(tenant)).chunks == 4
    assert await search.rebuild(tenant) == 4
    rebuilt = await search.verify(tenant)
    assert rebuilt.ok and rebuilt.chunks == 4
    assert _keys(await search.lexical_search(tenant, "glaciers", 10)) == {glacier.keys[0]}
    assert _keys(await search.dense_search(tenant, unit_vector(1), 1)) == {harbour.keys[0]}


async def test_sync_all_catches_every_tenant_up(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str, other_tenant: str
) -> None:
    written: dict[str, Ingested] = {}
    for owner, texts, seed in ((tenant, HARBOUR, 1), (other_tenant, GLACIER, 3)):
        written[owner] = await ingest(
            catalog, queue, owner, await new_collection(catalog, owner), texts, seed=seed
        )
    with _opened(site.search(catalog)) as restarted:  # a process starting after the commits
        await restarted.sync_all()
        for owner, ingested in written.items():
            verification = await restarted.verify(owner)
            assert verification.ok and verification.chunks == len(ingested.keys)
        assert await restarted.sync_all() == 0
        await restarted.flush()
    with _opened(site.search(catalog)) as again:  # what was flushed is found in step
        assert await again.sync_all() == 0
        assert _keys(await again.lexical_search(other_tenant, "fjords", 10)) == {
            written[other_tenant].keys[0]
        }
