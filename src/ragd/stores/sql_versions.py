""":class:`~ragd.stores.catalog.Versions` over SQLAlchemy: the version-commit protocol.

A worker starts a version, commits it (its chunks, the previous version's removal and the
matching change-log rows in one transaction that first checks the job's lease and that the
version is still the latest) or finishes it otherwise; :func:`finalise_ingest_job` ends the
document of an ingestion job that the queue ended itself.

Those checks hold until the commit because they are made through locks
(:mod:`ragd.stores._sql_locks`): the collection (shared, so that it cannot be deleted under
the commit), the job (so that its lease cannot be taken over: a claimer skips a locked job)
and the document (so that it cannot be replaced or deleted) are locked in that order before
they are read; the embedder is recorded with one conditional update, so that of two first
ingestions with different embedders the second is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.clock import database_now
from ragd.db.tables import (
    ChunkRow,
    CollectionRow,
    DocumentRow,
    DocumentVersionRow,
    JobRow,
    utcnow,
)
from ragd.jobs.queue import Job, mark_succeeded
from ragd.stores._sql_locks import locked_collection, locked_document, locked_job
from ragd.stores._sql_rows import (
    SqlPart,
    active_collection,
    collection,
    content,
    document,
    document_row,
    dumps,
)
from ragd.stores.catalog import (
    Collection,
    CommitOutcome,
    Document,
    DocumentContent,
    DocumentStatus,
    NewChunk,
    VersionCommit,
    check_embedder,
)
from ragd.stores.sql_changes import (
    add_chunks,
    log_upserts,
    remove_chunks,
    stage_chunks,
    staged_chunks,
)

__all__ = ["COMMIT_BATCH", "SqlVersions", "finalise_ingest_job"]

#: The default batch: ~1,000 chunk rows (text + a 384-float vector) take a fraction of a second
#: to insert, so writers queued behind a huge document wait that long, not for all of it.
COMMIT_BATCH = 1000


class SqlVersions(SqlPart):
    """What the ingestion worker does to a document version, each step one transaction."""

    #: Versions with more chunks than this are staged in batches of this many.
    commit_batch = COMMIT_BATCH

    async def start_version(
        self, tenant_id: str, document_id: str, version: int
    ) -> tuple[Document, DocumentContent, Collection] | None:
        # The reads (the original bytes among them) outside the writer lane; then one short
        # UPDATE. Whatever happens in between (a replacement, a deletion) only makes the
        # UPDATE a no-op: the commit checks the lease and the latest version again.
        async with self._db.read() as s:
            row = await document_row(s, tenant_id, document_id)
            if row is None or row.latest_version != version:
                return None
            found = await active_collection(s, tenant_id, row.collection_id)
            blob = await s.get(DocumentVersionRow, (row.id, version))
            if found is None or blob is None:
                return None
            started = document(row), content(blob), collection(found, 0)
            mark = row.active_version != version and (
                row.status != "processing" or row.error is not None
            )
        if mark:
            async with self._db.transaction() as s:
                await _mark_processing(s, tenant_id, document_id, version)
            started = (replace(started[0], status="processing", error=None), *started[1:])
        return started

    async def commit_version(self, commit: VersionCommit) -> CommitOutcome:
        """One transaction for a version of up to ``commit_batch`` chunks. A larger one is
        first staged in batches of that many, each a short transaction that re-checks the
        lease (so one huge document never holds the writer lane for long, and a worker that
        lost its job stops writing), then activated by one transaction that removes the old
        version and logs the new one: it becomes searchable in one step, never half."""
        if len(commit.chunks) <= self.commit_batch:
            return await self._activate(commit, staged=False)
        batches = [
            commit.chunks[start : start + self.commit_batch]
            for start in range(0, len(commit.chunks), self.commit_batch)
        ]
        for index, batch in enumerate(batches):
            outcome = await self._stage(commit, batch, first=index == 0)
            if outcome is not None:
                return outcome
        return await self._activate(commit, staged=True)

    async def _stage(
        self, commit: VersionCommit, batch: Sequence[NewChunk], *, first: bool
    ) -> CommitOutcome | None:
        async with self._db.transaction() as s:
            checked = await _check(s, commit)
            if isinstance(checked, CommitOutcome):
                return checked
            row, _, _ = checked
            if first:
                # Leftovers of an attempt of this version that died while staging.
                await s.execute(delete(ChunkRow).where(
                    ChunkRow.document_id == row.id, ChunkRow.version == commit.version,
                ))
            await stage_chunks(
                s, commit.tenant_id, row.collection_id, row.id, commit.version, batch,
                utcnow(),
            )
            return None

    async def _activate(self, commit: VersionCommit, *, staged: bool) -> CommitOutcome:
        now = utcnow()
        async with self._db.transaction() as s:
            checked = await _check(s, commit)
            if isinstance(checked, CommitOutcome):
                return checked
            row, found, job = checked
            await _record_embedder(s, found, commit)
            if staged:
                # The previous version's chunks go; the staged ones become the version.
                await remove_chunks(s, commit.tenant_id, and_(
                    ChunkRow.document_id == row.id, ChunkRow.version != commit.version,
                ))
                logged = await log_upserts(s, commit.tenant_id, row.id, now)
                if logged != len(commit.chunks):
                    raise RuntimeError(
                        f"staged {logged} chunks of version {commit.version}, "
                        f"expected {len(commit.chunks)}"
                    )
            else:
                # Remove the previous version's chunks (and any leftovers of this version).
                await remove_chunks(s, commit.tenant_id, ChunkRow.document_id == row.id)
                await add_chunks(
                    s, commit.tenant_id, row.collection_id, row.id, commit.version,
                    commit.chunks, now,
                )
            if commit.version > 1:  # versions start at 1: the first has none before it
                await s.execute(
                    delete(DocumentVersionRow).where(
                        DocumentVersionRow.document_id == row.id,
                        DocumentVersionRow.version < commit.version,
                    )
                )
            row.active_version = commit.version
            if commit.title and row.title == commit.automatic_title:
                row.title = commit.title[:MAX_TITLE_CHARS]
            row.status = "ready"
            row.error = None
            row.format = commit.format
            row.pages = commit.pages
            row.chunk_count = len(commit.chunks)
            row.token_count = sum(chunk.token_count for chunk in commit.chunks)
            row.keywords = dumps(list(commit.keywords))
            row.warnings = dumps(list(commit.warnings))
            row.timings = dumps(dict(commit.timings))
            row.ready_at = now
            row.updated_at = now
            if commit.completes_job:
                mark_succeeded(job, await database_now(s), _job_timings(commit),
                               ("index", len(commit.chunks), len(commit.chunks)))
            return CommitOutcome.COMMITTED

    async def finish_version(
        self, tenant_id: str, document_id: str, version: int, status: DocumentStatus,
        error: str | None,
    ) -> None:
        async with self._db.transaction() as s:
            row = await locked_document(s, tenant_id, document_id)
            if row is None or row.latest_version != version:
                return
            if row.active_version == version and status != "ready":
                return  # that version is already committed; nothing to undo
            row.status = status
            row.error = error
            row.updated_at = utcnow()

    async def job_document_status(
        self, tenant_id: str, job_id: str, when: Sequence[str], status: DocumentStatus,
        error: str | None,
    ) -> None:
        async with self._db.transaction() as s:
            await s.execute(
                update(DocumentRow)
                .where(
                    DocumentRow.tenant_id == tenant_id,
                    DocumentRow.job_id == job_id,
                    DocumentRow.status.in_(list(when)),
                )
                .values(status=status, error=error, updated_at=utcnow())
            )


class IngestJobHooks:
    """What the queue does to an ``ingest`` job's document in its own transactions."""

    async def __call__(self, s: AsyncSession, job: Job) -> None:
        """Finaliser: see :func:`_finalise`."""
        await _finalise(s, job)

    async def claimed(self, s: AsyncSession, job: Job) -> None:
        """The job was claimed: its version is now being processed."""
        await _mark_processing(
            s, job.tenant_id, str(job.payload.get("document_id", "")),
            int(job.payload.get("version", 0)),
        )


