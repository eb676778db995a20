""":class:`~ragd.stores.catalog.Versions` over SQLAlchemy: the version-commit protocol.

A worker starts a version, commits it (its chunks, the previous version's removal and the
matching change-log rows in one transaction that first checks the job's lease and that the
version is still the latest) or finishes it otherwise; :func:`finalise_ingest_job` ends the
document of an ingestion job that the queue ended itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.tables import ChunkRow, CollectionRow, DocumentRow, DocumentVersionRow, JobRow, utcnow
from ragd.jobs.queue import Job
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
    VersionCommit,
    check_embedder,
)
from ragd.stores.sql_changes import add_chunks, remove_chunks

__all__ = ["SqlVersions", "finalise_ingest_job"]


class SqlVersions(SqlPart):
    """What the ingestion worker does to a document version, each step one transaction."""

    async def start_version(
        self, tenant_id: str, document_id: str, version: int
    ) -> tuple[Document, DocumentContent, Collection] | None:
        async with self._db.transaction() as s:
            row = await document_row(s, tenant_id, document_id)
            if row is None or row.latest_version != version:
                return None
            found = await active_collection(s, tenant_id, row.collection_id)
            blob = await s.get(DocumentVersionRow, (row.id, version))
            if found is None or blob is None:
                return None
            if row.active_version != version:
                row.status = "processing"
                row.error = None
                row.updated_at = utcnow()
            await s.flush()
            return document(row), content(blob), collection(found, 0)

    async def commit_version(self, commit: VersionCommit) -> CommitOutcome:
        now = utcnow()
        async with self._db.transaction() as s:
            job = await s.get(JobRow, commit.job_id)
            if job is None or job.status != "running" or job.lease_owner != commit.worker_id:
                return CommitOutcome.LEASE_LOST
            row = await document_row(s, commit.tenant_id, commit.document_id)
            if row is None:
                return CommitOutcome.GONE
            if row.active_version == commit.version:
                return CommitOutcome.ALREADY_COMMITTED
            if row.latest_version != commit.version:
                return CommitOutcome.SUPERSEDED
            found = await active_collection(s, commit.tenant_id, row.collection_id)
            if found is None:
                return CommitOutcome.GONE
            _record_embedder(found, commit)
            # Remove the previous version's chunks (and any leftovers of this version).
            await remove_chunks(s, commit.tenant_id, ChunkRow.document_id == row.id)
            await add_chunks(
                s, commit.tenant_id, row.collection_id, row.id, commit.version, commit.chunks,
                now,
            )
            await s.execute(
                delete(DocumentVersionRow).where(
                    DocumentVersionRow.document_id == row.id,
                    DocumentVersionRow.version < commit.version,
                )
            )
            row.active_version = commit.version
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
            return CommitOutcome.COMMITTED

    async def finish_version(
        self, tenant_id: str, document_id: str, version: int, status: DocumentStatus,
        error: str | None,
    ) -> None:
        async with self._db.transaction() as s:
            row = await document_row(s, tenant_id, document_id)
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


async def finalise_ingest_job(s: AsyncSession, job: Job) -> None:
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


def _record_embedder(found: CollectionRow, commit: VersionCommit) -> None:
    if commit.embedder_name is None:
        return
    check_embedder(
        (found.embedder_name, found.embedder_dimension),
        (commit.embedder_name, commit.embedder_dimension),
    )
    if found.embedder_name is None:
        found.embedder_name = commit.embedder_name
        found.embedder_dimension = commit.embedder_dimension
