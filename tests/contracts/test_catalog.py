"""The catalog contract for collections and documents (:class:`~ragd.stores.catalog.Catalog`),
run against every backend: names and conflicts, duplicates, versions' bytes, deletion now or
by a job, keyset pagination, and tenant isolation on every method of the catalog."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from ragd.errors import Conflict, InvalidInput, NotFound
from ragd.jobs.factory import ManagedJobQueue
from ragd.stores.catalog import (
    DELETE_COLLECTION_JOB,
    DOCUMENT_STATUSES,
    INGEST_JOB,
    Catalog,
    Collection,
    CollectionStats,
    Document,
    NewChunk,
    Page,
)
from tests.contracts.content import chunks, claim, ingest, upload, version_commit

MISSING = str(uuid.uuid4())


async def _collection(catalog: Catalog, tenant: str, name: str = "Docs") -> Collection:
    return await catalog.create_collection(tenant, name, description=None, metadata={})


# -- collections ------------------------------------------------------------------------------


async def test_collection_stats_count_documents_by_status_and_searchable_chunks(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str, other_tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    assert await catalog.collection_stats(tenant, docs.id) == CollectionStats(
        dict.fromkeys(DOCUMENT_STATUSES, 0), 0
    )
    replaced = await ingest(catalog, queue, tenant, docs.id, ["alpha", "beta", "gamma"])
    await ingest(catalog, queue, tenant, docs.id, ["delta"], seed=5)
    theirs = await _collection(catalog, other_tenant, "Theirs")
    await ingest(catalog, queue, other_tenant, theirs.id, ["omega", "psi"], seed=9)
    # Every job claimed below is the oldest due one: the ones left queued come last.
    failing = await catalog.add_document(tenant, docs.id, upload("broken"), max_attempts=3)
    assert failing.job is not None
    job = await claim(queue, failing.job.id)
    await catalog.finish_version(tenant, failing.document.id, 1, "failed", "parse error")
    assert await queue.fail(job.id, "worker-1", "parse error", retryable=False)
    working = await catalog.add_document(tenant, docs.id, upload("working"), max_attempts=3)
    assert working.job is not None
    await claim(queue, working.job.id)
    assert await catalog.start_version(tenant, working.document.id, 1) is not None
    dropped = await catalog.add_document(tenant, docs.id, upload("dropped"), max_attempts=3)
    assert dropped.job is not None and await queue.cancel(tenant, dropped.job.id) is not None
    await catalog.add_document(tenant, docs.id, upload("waiting"), max_attempts=3)
    # A new version of a ready document: queued again, its searchable chunks still count.
    assert await catalog.replace_document(
        tenant, replaced.document.id, upload("alpha 2"), max_attempts=3
    ) is not None

    stats = await catalog.collection_stats(tenant, docs.id)
    assert stats == CollectionStats(
        {"queued": 2, "processing": 1, "ready": 1, "failed": 1, "cancelled": 1}, 4
    )
    assert await catalog.collection_stats(other_tenant, theirs.id) == CollectionStats(
        {"queued": 0, "processing": 0, "ready": 1, "failed": 0, "cancelled": 0}, 2
    )
    assert await catalog.collection_stats(other_tenant, docs.id) is None
    assert await catalog.collection_stats(tenant, MISSING) is None
    await catalog.delete_collection(tenant, docs.id, inline_chunks=0, max_attempts=3)
    assert await catalog.collection_stats(tenant, docs.id) is None  # being deleted: hidden



async def test_collection_names_are_unique_per_tenant_whatever_their_case(
    catalog: Catalog, tenant: str, other_tenant: str
) -> None:
    docs = await catalog.create_collection(
        tenant, "  Docs ", description="manuals", metadata={"team": "ops", "n": [1, 2]}
    )
    assert (docs.name, docs.description, docs.status, docs.document_count) == (
        "Docs", "manuals", "active", 0
    )
    assert docs.metadata == {"team": "ops", "n": [1, 2]}
    assert (docs.embedder_name, docs.embedder_dimension) == (None, None)
    assert await catalog.get_collection(tenant, docs.id) == docs
    assert await catalog.find_collection(tenant, "DOCS") == docs
    with pytest.raises(Conflict) as caught:
        await _collection(catalog, tenant, "docs")
    assert caught.value.code == "collection_exists"
    await _collection(catalog, other_tenant, "docs")  # another tenant: free
    other = await _collection(catalog, tenant, "Other")
    with pytest.raises(Conflict):
        await catalog.update_collection(tenant, other.id, name="DOCS")


async def test_updating_a_collection_changes_only_what_is_given(
    catalog: Catalog, tenant: str
) -> None:
    docs = await catalog.create_collection(
        tenant, "Docs", description="manuals", metadata={"team": "ops"}
    )
    renamed = await catalog.update_collection(tenant, docs.id, name="Manuals")
    assert renamed is not None
    assert (renamed.name, renamed.description, renamed.metadata) == (
        "Manuals", "manuals", {"team": "ops"}
    )
    described = await catalog.update_collection(
        tenant, docs.id, description="all of them", metadata={"team": "docs"}
    )
    assert described is not None
    assert (described.name, described.description, described.metadata) == (
        "Manuals", "all of them", {"team": "docs"}
    )
    assert await catalog.find_collection(tenant, "docs") is None
    assert await catalog.find_collection(tenant, "manuals") == await catalog.get_collection(
        tenant, docs.id
    )


@pytest.mark.parametrize("metadata", [{"": 1}, {"k": {"nested": 1}}, {"k": float("nan")}])
async def test_metadata_breaking_the_rule_is_refused(
    catalog: Catalog, tenant: str, metadata: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput):
        await catalog.create_collection(tenant, "Docs", description=None, metadata=metadata)
    docs = await _collection(catalog, tenant)
    with pytest.raises(InvalidInput):
        await catalog.update_collection(tenant, docs.id, metadata=metadata)
    assert (await catalog.get_collection(tenant, docs.id)) == docs


# -- pagination -------------------------------------------------------------------------------


Lister = Callable[[int, str | None], Awaitable[Page[Any]]]


async def _all_pages(list_page: Lister, limit: int) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = await list_page(limit, cursor)
        assert len(page.items) <= limit
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def _newest_first(items: Sequence[Collection] | Sequence[Document]) -> bool:
    keys = [(item.created_at, item.id) for item in items]
    return keys == sorted(keys, reverse=True)


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
async def test_collections_page_newest_first_through_cursors(
    catalog: Catalog, tenant: str, other_tenant: str, limit: int
) -> None:
    ids = {(await _collection(catalog, tenant, f"c{n}")).id for n in range(7)}
    await _collection(catalog, other_tenant, "theirs")

    async def list_page(limit: int, cursor: str | None) -> Page[Collection]:
        return await catalog.list_collections(tenant, limit=limit, cursor=cursor)

    items = await _all_pages(list_page, limit)
    assert [c.id for c in items] == [c.id for c in (await list_page(500, None)).items]
    assert {c.id for c in items} == ids and len(items) == len(ids)
    assert _newest_first(items)


async def test_a_page_is_stable_under_inserts(catalog: Catalog, tenant: str) -> None:
    for n in range(4):
        await _collection(catalog, tenant, f"c{n}")
    first = await catalog.list_collections(tenant, limit=2)
    newcomer = await _collection(catalog, tenant, "newcomer")
    rest = await catalog.list_collections(tenant, limit=10, cursor=first.next_cursor)
    seen = [c.id for c in first.items + rest.items]
    assert newcomer.id not in seen  # newer than the cursor: on the first page, not later
    assert len(seen) == len(set(seen)) == 4


async def test_documents_page_newest_first_with_filters(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs, other = await _collection(catalog, tenant), await _collection(catalog, tenant, "Other")
    queued = [
        (await catalog.add_document(tenant, docs.id, upload(f"text {n}"), max_attempts=3))
        .document.id
        for n in range(5)
    ]
    elsewhere = await catalog.add_document(tenant, other.id, upload("x"), max_attempts=3)

    async def list_page(limit: int, cursor: str | None) -> Page[Document]:
        return await catalog.list_documents(
            tenant, collection_id=docs.id, limit=limit, cursor=cursor
        )

    items = await _all_pages(list_page, 2)
    assert {d.id for d in items} == set(queued) and len(items) == 5
    assert _newest_first(items)
    everything = await catalog.list_documents(tenant)
    assert {d.id for d in everything.items} == {*queued, elsewhere.document.id}
    assert (await catalog.list_documents(tenant, status="ready")).items == ()
    assert len((await catalog.list_documents(tenant, status="queued")).items) == 6


@pytest.mark.parametrize("call", ["collections", "documents", "chunks"])
async def test_limits_statuses_and_cursors_are_checked(
    catalog: Catalog, tenant: str, call: str
) -> None:
    lists: dict[str, Callable[..., Awaitable[object]]] = {
        "collections": lambda **kw: catalog.list_collections(tenant, **kw),
        "documents": lambda **kw: catalog.list_documents(tenant, **kw),
        "chunks": lambda **kw: catalog.list_chunks(tenant, MISSING, **kw),
    }
    for limit in (0, 501):
        with pytest.raises(InvalidInput):
            await lists[call](limit=limit)
    if call != "chunks":
        with pytest.raises(InvalidInput):
            await lists[call](cursor="not-a-cursor")
    with pytest.raises(InvalidInput):
        await catalog.list_documents(tenant, status="lost")  # type: ignore[arg-type]


# -- documents --------------------------------------------------------------------------------


async def test_a_document_its_version_and_its_job_are_created_together(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    sent = upload("hello world", title="Greeting")
    accepted = await catalog.add_document(tenant, docs.id, sent, max_attempts=4)
    document, job = accepted.document, accepted.job
    assert not accepted.duplicate and job is not None
    assert (document.title, document.filename, document.status) == (
        "Greeting", "notes.txt", "queued"
    )
    assert (document.latest_version, document.active_version, document.job_id) == (1, None, job.id)
    assert not document.searchable
    assert (job.kind, job.tenant_id, job.max_attempts, job.status) == (
        INGEST_JOB, tenant, 4, "queued"
    )
    assert job.payload == {"document_id": document.id, "version": 1}
    assert await queue.get(tenant, job.id) == job
    content = await catalog.get_content(tenant, document.id)
    assert content is not None
    assert (content.version, content.content, content.content_sha256) == (
        1, sent.content, sent.content_sha256
    )
    assert (await catalog.get_collection(tenant, docs.id)).document_count == 1  # type: ignore[union-attr]


async def test_the_same_content_twice_is_one_document(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs, other = await _collection(catalog, tenant), await _collection(catalog, tenant, "Other")
    first = await catalog.add_document(tenant, docs.id, upload("same"), max_attempts=3)
    again = await catalog.add_document(tenant, docs.id, upload("same"), max_attempts=3)
    assert again.duplicate and again.job is None and again.document.id == first.document.id
    elsewhere = await catalog.add_document(tenant, other.id, upload("same"), max_attempts=3)
    assert not elsewhere.duplicate  # another collection: another document
    # A failed one is queued again by uploading it again.
    assert first.job is not None
    job = await claim(queue, first.job.id)
    await catalog.finish_version(tenant, first.document.id, 1, "failed", "parse error")
    assert await queue.fail(job.id, "worker-1", "parse error", retryable=False)
    retried = await catalog.add_document(tenant, docs.id, upload("same"), max_attempts=3)
    assert not retried.duplicate and retried.job is not None
    assert retried.job.id != first.job.id
    assert (retried.document.id, retried.document.status, retried.document.error) == (
        first.document.id, "queued", None
    )


async def test_replacing_adds_a_version_and_keeps_the_active_one_searchable(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, docs.id, ["first version"])
    document_id = ingested.document.id
    same = await catalog.replace_document(
        tenant, document_id, upload("first version"), max_attempts=3
    )
    assert same is not None and same.duplicate and same.job is None
    replaced = await catalog.replace_document(
        tenant, document_id, upload("second version", title="v2"), max_attempts=3
    )
    assert replaced is not None and not replaced.duplicate and replaced.job is not None
    assert replaced.job.payload == {"document_id": document_id, "version": 2}
    document = replaced.document
    assert (document.latest_version, document.active_version, document.status) == (2, 1, "queued")
    assert document.searchable and document.title == "v2"
    latest = await catalog.get_content(tenant, document_id)
    active = await catalog.get_content(tenant, document_id, version=1)
    assert latest is not None and latest.content == b"second version"
    assert active is not None and active.content == b"first version"
    assert [c.key for c in await catalog.list_chunks(tenant, document_id)] == list(ingested.keys)
    # A third version drops the bytes of the second (neither active nor latest).
    third = await catalog.replace_document(tenant, document_id, upload("v3"), max_attempts=3)
    assert third is not None
    assert await catalog.get_content(tenant, document_id, version=2) is None
    assert await catalog.get_content(tenant, document_id, version=1) is not None
    # The superseded jobs were cancelled: only the newest is due.
    jobs = await queue.list(tenant, status="queued")
    assert [j.id for j in jobs.items] == [third.job.id]  # type: ignore[union-attr]


async def test_replacing_with_another_documents_content_is_a_conflict(
    catalog: Catalog, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    first = await catalog.add_document(tenant, docs.id, upload("one"), max_attempts=3)
    await catalog.add_document(tenant, docs.id, upload("two"), max_attempts=3)
    with pytest.raises(Conflict) as caught:
        await catalog.replace_document(tenant, first.document.id, upload("two"), max_attempts=3)
    assert caught.value.code == "duplicate_content"
    unchanged = await catalog.get_document(tenant, first.document.id)
    assert unchanged is not None
    assert (unchanged.content_sha256, unchanged.latest_version, unchanged.job_id) == (
        first.document.content_sha256, 1, first.document.job_id
    )


async def test_chunks_are_listed_in_order_after_an_ordinal(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    texts = [f"chunk number {n}" for n in range(5)]
    ingested = await ingest(catalog, queue, tenant, docs.id, texts)
    document_id = ingested.document.id
    listed = await catalog.list_chunks(tenant, document_id)
    assert [c.text for c in listed] == texts and [c.ordinal for c in listed] == list(range(5))
    assert all(c.document_id == document_id and c.tenant_id == tenant for c in listed)
    assert [c.ordinal for c in await catalog.list_chunks(tenant, document_id, after=1, limit=2)] \
        == [2, 3]
    assert await catalog.list_chunks(tenant, document_id, after=4) == []


async def test_deleting_a_document_removes_it_and_cancels_its_job(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, docs.id, ["a", "b"])
    pending = await catalog.add_document(tenant, docs.id, upload("pending"), max_attempts=3)
    for document_id in (ingested.document.id, pending.document.id):
        assert await catalog.delete_document(tenant, document_id) is True
        assert await catalog.get_document(tenant, document_id) is None
        assert await catalog.get_content(tenant, document_id) is None
        assert await catalog.list_chunks(tenant, document_id) == []
        assert await catalog.delete_document(tenant, document_id) is False
    assert pending.job is not None
    assert (await queue.get(tenant, pending.job.id)).status == "cancelled"  # type: ignore[union-attr]
    assert (await catalog.get_collection(tenant, docs.id)).document_count == 0  # type: ignore[union-attr]


async def test_a_small_collection_is_deleted_at_once(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, docs.id, ["a", "b"])
    removal = await catalog.delete_collection(tenant, docs.id, inline_chunks=2, max_attempts=3)
    assert removal is not None and (removal.chunks, removal.job) == (2, None)
    assert await catalog.get_collection(tenant, docs.id) is None
    assert await catalog.get_document(tenant, ingested.document.id) is None
    assert await catalog.delete_collection(
        tenant, docs.id, inline_chunks=2, max_attempts=3
    ) is None
    await _collection(catalog, tenant, "Docs")  # the name is free


async def test_a_large_collection_is_hidden_at_once_and_purged_by_a_job(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    ingested = [
        await ingest(catalog, queue, tenant, docs.id, [f"doc {n} a", f"doc {n} b"], seed=n)
        for n in range(3)
    ]
    pending = await catalog.add_document(tenant, docs.id, upload("pending"), max_attempts=3)
    removal = await catalog.delete_collection(tenant, docs.id, inline_chunks=5, max_attempts=3)
    assert removal is not None and removal.chunks == 6 and removal.job is not None
    assert (removal.job.kind, removal.job.payload) == (
        DELETE_COLLECTION_JOB, {"collection_id": docs.id}
    )
    # Hidden at once from every read, and the name is free again.
    assert await catalog.get_collection(tenant, docs.id) is None
    assert await catalog.find_collection(tenant, "docs") is None
    assert docs.id not in {c.id for c in (await catalog.list_collections(tenant)).items}
    assert (await catalog.list_documents(tenant)).items == ()
    keys = [key for each in ingested for key in each.keys]
    assert await catalog.searchable_chunks(tenant, keys) == {}
    assert await catalog.existing_ids(
        tenant, collection_ids=[docs.id], document_ids=[ingested[0].document.id]
    ) == (set(), set())
    for each in ingested:
        assert await catalog.get_document(tenant, each.document.id) is None
    with pytest.raises(NotFound):
        await catalog.add_document(tenant, docs.id, upload("late"), max_attempts=3)
    assert pending.job is not None
    assert (await queue.get(tenant, pending.job.id)).status == "cancelled"  # type: ignore[union-attr]
    await _collection(catalog, tenant, "Docs")
    # The job purges in batches until it is gone.
    rounds = 0
    while not await catalog.purge_collection(tenant, docs.id, batch=2):
        rounds += 1
        assert rounds < 10
    assert rounds >= 1
    assert await catalog.chunk_keys(tenant, after=0, limit=100) == []
    assert await catalog.purge_collection(tenant, docs.id, batch=2) is True


async def test_the_chunks_of_a_collection_being_deleted_are_hidden_too(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, docs.id, ["a", "b"])
    await catalog.delete_collection(tenant, docs.id, inline_chunks=0, max_attempts=3)
    assert await catalog.list_chunks(tenant, ingested.document.id) == []


# -- tenant isolation -------------------------------------------------------------------------


async def test_ids_of_another_tenant_are_missing_on_every_method(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str, other_tenant: str
) -> None:
    """Every method of the catalog answers the other tenant's id exactly as an unknown id,
    and changes nothing of the owner's."""
    docs = await _collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, docs.id, ["alpha", "beta"])
    document = ingested.document
    assert document.job_id is not None
    theirs = await _collection(catalog, other_tenant, "Theirs")
    their_doc = await catalog.add_document(other_tenant, theirs.id, upload("t"), max_attempts=3)
    assert their_doc.job is not None
    their_job = await claim(queue, their_doc.job.id, worker="their-worker")

    async def snapshot() -> tuple[object, ...]:
        return (
            await catalog.get_collection(tenant, docs.id),
            await catalog.get_document(tenant, document.id),
            await catalog.get_content(tenant, document.id),
            await catalog.list_chunks(tenant, document.id),
            await catalog.changes_after(tenant, 0, limit=100),
        )

    before = await snapshot()
    new_chunks = chunks(document.id, 1, ["intruder"])
    calls: dict[str, Callable[[str, str, Sequence[int]], Awaitable[object]]] = {
        "get_collection": lambda c, d, k: catalog.get_collection(other_tenant, c),
        "collection_stats": lambda c, d, k: catalog.collection_stats(other_tenant, c),
        "update_collection": lambda c, d, k: catalog.update_collection(
            other_tenant, c, name="Mine", description="x", metadata={"a": 1}
        ),
        "delete_collection": lambda c, d, k: catalog.delete_collection(
            other_tenant, c, inline_chunks=0, max_attempts=3
        ),
        "purge_collection": lambda c, d, k: catalog.purge_collection(other_tenant, c, batch=10),
        "add_document": lambda c, d, k: catalog.add_document(
            other_tenant, c, upload("mine"), max_attempts=3
        ),
        "replace_document": lambda c, d, k: catalog.replace_document(
            other_tenant, d, upload("mine"), max_attempts=3
        ),
        "list_documents": lambda c, d, k: catalog.list_documents(other_tenant, collection_id=c),
        "get_document": lambda c, d, k: catalog.get_document(other_tenant, d),
        "get_content": lambda c, d, k: catalog.get_content(other_tenant, d),
        "get_content_v1": lambda c, d, k: catalog.get_content(other_tenant, d, version=1),
        "list_chunks": lambda c, d, k: catalog.list_chunks(other_tenant, d),
        "delete_document": lambda c, d, k: catalog.delete_document(other_tenant, d),
        "start_version": lambda c, d, k: catalog.start_version(other_tenant, d, 1),
        "commit_version": lambda c, d, k: catalog.commit_version(
            version_commit(their_job, d, 1, new_chunks, worker="their-worker")
        ),
        "finish_version": lambda c, d, k: catalog.finish_version(
            other_tenant, d, 1, "failed", "x"
        ),
        "job_document_status": lambda c, d, k: catalog.job_document_status(
            other_tenant, document.job_id if d == document.id else d,  # type: ignore[arg-type]
            ("ready",), "failed", "x",
        ),
        "index_entries": lambda c, d, k: catalog.index_entries(other_tenant, k),
        "chunks_by_keys": lambda c, d, k: catalog.chunks_by_keys(other_tenant, k),
        "searchable_chunks": lambda c, d, k: catalog.searchable_chunks(other_tenant, k),
        "continuing": lambda c, d, k: catalog.continuing(other_tenant, k),
        "existing_ids": lambda c, d, k: catalog.existing_ids(
            other_tenant, collection_ids=[c], document_ids=[d]
        ),
    }
    missing_keys = [max(ingested.keys) + 1000]
    for name, call in calls.items():
        foreign = await _outcome(call(docs.id, document.id, ingested.keys))
        unknown = await _outcome(call(MISSING, MISSING, missing_keys))
        assert foreign == unknown, name
        assert await snapshot() == before, name
    assert await catalog.find_collection(other_tenant, "Docs") is None
    assert await catalog.chunk_keys(other_tenant, after=0, limit=100) == []
    assert await catalog.changes_after(other_tenant, 0, limit=100) == []
    assert await catalog.last_change(other_tenant) == 0