async def _mark_processing(
    s: AsyncSession, tenant_id: str, document_id: str, version: int
) -> None:
    """The document's ``version`` is being processed, unless a newer one was uploaded
    meanwhile or this one is already active (then nothing changes)."""
    await s.execute(
        update(DocumentRow)
        .where(
            DocumentRow.id == document_id, DocumentRow.tenant_id == tenant_id,
            DocumentRow.latest_version == version,
            DocumentRow.active_version.is_distinct_from(version),
        )
        .values(status="processing", error=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


#: The ``ingest`` kind's queue hooks (a finaliser that also sees claims).
finalise_ingest_job = IngestJobHooks()


async def _finalise(s: AsyncSession, job: Job) -> None:
    """Queue finaliser for ``ingest`` jobs that the queue ended itself (the worker died on
    the last attempt, or cancellation was requested): the document leaves queued/processing
    with the job's outcome instead of staying "in progress" forever."""
    status = "cancelled" if job.status == "cancelled" else "failed"
    error = "cancelled by request" if status == "cancelled" else job.error
    await s.execute(
        update(DocumentRow)
        .where(DocumentRow.job_id == job.id, DocumentRow.status.in_(("queued", "processing")))
        .values(status=status, error=error, updated_at=utcnow())
    )
    # Rows the job staged for a version that will now never be activated (never logged, so
    # no index has them).
    await s.execute(delete(ChunkRow).where(
        ChunkRow.document_id.in_(select(DocumentRow.id).where(DocumentRow.job_id == job.id)),
        staged_chunks(),
    ))


def _job_timings(commit: VersionCommit) -> dict[str, float]:
    timings = dict(commit.timings)
    if commit.index_started is not None:
        timings["index"] = round(time.perf_counter() - commit.index_started, 6)
    timings["total"] = round(
        sum(timings.get(stage, 0.0) for stage in ("parse", "chunk", "embed", "index")), 6
    )
    return timings


#: The longest title a document keeps (the upload's limit too).
MAX_TITLE_CHARS = 500


async def _check(
    s: AsyncSession, commit: VersionCommit
) -> CommitOutcome | tuple[DocumentRow, CollectionRow, JobRow]:
    """Whether ``commit``'s worker may still write its version: the outcome that stops it,
    or the document, collection and job rows to write to, locked (collection, job,
    document)."""
    seen = await document_row(s, commit.tenant_id, commit.document_id)  # which collection
    found = None if seen is None else await locked_collection(
        s, commit.tenant_id, seen.collection_id, exclusive=False
    )
    job = await locked_job(s, commit.job_id)
    if job is None or job.status != "running" or job.lease_owner != commit.worker_id:
        return CommitOutcome.LEASE_LOST
    if found is None:
        row = None
    elif s.get_bind().dialect.name == "postgresql":
        row = await locked_document(s, commit.tenant_id, commit.document_id)
    else:
        # The transaction holds the whole database (BEGIN IMMEDIATE): the row read above
        # is the row as it stands; reading it again would only cost a statement.
        row = seen
    if row is None or found is None:
        return CommitOutcome.GONE
    if row.active_version == commit.version:
        return CommitOutcome.ALREADY_COMMITTED
    if row.latest_version != commit.version:
        return CommitOutcome.SUPERSEDED
    return row, found, job


async def _record_embedder(s: AsyncSession, found: CollectionRow, commit: VersionCommit) -> None:
    """Refuse another embedder than the collection's; the first ingestion records its own.

    Recording is one conditional update (only while none is recorded): of two first
    ingestions with different embedders, the second waits for the first to commit, finds
    the row no longer matching, reads what the first recorded and is refused.
    """
    if commit.embedder_name is None:
        return
    configured = (commit.embedder_name, commit.embedder_dimension)
    recorded = (found.embedder_name, found.embedder_dimension)
    if recorded == (None, None):
        claimed = await s.execute(
            update(CollectionRow)
            .where(CollectionRow.id == found.id, CollectionRow.embedder_name.is_(None))
            .values(embedder_name=commit.embedder_name,
                    embedder_dimension=commit.embedder_dimension)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return
        name, dimension = (await s.execute(
            select(CollectionRow.embedder_name, CollectionRow.embedder_dimension)
            .where(CollectionRow.id == found.id)
        )).one()
        recorded = (name, dimension)
    check_embedder(recorded, configured)
