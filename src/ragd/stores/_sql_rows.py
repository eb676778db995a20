"""What the SQL catalog's parts share: rows turned into records, and the row lookups every
part makes (each one carries the tenant).

Private to :mod:`ragd.stores.sql_catalog` and its parts (:mod:`~ragd.stores.sql_versions`,
:mod:`~ragd.stores.sql_changes`, :mod:`~ragd.stores.sql_reader`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.engine import Database
from ragd.db.tables import ChunkRow, CollectionRow, DocumentRow, DocumentVersionRow
from ragd.stores.catalog import Collection, Document, DocumentContent, DocumentStatus, StoredChunk


class SqlPart:
    """A part of the SQL catalog: every part reads and writes through one ``Database``
    (writes in ``Database.transaction()``, ``BEGIN IMMEDIATE`` on SQLite)."""

    def __init__(self, db: Database) -> None:
        self._db = db


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def chunk_before(before: Any) -> ColumnElement[bool]:
    """The join condition that makes ``before`` (an alias of ``ChunkRow``) the chunk right
    before a chunk in its document's version (through ix_chunks_document_version). Whether a
    chunk continues its section compares the two heading paths: each is stored in one JSON
    serialisation (:func:`dumps`), so equal paths are equal strings."""
    return and_(
        before.document_id == ChunkRow.document_id,
        before.version == ChunkRow.version,
        before.ordinal == ChunkRow.ordinal - 1,
    )


# -- row lookups ---------------------------------------------------------------------------


async def active_collection(
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


async def document_row(s: AsyncSession, tenant_id: str, document_id: str) -> DocumentRow | None:
    """The tenant's document, if its collection is active (one being deleted hides it)."""
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


# -- rows to records -----------------------------------------------------------------------


def collection(row: CollectionRow, document_count: int | None) -> Collection:
    return Collection(
        id=row.id, tenant_id=row.tenant_id, name=row.name, description=row.description,
        metadata=json.loads(row.metadata_json), status=cast(Any, row.status),
        embedder_name=row.embedder_name, embedder_dimension=row.embedder_dimension,
        document_count=int(document_count or 0), created_at=row.created_at,
        updated_at=row.updated_at,
    )


CHUNK_COLUMNS = (
    ChunkRow.key, ChunkRow.id, ChunkRow.tenant_id, ChunkRow.collection_id, ChunkRow.document_id,
    ChunkRow.version, ChunkRow.ordinal, ChunkRow.text, ChunkRow.heading_path, ChunkRow.page,
    ChunkRow.page_end, ChunkRow.token_count, ChunkRow.start, ChunkRow.end, ChunkRow.keywords,
)
DOCUMENT_COLUMNS = (
    DocumentRow.id, DocumentRow.tenant_id, DocumentRow.collection_id, DocumentRow.title,
    DocumentRow.filename, DocumentRow.content_type, DocumentRow.format,
    DocumentRow.content_sha256, DocumentRow.size_bytes, DocumentRow.metadata_json,
    DocumentRow.status, DocumentRow.error, DocumentRow.latest_version,
    DocumentRow.active_version, DocumentRow.job_id, DocumentRow.pages, DocumentRow.chunk_count,
    DocumentRow.token_count, DocumentRow.keywords, DocumentRow.warnings, DocumentRow.timings,
    DocumentRow.created_at, DocumentRow.updated_at, DocumentRow.ready_at,
)


def document_from(values: Sequence[Any]) -> Document:
    """A :class:`Document` from the values of ``DOCUMENT_COLUMNS``, in that order."""
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


def document(row: DocumentRow) -> Document:
    return document_from([getattr(row, column.key) for column in DOCUMENT_COLUMNS])


def content(row: DocumentVersionRow) -> DocumentContent:
    return DocumentContent(
        document_id=row.document_id, version=row.version, filename=row.filename,
        content_type=row.content_type, content_sha256=row.content_sha256, content=row.content,
    )


def chunk(row: ChunkRow) -> StoredChunk:
    return chunk_from([getattr(row, column.key) for column in CHUNK_COLUMNS])


def chunk_from(values: Sequence[Any]) -> StoredChunk:
    """A :class:`StoredChunk` from the values of ``CHUNK_COLUMNS``, in that order."""
    return StoredChunk(
        key=values[0], id=values[1], tenant_id=values[2], collection_id=values[3],
        document_id=values[4], version=values[5], ordinal=values[6], text=values[7],
        heading_path=tuple(json.loads(values[8])), page=values[9], page_end=values[10],
        token_count=values[11], start=values[12], end=values[13],
        keywords=tuple(json.loads(values[14])),
    )