async def _outcome(call: Awaitable[object]) -> object:
    """The value, or the kind of refusal (type and code), of a call."""
    try:
        return await call
    except (NotFound, InvalidInput, Conflict) as refused:
        return type(refused), refused.code


async def test_continuing_chunks_are_those_whose_section_began_before_them(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    docs = await _collection(catalog, tenant)
    accepted = await catalog.add_document(tenant, docs.id, upload("faq"), max_attempts=3)
    assert accepted.job is not None
    job = await claim(queue, accepted.job.id)
    paths = [(), (), ("Q1",), ("Q1",), ("Q1",), ("Q2",), ("Q1",)]
    new: list[NewChunk] = [
        dataclasses.replace(chunk, heading_path=path)
        for chunk, path in zip(chunks(accepted.document.id, 1, [f"part {n}" for n in range(7)]),
                               paths, strict=True)
    ]
    await catalog.commit_version(version_commit(job, accepted.document.id, 1, new))
    keys = [c.key for c in await catalog.list_chunks(tenant, accepted.document.id, limit=50)]
    # The first chunk continues nothing; a heading change starts a section; the same heading
    # again after another one starts a new one.
    assert await catalog.continuing(tenant, keys) == {keys[1], keys[3], keys[4]}
    assert await catalog.continuing(tenant, [keys[0], keys[4]]) == {keys[4]}
    assert await catalog.continuing(tenant, []) == set()
