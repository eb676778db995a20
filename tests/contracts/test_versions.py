"""The version-commit protocol (:class:`~ragd.stores.catalog.Versions`), run against every
backend: each outcome of ``commit_version`` and that nothing but COMMITTED writes; a version
becoming searchable in one step, never half; start/finish of a version; and the queue's
finaliser ending the document of a job the queue ended itself."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from ragd.db.tables import utcnow
from ragd.errors import InvalidInput
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import Job
from ragd.stores.catalog import INGEST_JOB, Catalog, CommitOutcome, Document, embed_text
from tests.contracts.content import (
    WORKER,
    chunks,
    claim,
    ingest,
    new_collection,
    upload,
    version_commit,
)
from tests.contracts.site import Site


async def _queued(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str, collection_id: str, text: str,
    *, max_attempts: int = 3,
) -> tuple[Document, Job]:
    """A new document and its claimed ingestion job."""
    accepted = await catalog.add_document(
        tenant, collection_id, upload(text), max_attempts=max_attempts
    )
    assert accepted.job is not None
    return accepted.document, await claim(queue, accepted.job.id)


async def _state(catalog: Catalog, tenant: str, document_id: str) -> tuple[object, ...]:
    """Everything a commit could change, as seen through the contract."""
    document = await catalog.get_document(tenant, document_id)
    return (
        None if document is None else (
            document.status, document.active_version, document.chunk_count, document.error
        ),
        [c.id for c in await catalog.list_chunks(tenant, document_id, limit=500)],
        await catalog.last_change(tenant),
    )


async def _get(catalog: Catalog, tenant: str, document_id: str) -> Document:
    document = await catalog.get_document(tenant, document_id)
    assert document is not None
    return document


# -- COMMITTED --------------------------------------------------------------------------------


async def test_claiming_an_ingest_job_marks_its_document_processing(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    # In the claim's own transaction: starting the version then has nothing left to write.
    collection_id = await new_collection(catalog, tenant)
    document, _ = await _queued(catalog, queue, tenant, collection_id, "claimed")
    assert document.status == "queued"
    claimed = await _get(catalog, tenant, document.id)
    assert (claimed.status, claimed.error, claimed.active_version) == ("processing", None, None)
    started = await catalog.start_version(tenant, document.id, 1)
    assert started is not None and started[0].status == "processing"



async def test_a_committed_version_is_searchable_with_its_changes_logged(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    document, job = await _queued(catalog, queue, tenant, collection_id, "hello")
    started = await catalog.start_version(tenant, document.id, 1)
    assert started is not None
    seen, content, collection = started
    assert (seen.id, seen.status, content.content, collection.id) == (
        document.id, "processing", b"hello", collection_id
    )
    new = chunks(document.id, 1, ["first chunk", "second chunk"])
    new[0] = dataclasses.replace(new[0], heading_path=("Guide", "Intro"))
    commit = version_commit(job, document.id, 1, new)
    assert await catalog.commit_version(commit) is CommitOutcome.COMMITTED

    ready = await _get(catalog, tenant, document.id)
    assert (ready.status, ready.active_version, ready.latest_version, ready.chunk_count) == (
        "ready", 1, 1, 2
    )
    assert ready.searchable and ready.ready_at is not None and ready.format == "text"
    assert ready.token_count == sum(c.token_count for c in new)
    assert dict(ready.timings) == {"parse": 0.01}
    stored = await catalog.list_chunks(tenant, document.id)
    keys = [c.key for c in stored]
    assert [c.id for c in stored] == [c.id for c in new]
    assert stored[0].heading_path == ("Guide", "Intro")
    found = await catalog.searchable_chunks(tenant, keys)
    assert sorted(found) == sorted(keys)
    assert all(doc.id == document.id for _, doc in found.values())
    assert [c.key for c in await catalog.chunks_by_keys(tenant, keys)] == keys
    # The change log names every new chunk, and the entries carry the embed text and vector.
    changes = await catalog.changes_after(tenant, 0, limit=100)
    assert sorted((c.op, c.chunk_key) for c in changes) == [("upsert", k) for k in keys]
    entries = {e.key: e for e in await catalog.index_entries(tenant, keys)}
    assert entries[keys[0]].text == embed_text(("Guide", "Intro"), "first chunk")
    assert entries[keys[1]].text == "second chunk"
    vector = entries[keys[0]].vector
    assert vector is not None and vector.tobytes() == new[0].vector
    assert (entries[keys[0]].document_id, entries[keys[0]].collection_id) == (
        document.id, collection_id
    )
    # The collection now records the embedder.
    recorded = await catalog.get_collection(tenant, collection_id)
    assert recorded is not None
    assert (recorded.embedder_name, recorded.embedder_dimension) == (
        commit.embedder_name, commit.embedder_dimension
    )


async def test_a_version_without_chunks_is_ready_and_empty(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    document, job = await _queued(catalog, queue, tenant, collection_id, "blank")
    outcome = await catalog.commit_version(version_commit(job, document.id, 1, []))
    assert outcome is CommitOutcome.COMMITTED
    ready = await _get(catalog, tenant, document.id)
    assert (ready.status, ready.active_version, ready.chunk_count) == ("ready", 1, 0)
    assert await catalog.last_change(tenant) == 0


async def test_a_committed_title_replaces_only_an_automatic_title(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    named = {}
    for title in (None, "Chosen by the client"):
        accepted = await catalog.add_document(
            tenant, collection_id, upload(f"text {title}", title=title, filename="notes.txt"),
            max_attempts=3,
        )
        assert accepted.job is not None
        job = await claim(queue, accepted.job.id)
        commit = dataclasses.replace(
            version_commit(job, accepted.document.id, 1, []),
            title="Release notes", automatic_title="notes.txt",
        )
        assert await catalog.commit_version(commit) is CommitOutcome.COMMITTED
        named[title] = (await _get(catalog, tenant, accepted.document.id)).title
    assert named == {None: "Release notes", "Chosen by the client": "Chosen by the client"}


# -- the refusals: nothing is written -----------------------------------------------------------


async def test_a_worker_without_the_lease_cannot_commit(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    document, job = await _queued(catalog, queue, tenant, collection_id, "hello")
    new = chunks(document.id, 1, ["text"])
    before = await _state(catalog, tenant, document.id)
    impostor = version_commit(job, document.id, 1, new, worker="someone-else")
    assert await catalog.commit_version(impostor) is CommitOutcome.LEASE_LOST
    # The lease ran out and a second worker (whose clock is past it) took the job over: the
    # first worker, presumed dead, is fenced off.
    later = site.queue(clock=lambda: utcnow() + timedelta(seconds=31))
    taken = await later.claim("worker-2", [INGEST_JOB])
    assert taken is not None and taken.id == job.id
    assert await catalog.commit_version(version_commit(job, document.id, 1, new)) \
        is CommitOutcome.LEASE_LOST
    assert await _state(catalog, tenant, document.id) == before
    # A finished job cannot commit either.
    assert await later.complete(job.id, "worker-2")
    finished = version_commit(job, document.id, 1, new, worker="worker-2")
    assert await catalog.commit_version(finished) is CommitOutcome.LEASE_LOST
    assert await _state(catalog, tenant, document.id) == before


@pytest.mark.parametrize("removed", ["document", "collection"])
async def test_a_version_of_a_deleted_document_is_gone(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str, removed: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    document, job = await _queued(catalog, queue, tenant, collection_id, "hello")
    if removed == "document":
        assert await catalog.delete_document(tenant, document.id)
    else:
        # Deferred: the collection is hidden but its rows are still there.
        await catalog.delete_collection(tenant, collection_id, inline_chunks=-1, max_attempts=3)
    last = await catalog.last_change(tenant)
    outcome = await catalog.commit_version(
        version_commit(job, document.id, 1, chunks(document.id, 1, ["late"]))
    )
    assert outcome is CommitOutcome.GONE
    assert await catalog.last_change(tenant) == last
    assert await catalog.chunk_keys(tenant, after=0, limit=10) == []


async def test_a_second_commit_of_a_version_is_already_committed(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    document, job = await _queued(catalog, queue, tenant, collection_id, "hello")
    first = version_commit(job, document.id, 1, chunks(document.id, 1, ["one", "two"]))
    assert await catalog.commit_version(first) is CommitOutcome.COMMITTED
    before = await _state(catalog, tenant, document.id)
    # A retried attempt (the worker crashed after committing) commits the same version again.
    retry = version_commit(job, document.id, 1, chunks(document.id, 1, ["other"], seed=9))
    assert await catalog.commit_version(retry) is CommitOutcome.ALREADY_COMMITTED
    assert await _state(catalog, tenant, document.id) == before


async def test_a_version_replaced_meanwhile_is_superseded(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    document, job = await _queued(catalog, queue, tenant, collection_id, "version one")
    replaced = await catalog.replace_document(
        tenant, document.id, upload("version two"), max_attempts=3
    )
    assert replaced is not None and replaced.job is not None
    before = await _state(catalog, tenant, document.id)
    outcome = await catalog.commit_version(
        version_commit(job, document.id, 1, chunks(document.id, 1, ["stale"]))
    )
    assert outcome is CommitOutcome.SUPERSEDED
    assert await _state(catalog, tenant, document.id) == before
    assert await catalog.start_version(tenant, document.id, 1) is None  # not the latest
    # The replaced job was asked to stop; the new version's job commits.
    assert await queue.is_cancel_requested(job.id)
    new_job = await claim(queue, replaced.job.id, worker="worker-2")
    commit = version_commit(
        new_job, document.id, 2, chunks(document.id, 2, ["fresh"]), worker="worker-2"
    )
    assert await catalog.commit_version(commit) is CommitOutcome.COMMITTED
    assert (await _get(catalog, tenant, document.id)).active_version == 2


async def test_another_embedder_is_refused_and_writes_nothing(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    await ingest(catalog, queue, tenant, collection_id, ["first"])
    document, job = await _queued(catalog, queue, tenant, collection_id, "second")
    before = await _state(catalog, tenant, document.id)
    commit = version_commit(
        job, document.id, 1, chunks(document.id, 1, ["x"]), embedder="another", dimension=4
    )
    with pytest.raises(InvalidInput) as caught:
        await catalog.commit_version(commit)
    assert caught.value.code == "embedder_mismatch"
    assert await _state(catalog, tenant, document.id) == before


# -- one step, never half -----------------------------------------------------------------------


async def test_a_new_version_replaces_the_old_one_in_one_step(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    """While version 2 commits, readers in another process see all of version 1 or all of
    version 2: never a mix, never neither."""
    collection_id = await new_collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, collection_id, ["a1", "a2", "a3"])
    document_id = ingested.document.id
    replaced = await catalog.replace_document(tenant, document_id, upload("v2"), max_attempts=3)
    assert replaced is not None and replaced.job is not None
    job = await claim(queue, replaced.job.id)
    new = chunks(document_id, 2, ["b1", "b2", "b3", "b4", "b5"], seed=5)
    reader = site.another_process().catalog()
    seen: list[tuple[int, ...]] = []
    committed = asyncio.Event()

    async def read() -> None:
        while True:
            done = committed.is_set()
            listed = await reader.list_chunks(tenant, document_id, limit=500)
            seen.append(tuple(c.version for c in listed))
            if done:
                return
            await asyncio.sleep(0)

    watcher = asyncio.create_task(read())
    await asyncio.sleep(0)
    assert await catalog.commit_version(version_commit(job, document_id, 2, new)) \
        is CommitOutcome.COMMITTED
    committed.set()
    await watcher
    assert set(seen) <= {(1, 1, 1), (2, 2, 2, 2, 2)}
    assert seen[-1] == (2, 2, 2, 2, 2)
    found = await reader.searchable_chunks(tenant, list(ingested.keys))
    assert found == {}  # the old version's chunks are gone from search in the same step
    changes = await catalog.changes_after(tenant, 0, limit=100)
    deleted = {c.chunk_key for c in changes if c.op == "delete"}
    assert set(ingested.keys) <= deleted
    # The old version's bytes go with it.
    assert await catalog.get_content(tenant, document_id, version=1) is None


# -- start and finish ---------------------------------------------------------------------------


async def test_start_marks_processing_only_the_latest_version(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, collection_id, ["a"])
    document_id = ingested.document.id
    # Starting the active version again (a retried job) leaves it ready.
    started = await catalog.start_version(tenant, document_id, 1)
    assert started is not None and started[0].status == "ready"
    assert await catalog.start_version(tenant, document_id, 2) is None
    await catalog.delete_document(tenant, document_id)
    assert await catalog.start_version(tenant, document_id, 1) is None


async def test_finish_records_the_latest_version_only(
    catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, collection_id, ["a"])
    document_id = ingested.document.id
    # A committed version is not undone by a late failure.
    await catalog.finish_version(tenant, document_id, 1, "failed", "late")
    assert (await _get(catalog, tenant, document_id)).status == "ready"
    await catalog.replace_document(tenant, document_id, upload("v2"), max_attempts=3)
    await catalog.finish_version(tenant, document_id, 1, "failed", "stale")  # not the latest
    assert (await _get(catalog, tenant, document_id)).status == "queued"
    await catalog.finish_version(tenant, document_id, 2, "failed", "parse error")
    failed = await _get(catalog, tenant, document_id)
    assert (failed.status, failed.error, failed.active_version) == ("failed", "parse error", 1)
    assert failed.searchable  # version 1 stays searchable


async def test_a_jobs_document_status_changes_only_from_the_given_states(
    catalog: Catalog, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    accepted = await catalog.add_document(tenant, collection_id, upload("a"), max_attempts=3)
    assert accepted.job is not None
    job_id, document_id = accepted.job.id, accepted.document.id
    await catalog.job_document_status(tenant, job_id, ("processing",), "failed", "x")
    assert (await _get(catalog, tenant, document_id)).status == "queued"
    await catalog.job_document_status(tenant, job_id, ("queued",), "cancelled", "by request")
    cancelled = await _get(catalog, tenant, document_id)
    assert (cancelled.status, cancelled.error) == ("cancelled", "by request")
    await catalog.job_document_status(tenant, "no-such-job", ("cancelled",), "queued", None)
    assert (await _get(catalog, tenant, document_id)).status == "cancelled"


# -- the queue's finaliser ----------------------------------------------------------------------


async def test_a_job_the_queue_ends_ends_its_document(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    # Cancelled while queued.
    accepted = await catalog.add_document(tenant, collection_id, upload("a"), max_attempts=1)
    assert accepted.job is not None
    await queue.cancel(tenant, accepted.job.id)
    cancelled = await _get(catalog, tenant, accepted.document.id)
    assert (cancelled.status, cancelled.error) == ("cancelled", "cancelled by request")
    # Its worker died on the last attempt: the next claim ends the job, and the document.
    document, job = await _queued(catalog, queue, tenant, collection_id, "b", max_attempts=1)
    await catalog.start_version(tenant, document.id, 1)
    later = site.queue(clock=lambda: utcnow() + timedelta(seconds=31))
    assert await later.claim("worker-2", [INGEST_JOB]) is None
    failed = await _get(catalog, tenant, document.id)
    assert failed.status == "failed" and failed.error is not None
    assert "lease expired" in failed.error
    # A worker that fails its last attempt ends it too.
    document, job = await _queued(catalog, queue, tenant, collection_id, "c", max_attempts=1)
    assert await queue.fail(job.id, WORKER, "boom")
    assert (await _get(catalog, tenant, document.id)).status == "failed"
