""":class:`~ragd.stores.catalog.Catalog` over SQLAlchemy (SQLite today, PostgreSQL later).

This module holds collections and documents (uploads, versions' bytes, deletion); the rest
of the catalog comes from one part per idea, which :class:`SqlCatalog` inherits:

* :mod:`ragd.stores.sql_versions`: the version-commit protocol (start, commit, finish a
  version; a job's document status; the ingest job finaliser);
* :mod:`ragd.stores.sql_changes`: the index change log (its writers, which every chunk insert
  and removal goes through, and its readers for the derived indexes);
* :mod:`ragd.stores.sql_reader`: the search path's reads.

Every write that decides on what it read locks what it read first, in the order of
:mod:`ragd.stores._sql_locks` (collection, job, document): so an upload cannot land in a
collection being deleted, two replacements of one document each add a version, and a
deletion waits for a version being committed and then removes (and logs) its chunks too.
Names and content are unique by constraints; losing such a race is a clean
:class:`~ragd.errors.Conflict` (or, for identical uploads, the duplicate), never a 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.cursor import encode_cursor, newest_first
from ragd.db.engine import Database
from ragd.db.tables import (
    ChunkRow,
    CollectionRow,
    DocumentRow,
    DocumentVersionRow,
    JobRow,
    new_id,
    utcnow,
)
from ragd.errors import Conflict, InvalidInput, NotFound
from ragd.jobs.queue import Job, job_from_row, new_job_row
from ragd.stores._sql_locks import locked_collection, locked_document_and_job
from ragd.stores._sql_rows import (
    chunk,
    collection,
    content,
    document,
    document_row,
    dumps,
)
from ragd.stores.catalog import (
    DELETE_COLLECTION_JOB,
    DOCUMENT_STATUSES,
    INGEST_JOB,
    UNTITLED,
    Accepted,
    Collection,
    CollectionRemoval,
    CollectionStats,
    Document,
    DocumentContent,
    DocumentStatus,
    Page,
    StoredChunk,
    Upload,
)
from ragd.stores.metadata import check_metadata
from ragd.stores.sql_changes import SqlChangeLog, active_chunks, np_vector, remove_chunks
from ragd.stores.sql_reader import SqlChunkReader
from ragd.stores.sql_versions import COMMIT_BATCH, SqlVersions, finalise_ingest_job


def _name_key(name: str) -> str:
    return name.strip().casefold()


class SqlCatalog(SqlVersions, SqlChangeLog, SqlChunkReader):
    """The SQL catalog: collections and documents here, the version-commit protocol, the
    change log and the search reads from its parts. All writes run in
    ``Database.transaction()`` (``BEGIN IMMEDIATE``). Built as ``SqlCatalog(db)``; a version
    of more than ``commit_batch`` chunks is staged in batches of that many before it is
    activated."""

    def __init__(self, db: Database, *, commit_batch: int = COMMIT_BATCH) -> None:
        super().__init__(db)
        if commit_batch < 1:
            raise ValueError("commit_batch must be at least 1")
        self.commit_batch = commit_batch

    # -- collections -----------------------------------------------------------------------

    async def create_collection(
        self, tenant_id: str, name: str, *, description: str | None,
        metadata: Mapping[str, Any],
    ) -> Collection:
        metadata = check_metadata(dict(metadata))
        now = utcnow()
        try:
            async with self._db.transaction() as s:
                row = CollectionRow(
                    tenant_id=tenant_id, name=name.strip(), name_key=_name_key(name),
                    description=description, metadata_json=dumps(dict(metadata)),
                    status="active", created_at=now, updated_at=now,
                )
                s.add(row)
                await s.flush()
                return collection(row, 0)
        except IntegrityError:
            raise Conflict(
                f"a collection named {name.strip()!r} already exists", code="collection_exists"
            ) from None

    async def list_collections(
        self, tenant_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Collection]:
        _check_limit(limit)
        query = select(CollectionRow, _document_count()).where(
            CollectionRow.tenant_id == tenant_id, CollectionRow.status == "active"
        )
        query = newest_first(query, CollectionRow.created_at, CollectionRow.id, cursor)
        async with self._db.read() as s:
            rows = (await s.execute(query.limit(limit + 1))).all()
        items = tuple(collection(cast(CollectionRow, r[0]), cast(int, r[1])) for r in rows[:limit])
        return Page(items, _next_cursor(items, len(rows) > limit))

    async def get_collection(self, tenant_id: str, collection_id: str) -> Collection | None:
        async with self._db.read() as s:
            found = (
                await s.execute(
                    select(CollectionRow, _document_count()).where(
                        CollectionRow.id == collection_id,
                        CollectionRow.tenant_id == tenant_id,
                        CollectionRow.status == "active",
                    )
                )
            ).first()
        return None if found is None else collection(found[0], found[1])

    async def find_collection(self, tenant_id: str, name: str) -> Collection | None:
        async with self._db.read() as s:
            found = (
                await s.execute(
                    select(CollectionRow, _document_count()).where(
                        CollectionRow.tenant_id == tenant_id,
                        CollectionRow.name_key == _name_key(name),
                        CollectionRow.status == "active",
                    )
                )
            ).first()
        return None if found is None else collection(found[0], found[1])

    async def collection_stats(
        self, tenant_id: str, collection_id: str
    ) -> CollectionStats | None:
        # The collection outer-joined to its documents, grouped by status: no row at all
        # means no such collection of this tenant; one NULL-status row, no documents.
        query = (
            select(DocumentRow.status, func.count(DocumentRow.id),
                   func.coalesce(func.sum(DocumentRow.chunk_count), 0))
            .select_from(CollectionRow)
            .outerjoin(DocumentRow, and_(DocumentRow.collection_id == CollectionRow.id,
                                         DocumentRow.tenant_id == CollectionRow.tenant_id))
            .where(CollectionRow.id == collection_id, CollectionRow.tenant_id == tenant_id,
                   CollectionRow.status == "active")
            .group_by(DocumentRow.status)
        )
        async with self._db.read() as s:
            rows = (await s.execute(query)).all()
        if not rows:
            return None
        documents: dict[DocumentStatus, int] = dict.fromkeys(DOCUMENT_STATUSES, 0)
        chunks = 0
        for status, count, chunk_count in rows:
            if status is not None:
                documents[cast(DocumentStatus, status)] = int(count)
                chunks += int(chunk_count)
        return CollectionStats(documents=documents, chunks=chunks)

    async def update_collection(
        self, tenant_id: str, collection_id: str, *, name: str | None = None,
        description: str | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Collection | None:
        if metadata is not None:
            metadata = check_metadata(dict(metadata))
        try:
            async with self._db.transaction() as s:
                row = await locked_collection(s, tenant_id, collection_id, exclusive=True)
                if row is None:
                    return None
                if name is not None:
                    row.name = name.strip()
                    row.name_key = _name_key(name)
                if description is not None:
                    row.description = description
                if metadata is not None:
                    row.metadata_json = dumps(dict(metadata))
                row.updated_at = utcnow()
                await s.flush()
                count = await s.scalar(_document_count_of(row.id))
                return collection(row, int(count or 0))
        except IntegrityError:
            raise Conflict(
                f"a collection named {(name or '').strip()!r} already exists",
                code="collection_exists",
            ) from None

    async def delete_collection(
        self, tenant_id: str, collection_id: str, *, inline_chunks: int, max_attempts: int
    ) -> CollectionRemoval | None:
        async with self._db.transaction() as s:
            # Exclusive: waits for the writes inside the collection that hold it shared
            # (commits, uploads), which then cannot start until this one has ended.
            row = await locked_collection(s, tenant_id, collection_id, exclusive=True)
            if row is None:
                return None
            chunks = int(
                await s.scalar(
                    select(func.count()).select_from(ChunkRow).where(
                        ChunkRow.collection_id == collection_id
                    )
                ) or 0
            )
            await _cancel_document_jobs(s, tenant_id, collection_id=collection_id)
            if chunks <= inline_chunks:
                await remove_chunks(s, tenant_id, ChunkRow.collection_id == collection_id)
                await s.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))
                return CollectionRemoval(chunks=chunks, job=None)
            row.status = "deleting"
            row.name_key = f"{row.id}:deleting"  # the name is free again at once
            row.updated_at = utcnow()
            job_row = new_job_row(
                tenant_id, DELETE_COLLECTION_JOB, {"collection_id": collection_id},
                max_attempts=max_attempts,
            )
            s.add(job_row)
            await s.flush()
            return CollectionRemoval(chunks=chunks, job=job_from_row(job_row))

    async def purge_collection(self, tenant_id: str, collection_id: str, *, batch: int) -> bool:
        async with self._db.transaction() as s:
            row = (
                await s.scalars(
                    select(CollectionRow).where(
                        CollectionRow.id == collection_id, CollectionRow.tenant_id == tenant_id
                    ).with_for_update()
                )
            ).first()
            if row is None:
                return True
            document_ids = list(
                (
                    await s.scalars(
                        select(DocumentRow.id)
                        .where(DocumentRow.collection_id == collection_id)
                        .limit(batch)
                    )
                ).all()
            )
            if document_ids:
                await remove_chunks(s, tenant_id, ChunkRow.document_id.in_(document_ids))
                await s.execute(delete(DocumentRow).where(DocumentRow.id.in_(document_ids)))
                if len(document_ids) == batch:
                    return False
            await s.execute(delete(CollectionRow).where(CollectionRow.id == collection_id))
            return True

    # -- documents -------------------------------------------------------------------------

    async def add_document(
        self, tenant_id: str, collection_id: str, upload: Upload, *, max_attempts: int
    ) -> Accepted:
        try:
            return await self._add_document(tenant_id, collection_id, upload, max_attempts)
        except IntegrityError:
            # Two identical uploads raced: the other one committed first.
            existing = await self._by_content(tenant_id, collection_id, upload.content_sha256)
            if existing is not None:
                return Accepted(document=existing, job=None, duplicate=True)
        # The upload it raced was deleted again meanwhile: nothing is in the way any more.
        return await self._add_document(tenant_id, collection_id, upload, max_attempts)

    async def _add_document(
        self, tenant_id: str, collection_id: str, upload: Upload, max_attempts: int
    ) -> Accepted:
        now = utcnow()
        async with self._db.transaction() as s:
            # Shared: a deletion of the collection waits for this upload (and then cancels
            # its job), or this upload waits for the deletion and finds no collection.
            if await locked_collection(s, tenant_id, collection_id, exclusive=False) is None:
                raise NotFound("collection not found", code="collection_not_found")
            existing = await _document_with_content(
                s, collection_id, upload.content_sha256, lock=True
            )
            if existing is not None and existing.status in ("failed", "cancelled"):
                # Uploading it again is the natural way to retry: queue the version again.
                job_row = new_job_row(
                    tenant_id, INGEST_JOB,
                    {"document_id": existing.id, "version": existing.latest_version},
                    max_attempts=max_attempts, now=now,
                )
                s.add(job_row)
                await s.flush()
                existing.job_id = job_row.id
                existing.status = "queued"
                existing.error = None
                existing.updated_at = now
                return Accepted(
                    document=document(existing), job=job_from_row(job_row), duplicate=False
                )
            if existing is not None:
                return Accepted(document=document(existing), job=None, duplicate=True)
            # Ids chosen here, so the three rows go in one flush (no UPDATE for the job id).
            row = DocumentRow(
                id=new_id(), tenant_id=tenant_id, collection_id=collection_id,
                title=upload.title or upload.filename or UNTITLED,
                filename=upload.filename, content_type=upload.content_type, format=None,
                content_sha256=upload.content_sha256, size_bytes=len(upload.content),
                metadata_json=dumps(dict(upload.metadata or {})), status="queued",
                latest_version=1, chunk_count=0, token_count=0, keywords="[]",
                warnings="[]", timings="{}", created_at=now, updated_at=now,
            )
            job_row = new_job_row(
                tenant_id, INGEST_JOB, {"document_id": row.id, "version": 1},
                max_attempts=max_attempts, now=now,
            )
            job_row.id = row.job_id = new_id()
            s.add_all([row, _version_row(row, 1, upload, now), job_row])
            await s.flush()
            return Accepted(document=document(row), job=job_from_row(job_row), duplicate=False)

    async def _by_content(
        self, tenant_id: str, collection_id: str, sha256: str
    ) -> Document | None:
        async with self._db.read() as s:
            row = await _document_with_content(s, collection_id, sha256)
            return None if row is None or row.tenant_id != tenant_id else document(row)

    async def replace_document(
        self, tenant_id: str, document_id: str, upload: Upload, *, max_attempts: int
    ) -> Accepted | None:
        try:
            return await self._replace_document(tenant_id, document_id, upload, max_attempts)
        except IntegrityError:
            # Another document took this content after the check below (the constraint).
            raise Conflict(
                "another document of this collection already has this content",
                code="duplicate_content",
            ) from None

    async def _replace_document(
        self, tenant_id: str, document_id: str, upload: Upload, max_attempts: int
    ) -> Accepted | None:
        now = utcnow()
        async with self._db.transaction() as s:
            # The job it supersedes, then the document: a version being committed finishes
            # first, and of two replacements the second sees the first's version.
            row = await locked_document_and_job(s, tenant_id, document_id)
            if row is None:
                return None
            if row.content_sha256 == upload.content_sha256 and row.status not in (
                "failed", "cancelled"
            ):
                return Accepted(document=document(row), job=None, duplicate=True)
            other = await _document_with_content(s, row.collection_id, upload.content_sha256)
            if other is not None and other.id != row.id:
                raise Conflict(
                    f"document {other.id} of this collection already has this content",
                    code="duplicate_content",
                )
            await _cancel_jobs(s, [row.job_id] if row.job_id else [])
            version = row.latest_version + 1
            s.add(_version_row(row, version, upload, now))
            # Keep only the searchable version's bytes and the new one.
            await s.execute(
                delete(DocumentVersionRow).where(
                    DocumentVersionRow.document_id == row.id,
                    DocumentVersionRow.version < version,
                    DocumentVersionRow.version != (row.active_version or 0),
                )
            )
            row.latest_version = version
            row.content_sha256 = upload.content_sha256
            row.size_bytes = len(upload.content)
            row.content_type = upload.content_type
            row.filename = upload.filename
            if upload.title:
                row.title = upload.title
            if upload.metadata is not None:
                row.metadata_json = dumps(dict(upload.metadata))
            row.status = "queued"
            row.error = None
            row.updated_at = now
            job_row = new_job_row(
                tenant_id, INGEST_JOB, {"document_id": row.id, "version": version},
                max_attempts=max_attempts, now=now,
            )
            s.add(job_row)
            await s.flush()
            row.job_id = job_row.id
            return Accepted(document=document(row), job=job_from_row(job_row), duplicate=False)

    async def list_documents(
        self, tenant_id: str, *, collection_id: str | None = None,
        status: DocumentStatus | None = None, limit: int = 50, cursor: str | None = None,
    ) -> Page[Document]:
        _check_limit(limit)
        if status is not None and status not in DOCUMENT_STATUSES:
            raise InvalidInput(
                f"unknown document status; valid: {', '.join(DOCUMENT_STATUSES)}",
                code="invalid_status",
            )
        query = (
            select(DocumentRow)
            .join(CollectionRow, CollectionRow.id == DocumentRow.collection_id)
            .where(DocumentRow.tenant_id == tenant_id, CollectionRow.status == "active")
        )
        if collection_id is not None:
            query = query.where(DocumentRow.collection_id == collection_id)
        if status is not None:
            query = query.where(DocumentRow.status == status)
        query = newest_first(query, DocumentRow.created_at, DocumentRow.id, cursor)
        async with self._db.read() as s:
            rows = (await s.scalars(query.limit(limit + 1))).all()
        items = tuple(document(row) for row in rows[:limit])
        return Page(items, _next_cursor(items, len(rows) > limit))

    async def get_document(self, tenant_id: str, document_id: str) -> Document | None:
        async with self._db.read() as s:
            row = await document_row(s, tenant_id, document_id)
            return None if row is None else document(row)

    async def get_content(
        self, tenant_id: str, document_id: str, version: int | None = None
    ) -> DocumentContent | None:
        async with self._db.read() as s:
            row = await document_row(s, tenant_id, document_id)
            if row is None:
                return None
            wanted = row.latest_version if version is None else version
            found = await s.get(DocumentVersionRow, (row.id, wanted))
            return None if found is None else content(found)

    async def list_chunks(
        self, tenant_id: str, document_id: str, *, after: int = -1, limit: int = 50
    ) -> list[StoredChunk]:
        _check_limit(limit)
        async with self._db.read() as s:
            rows = (
                await s.scalars(
                    select(ChunkRow)
                    .join(CollectionRow, CollectionRow.id == ChunkRow.collection_id)
                    .where(
                        ChunkRow.tenant_id == tenant_id,
                        ChunkRow.document_id == document_id,
                        ChunkRow.ordinal > after,
                        active_chunks(),
                        CollectionRow.status == "active",  # one being deleted hides them
                    )
                    .order_by(ChunkRow.ordinal)
                    .limit(limit)
                )
            ).all()
        return [chunk(row) for row in rows]

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        async with self._db.transaction() as s:
            # A version being committed finishes first: its chunks are then removed (and
            # logged) here, never cascaded away unlogged.
            row = await locked_document_and_job(s, tenant_id, document_id)
            if row is None:
                return False
            await _cancel_jobs(s, [row.job_id] if row.job_id else [])
            await remove_chunks(s, tenant_id, ChunkRow.document_id == document_id)
            await s.execute(delete(DocumentRow).where(DocumentRow.id == document_id))
            return True


# -- helpers -------------------------------------------------------------------------------


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", code="invalid_limit")


def _next_cursor(items: Sequence[Collection] | Sequence[Document], more: bool) -> str | None:
    if not more or not items:
        return None
    last = items[-1]
    return encode_cursor(last.created_at, last.id)


def _document_count() -> Any:
    return (
        select(func.count())
        .select_from(DocumentRow)
        .where(DocumentRow.collection_id == CollectionRow.id)
        .correlate(CollectionRow)
        .scalar_subquery()
    )


def _document_count_of(collection_id: str) -> Any:
    return select(func.count()).select_from(DocumentRow).where(
        DocumentRow.collection_id == collection_id
    )


async def _document_with_content(
    s: AsyncSession, collection_id: str, sha256: str, *, lock: bool = False
) -> DocumentRow | None:
    """The collection's document with this content; ``lock``: for an upload that may queue
    it again (the collection is already locked)."""
    query = select(DocumentRow).where(
        DocumentRow.collection_id == collection_id, DocumentRow.content_sha256 == sha256
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return (await s.scalars(query)).first()


async def _cancel_jobs(s: AsyncSession, job_ids: Sequence[str]) -> None:
    """Cancel unfinished jobs: queued ones at once, running ones at their next stage."""
    if not job_ids:
        return
    now = utcnow()
    await s.execute(
        update(JobRow)
        .where(JobRow.id.in_(list(job_ids)), JobRow.status == "queued")
        .values(status="cancelled", finished_at=now, updated_at=now,
                error="superseded or deleted")
    )
    await s.execute(
        update(JobRow)
        .where(JobRow.id.in_(list(job_ids)), JobRow.status == "running")
        .values(cancel_requested=True, updated_at=now)
    )


async def _cancel_document_jobs(s: AsyncSession, tenant_id: str, *, collection_id: str) -> None:
    job_ids = (
        await s.scalars(
            select(DocumentRow.job_id).where(
                DocumentRow.tenant_id == tenant_id,
                DocumentRow.collection_id == collection_id,
                DocumentRow.job_id.is_not(None),
                DocumentRow.status.in_(("queued", "processing")),
            )
        )
    ).all()
    await _cancel_jobs(s, [job_id for job_id in job_ids if job_id])


def _version_row(
    row: DocumentRow, version: int, upload: Upload, now: datetime
) -> DocumentVersionRow:
    return DocumentVersionRow(
        document_id=row.id, version=version, tenant_id=row.tenant_id,
        filename=upload.filename, content_type=upload.content_type,
        content_sha256=upload.content_sha256, size_bytes=len(upload.content),
        content=upload.content, created_at=now,
    )


__all__ = ["Job", "SqlCatalog", "finalise_ingest_job", "np_vector"]
