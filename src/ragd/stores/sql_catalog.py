""":class:`~ragd.stores.catalog.Catalog` over SQLAlchemy (SQLite today, PostgreSQL later)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.cursor import encode_cursor, newest_first
from ragd.db.engine import Database
from ragd.db.sequence import INDEX_CHANGES, take_append_turn
from ragd.db.tables import (
    ChunkRow,
    CollectionRow,
    DocumentRow,
    DocumentVersionRow,
    IndexChangeRow,
    JobRow,
    utcnow,
)
from ragd.errors import Conflict, InvalidInput, NotFound
from ragd.jobs.queue import Job, job_from_row, new_job_row
from ragd.stores.catalog import (
    DELETE_COLLECTION_JOB,
    DOCUMENT_STATUSES,
    INGEST_JOB,
    Accepted,
    Change,
    Collection,
    CollectionRemoval,
    CommitOutcome,
    Document,
    DocumentContent,
    DocumentStatus,
    IndexEntry,
    Page,
    StoredChunk,
    Upload,
    VersionCommit,
    check_embedder,
    embed_text,
)
from ragd.stores.metadata import check_metadata


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _name_key(name: str) -> str:
    return name.strip().casefold()


class SqlCatalog:
    """The SQL catalog. All writes run in ``Database.transaction()`` (``BEGIN IMMEDIATE``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

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
                    description=description, metadata_json=_dumps(dict(metadata)),
                    status="active", created_at=now, updated_at=now,
                )
                s.add(row)
                await s.flush()
                return _collection(row, 0)
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
        items = tuple(_collection(cast(CollectionRow, r[0]), cast(int, r[1])) for r in rows[:limit])
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
        return None if found is None else _collection(found[0], found[1])

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
        return None if found is None else _collection(found[0], found[1])

    async def update_collection(
        self, tenant_id: str, collection_id: str, *, name: str | None = None,
        description: str | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Collection | None:
        if metadata is not None:
            metadata = check_metadata(dict(metadata))
        try:
            async with self._db.transaction() as s:
                row = await _active_collection(s, tenant_id, collection_id)
                if row is None:
                    return None
                if name is not None:
                    row.name = name.strip()
                    row.name_key = _name_key(name)
                if description is not None:
                    row.description = description
                if metadata is not None:
                    row.metadata_json = _dumps(dict(metadata))
                row.updated_at = utcnow()
                await s.flush()
                count = await s.scalar(_document_count_of(row.id))
                return _collection(row, int(count or 0))
        except IntegrityError:
            raise Conflict(
                f"a collection named {(name or '').strip()!r} already exists",
                code="collection_exists",
            ) from None

    async def delete_collection(
        self, tenant_id: str, collection_id: str, *, inline_chunks: int, max_attempts: int
    ) -> CollectionRemoval | None:
        async with self._db.transaction() as s:
            row = await _active_collection(s, tenant_id, collection_id)
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
                await _remove_chunks(s, tenant_id, ChunkRow.collection_id == collection_id)
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
                    )
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
                await _remove_chunks(s, tenant_id, ChunkRow.document_id.in_(document_ids))
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
            if existing is None:
                raise
            return Accepted(document=existing, job=None, duplicate=True)

    async def _add_document(
        self, tenant_id: str, collection_id: str, upload: Upload, max_attempts: int
    ) -> Accepted:
        now = utcnow()
        async with self._db.transaction() as s:
            if await _active_collection(s, tenant_id, collection_id) is None:
                raise NotFound("collection not found", code="collection_not_found")
            existing = await _document_with_content(
                s, collection_id, upload.content_sha256
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
                    document=_document(existing), job=job_from_row(job_row), duplicate=False
                )
            if existing is not None:
                return Accepted(document=_document(existing), job=None, duplicate=True)
            row = DocumentRow(
                tenant_id=tenant_id, collection_id=collection_id,
                title=upload.title or upload.filename or "untitled",
                filename=upload.filename, content_type=upload.content_type, format=None,
                content_sha256=upload.content_sha256, size_bytes=len(upload.content),
                metadata_json=_dumps(dict(upload.metadata or {})), status="queued",
                latest_version=1, chunk_count=0, token_count=0, keywords="[]",
                warnings="[]", timings="{}", created_at=now, updated_at=now,
            )
            s.add(row)
            await s.flush()
            s.add(_version_row(row, 1, upload, now))
            job_row = new_job_row(
                tenant_id, INGEST_JOB, {"document_id": row.id, "version": 1},
                max_attempts=max_attempts, now=now,
            )
            s.add(job_row)
            await s.flush()
            row.job_id = job_row.id
            return Accepted(document=_document(row), job=job_from_row(job_row), duplicate=False)

    async def _by_content(
        self, tenant_id: str, collection_id: str, sha256: str
    ) -> Document | None:
        async with self._db.read() as s:
            row = await _document_with_content(s, collection_id, sha256)
            return None if row is None or row.tenant_id != tenant_id else _document(row)

    async def replace_document(
        self, tenant_id: str, document_id: str, upload: Upload, *, max_attempts: int
    ) -> Accepted | None:
        now = utcnow()
        async with self._db.transaction() as s:
            row = await _document_row(s, tenant_id, document_id)
            if row is None:
                return None
            if row.content_sha256 == upload.content_sha256 and row.status not in (
                "failed", "cancelled"
            ):
                return Accepted(document=_document(row), job=None, duplicate=True)
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
                row.metadata_json = _dumps(dict(upload.metadata))
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
            return Accepted(document=_document(row), job=job_from_row(job_row), duplicate=False)

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
        items = tuple(_document(row) for row in rows[:limit])
        return Page(items, _next_cursor(items, len(rows) > limit))

    async def get_document(self, tenant_id: str, document_id: str) -> Document | None:
        async with self._db.read() as s:
            row = await _document_row(s, tenant_id, document_id)
            return None if row is None else _document(row)

    async def get_content(
        self, tenant_id: str, document_id: str, version: int | None = None
    ) -> DocumentContent | None:
        async with self._db.read() as s:
            row = await _document_row(s, tenant_id, document_id)
            if row is None:
                return None
            wanted = row.latest_version if version is None else version
            found = await s.get(DocumentVersionRow, (row.id, wanted))
            return None if found is None else _content(found)

    async def list_chunks(
        self, tenant_id: str, document_id: str, *, after: int = -1, limit: int = 50
    ) -> list[StoredChunk]:
        _check_limit(limit)
        async with self._db.read() as s:
            rows = (
                await s.scalars(
                    select(ChunkRow)
                    .where(
                        ChunkRow.tenant_id == tenant_id,
                        ChunkRow.document_id == document_id,
                        ChunkRow.ordinal > after,
                    )
                    .order_by(ChunkRow.ordinal)
                    .limit(limit)
                )
            ).all()
        return [_chunk(row) for row in rows]

    async def delete_document(self, tenant_id: str, document_id: str) -> bool:
        async with self._db.transaction() as s:
            row = await _document_row(s, tenant_id, document_id)
            if row is None:
                return False
            await _cancel_jobs(s, [row.job_id] if row.job_id else [])
            await _remove_chunks(s, tenant_id, ChunkRow.document_id == document_id)
            await s.execute(delete(DocumentRow).where(DocumentRow.id == document_id))
            return True

    # -- the ingestion worker ------------------------------------------------------------

    async def start_version(
        self, tenant_id: str, document_id: str, version: int
    ) -> tuple[Document, DocumentContent, Collection] | None:
        async with self._db.transaction() as s:
            row = await _document_row(s, tenant_id, document_id)
            if row is None or row.latest_version != version:
                return None
            collection = await _active_collection(s, tenant_id, row.collection_id)
            blob = await s.get(DocumentVersionRow, (row.id, version))
            if collection is None or blob is None:
                return None
            if row.active_version != version:
                row.status = "processing"
                row.error = None
                row.updated_at = utcnow()
            await s.flush()
            return _document(row), _content(blob), _collection(collection, 0)

    async def commit_version(self, commit: VersionCommit) -> CommitOutcome:
        now = utcnow()
        async with self._db.transaction() as s:
            job = await s.get(JobRow, commit.job_id)
            if job is None or job.status != "running" or job.lease_owner != commit.worker_id:
                return CommitOutcome.LEASE_LOST
            row = await _document_row(s, commit.tenant_id, commit.document_id)
            if row is None:
                return CommitOutcome.GONE
            if row.active_version == commit.version:
                return CommitOutcome.ALREADY_COMMITTED
            if row.latest_version != commit.version:
                return CommitOutcome.SUPERSEDED
            collection = await _active_collection(s, commit.tenant_id, row.collection_id)
            if collection is None:
                return CommitOutcome.GONE
            _record_embedder(collection, commit)
            # Remove the previous version's chunks (and any leftovers of this version).
            await _remove_chunks(s, commit.tenant_id, ChunkRow.document_id == row.id)
            if commit.chunks:
                await take_append_turn(s, INDEX_CHANGES, commit.tenant_id)
                await s.execute(
                    insert(ChunkRow),
                    [
                        {
                            "id": chunk.id, "tenant_id": commit.tenant_id,
                            "collection_id": row.collection_id, "document_id": row.id,
                            "version": commit.version, "ordinal": chunk.ordinal,
                            "text": chunk.text, "heading_path": _dumps(list(chunk.heading_path)),
                            "page": chunk.page, "page_end": chunk.page_end,
                            "token_count": chunk.token_count, "start": chunk.start,
                            "end": chunk.end, "keywords": _dumps(list(chunk.keywords)),
                            "vector": chunk.vector, "created_at": now,
                        }
                        for chunk in commit.chunks
                    ],
                )
                keys = (
                    await s.scalars(
                        select(ChunkRow.key).where(ChunkRow.document_id == row.id)
                    )
                ).all()
                await s.execute(
                    insert(IndexChangeRow),
                    [
                        {"tenant_id": commit.tenant_id, "op": "upsert", "chunk_key": key,
                         "created_at": now}
                        for key in keys
                    ],
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
            row.keywords = _dumps(list(commit.keywords))
            row.warnings = _dumps(list(commit.warnings))
            row.timings = _dumps(dict(commit.timings))
            row.ready_at = now
            row.updated_at = now
            return CommitOutcome.COMMITTED

    async def finish_version(
        self, tenant_id: str, document_id: str, version: int, status: DocumentStatus,
        error: str | None,
    ) -> None:
        async with self._db.transaction() as s:
            row = await _document_row(s, tenant_id, document_id)
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

    # -- derived indexes -----------------------------------------------------------------

    async def changes_after(self, tenant_id: str, seq: int, *, limit: int) -> list[Change]:
        async with self._db.read() as s:
            rows = (
                await s.execute(
                    select(IndexChangeRow.seq, IndexChangeRow.op, IndexChangeRow.chunk_key)
                    .where(IndexChangeRow.tenant_id == tenant_id, IndexChangeRow.seq > seq)
                    .order_by(IndexChangeRow.seq)
                    .limit(limit)
                )
            ).all()
        return [Change(seq=r[0], op=cast(Any, r[1]), chunk_key=r[2]) for r in rows]

    async def last_change(self, tenant_id: str) -> int:
        async with self._db.read() as s:
            value = await s.scalar(
                select(func.max(IndexChangeRow.seq)).where(IndexChangeRow.tenant_id == tenant_id)
            )
        return int(value or 0)

    async def tenants_with_changes(self) -> list[str]:
        async with self._db.read() as s:
            return list((await s.scalars(select(IndexChangeRow.tenant_id).distinct())).all())

    async def index_entries(self, tenant_id: str, keys: Sequence[int]) -> list[IndexEntry]:
        if not keys:
            return []
        async with self._db.read() as s:
            rows = (
                await s.execute(
                    select(
                        ChunkRow.key, ChunkRow.document_id, ChunkRow.collection_id,
                        ChunkRow.heading_path, ChunkRow.text, ChunkRow.vector,
                    ).where(ChunkRow.tenant_id == tenant_id, ChunkRow.key.in_(list(keys)))
                )
            ).all()
        return [
            IndexEntry(
                key=key, document_id=document_id, collection_id=collection_id,
                text=embed_text(json.loads(headings), text),
                vector=None if vector is None else np_vector(vector),
            )
            for key, document_id, collection_id, headings, text, vector in rows
        ]

    async def chunk_keys(self, tenant_id: str, *, after: int, limit: int) -> list[int]:
        async with self._db.read() as s:
            return list(
                (
                    await s.scalars(
                        select(ChunkRow.key)
                        .where(ChunkRow.tenant_id == tenant_id, ChunkRow.key > after)
                        .order_by(ChunkRow.key)
                        .limit(limit)
                    )
                ).all()
            )

    async def chunks_by_keys(self, tenant_id: str, keys: Sequence[int]) -> list[StoredChunk]:
        if not keys:
            return []
        async with self._db.read() as s:
            rows = (
                await s.scalars(
                    select(ChunkRow).where(
                        ChunkRow.tenant_id == tenant_id, ChunkRow.key.in_(list(keys))
                    )
                )
            ).all()
        return [_chunk(row) for row in rows]

    async def searchable_chunks(
        self, tenant_id: str, keys: Sequence[int]
    ) -> dict[int, tuple[StoredChunk, Document]]:
        if not keys:
            return {}
        # One prebuilt statement with plain columns on a Core connection (no ORM entities, no
        # vector blobs, no per-call statement building): this runs on every search, and ORM
        # loading of two entity types was most of a search's CPU.
        async with self._db.engine.connect() as conn:
            result = await conn.execute(_SEARCHABLE, {"tenant_id": tenant_id, "keys": list(keys)})
            rows = cast(list[Sequence[Any]], result.all())
        documents: dict[str, Document] = {}
        out: dict[int, tuple[StoredChunk, Document]] = {}
        width = len(_CHUNK_COLUMNS)
        for row in rows:
            chunk = _chunk_from(row[:width])
            document = documents.get(chunk.document_id)
            if document is None:
                document = documents[chunk.document_id] = _document_from(row[width:])
            out[chunk.key] = (chunk, document)
        return out

    async def existing_ids(
        self, tenant_id: str, *, collection_ids: Sequence[str] = (),
        document_ids: Sequence[str] = (),
    ) -> tuple[set[str], set[str]]:
        collections: set[str] = set()
        documents: set[str] = set()
        async with self._db.read() as s:
            if collection_ids:
                collections = set(await s.scalars(select(CollectionRow.id).where(
                    CollectionRow.tenant_id == tenant_id, CollectionRow.status == "active",
                    CollectionRow.id.in_(set(collection_ids)),
                )))
            if document_ids:
                documents = set(await s.scalars(
                    select(DocumentRow.id)
                    .join(CollectionRow, CollectionRow.id == DocumentRow.collection_id)
                    .where(
                        DocumentRow.tenant_id == tenant_id, CollectionRow.status == "active",
                        DocumentRow.id.in_(set(document_ids)),
                    )
                ))
        return collections, documents


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


# -- helpers -------------------------------------------------------------------------------


def np_vector(blob: bytes) -> npt.NDArray[np.float32]:
    """A read-only float32 view of a stored vector blob."""
    return np.frombuffer(blob, dtype=np.float32)


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


async def _active_collection(
    s: AsyncSession, tenant_id: str, collection_id: str
) -> CollectionRow | None:
    return (
        await s.scalars(
            select(CollectionRow).where(
                CollectionRow.id == collection_id,
                CollectionRow.tenant_id == tenant_id,
                CollectionRow.status == "active",
            )
        )
    ).first()


async def _document_row(s: AsyncSession, tenant_id: str, document_id: str) -> DocumentRow | None:
    return (
        await s.scalars(
            select(DocumentRow)
            .join(CollectionRow, CollectionRow.id == DocumentRow.collection_id)
            .where(
                DocumentRow.id == document_id,
                DocumentRow.tenant_id == tenant_id,
                CollectionRow.status == "active",
            )
        )
    ).first()


async def _document_with_content(
    s: AsyncSession, collection_id: str, sha256: str
) -> DocumentRow | None:
    return (
        await s.scalars(
            select(DocumentRow).where(
                DocumentRow.collection_id == collection_id,
                DocumentRow.content_sha256 == sha256,
            )
        )
    ).first()


async def _remove_chunks(s: AsyncSession, tenant_id: str, condition: Any) -> None:
    """Delete the chunks matching ``condition`` and log a ``delete`` change for each."""
    keys = (await s.scalars(select(ChunkRow.key).where(condition))).all()
    if not keys:
        return
    now = utcnow()
    await take_append_turn(s, INDEX_CHANGES, tenant_id)
    await s.execute(
        insert(IndexChangeRow),
        [{"tenant_id": tenant_id, "op": "delete", "chunk_key": key, "created_at": now}
         for key in keys],
    )
    await s.execute(delete(ChunkRow).where(condition))


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


def _record_embedder(collection: CollectionRow, commit: VersionCommit) -> None:
    if commit.embedder_name is None:
        return
    check_embedder(
        (collection.embedder_name, collection.embedder_dimension),
        (commit.embedder_name, commit.embedder_dimension),
    )
    if collection.embedder_name is None:
        collection.embedder_name = commit.embedder_name
        collection.embedder_dimension = commit.embedder_dimension


def _version_row(
    document: DocumentRow, version: int, upload: Upload, now: datetime
) -> DocumentVersionRow:
    return DocumentVersionRow(
        document_id=document.id, version=version, tenant_id=document.tenant_id,
        filename=upload.filename, content_type=upload.content_type,
        content_sha256=upload.content_sha256, size_bytes=len(upload.content),
        content=upload.content, created_at=now,
    )


def _collection(row: CollectionRow, document_count: int | None) -> Collection:
    return Collection(
        id=row.id, tenant_id=row.tenant_id, name=row.name, description=row.description,
        metadata=json.loads(row.metadata_json), status=cast(Any, row.status),
        embedder_name=row.embedder_name, embedder_dimension=row.embedder_dimension,
        document_count=int(document_count or 0), created_at=row.created_at,
        updated_at=row.updated_at,
    )


_CHUNK_COLUMNS = (
    ChunkRow.key, ChunkRow.id, ChunkRow.tenant_id, ChunkRow.collection_id, ChunkRow.document_id,
    ChunkRow.version, ChunkRow.ordinal, ChunkRow.text, ChunkRow.heading_path, ChunkRow.page,
    ChunkRow.page_end, ChunkRow.token_count, ChunkRow.start, ChunkRow.end, ChunkRow.keywords,
)
_DOCUMENT_COLUMNS = (
    DocumentRow.id, DocumentRow.tenant_id, DocumentRow.collection_id, DocumentRow.title,
    DocumentRow.filename, DocumentRow.content_type, DocumentRow.format,
    DocumentRow.content_sha256, DocumentRow.size_bytes, DocumentRow.metadata_json,
    DocumentRow.status, DocumentRow.error, DocumentRow.latest_version,
    DocumentRow.active_version, DocumentRow.job_id, DocumentRow.pages, DocumentRow.chunk_count,
    DocumentRow.token_count, DocumentRow.keywords, DocumentRow.warnings, DocumentRow.timings,
    DocumentRow.created_at, DocumentRow.updated_at, DocumentRow.ready_at,
)

_SEARCHABLE = (
    select(*_CHUNK_COLUMNS, *_DOCUMENT_COLUMNS)
    .join(DocumentRow, DocumentRow.id == ChunkRow.document_id)
    .join(CollectionRow, CollectionRow.id == DocumentRow.collection_id)
    .where(
        ChunkRow.tenant_id == bindparam("tenant_id"),
        ChunkRow.key.in_(bindparam("keys", expanding=True)),
        DocumentRow.tenant_id == bindparam("tenant_id"),
        ChunkRow.version == DocumentRow.active_version,
        CollectionRow.status == "active",
    )
)


def _document_from(values: Sequence[Any]) -> Document:
    """A :class:`Document` from the values of ``_DOCUMENT_COLUMNS``, in that order."""
    return Document(
        id=values[0], tenant_id=values[1], collection_id=values[2], title=values[3],
        filename=values[4], content_type=values[5], format=values[6],
        content_sha256=values[7], size_bytes=values[8], metadata=json.loads(values[9]),
        status=cast(DocumentStatus, values[10]), error=values[11], latest_version=values[12],
        active_version=values[13], job_id=values[14], pages=values[15],
        chunk_count=values[16], token_count=values[17], keywords=tuple(json.loads(values[18])),
        warnings=tuple(json.loads(values[19] or "[]")), timings=json.loads(values[20]),
        created_at=values[21], updated_at=values[22], ready_at=values[23],
    )


def _document(row: DocumentRow) -> Document:
    return _document_from([getattr(row, column.key) for column in _DOCUMENT_COLUMNS])


def _content(row: DocumentVersionRow) -> DocumentContent:
    return DocumentContent(
        document_id=row.document_id, version=row.version, filename=row.filename,
        content_type=row.content_type, content_sha256=row.content_sha256, content=row.content,
    )


def _chunk(row: ChunkRow) -> StoredChunk:
    return _chunk_from([getattr(row, column.key) for column in _CHUNK_COLUMNS])


def _chunk_from(values: Sequence[Any]) -> StoredChunk:
    """A :class:`StoredChunk` from the values of ``_CHUNK_COLUMNS``, in that order."""
    return StoredChunk(
        key=values[0], id=values[1], tenant_id=values[2], collection_id=values[3],
        document_id=values[4], version=values[5], ordinal=values[6], text=values[7],
        heading_path=tuple(json.loads(values[8])), page=values[9], page_end=values[10],
        token_count=values[11], start=values[12], end=values[13],
        keywords=tuple(json.loads(values[14])),
    )


__all__ = ["Job", "SqlCatalog", "finalise_ingest_job", "np_vector"]
