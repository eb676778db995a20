""":class:`~ragd.stores.catalog.ChunkReader` over SQLAlchemy: the reads of the search path.

Every search runs these, so they read only what a hit shows (no vector blobs) and the
hottest one is a prebuilt Core statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import bindparam, select
from sqlalchemy.orm import aliased

from ragd.db.tables import ChunkRow, CollectionRow, DocumentRow
from ragd.stores._sql_rows import (
    CHUNK_COLUMNS,
    DOCUMENT_COLUMNS,
    SqlPart,
    chunk,
    chunk_before,
    chunk_from,
    document_from,
)
from ragd.stores.catalog import Document, StoredChunk

__all__ = ["SqlChunkReader"]


class SqlChunkReader(SqlPart):
    """The chunks a search may show, and which ids of a search's scope exist."""

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
        return [chunk(row) for row in rows]

    async def searchable_chunks(
        self, tenant_id: str, keys: Sequence[int]
    ) -> dict[int, tuple[StoredChunk, Document]]:
        if not keys:
            return {}
        # One prebuilt statement with plain columns on a Core connection (no ORM entities, no
        # vector blobs, no per-call statement building): this runs on every search, and ORM
        # loading of two entity types was most of a search's CPU.
        async with self._db.statements() as conn:
            result = await conn.execute(_SEARCHABLE, {"tenant_id": tenant_id, "keys": list(keys)})
            rows = cast(list[Sequence[Any]], result.all())
        documents: dict[str, Document] = {}
        out: dict[int, tuple[StoredChunk, Document]] = {}
        width = len(CHUNK_COLUMNS)
        for row in rows:
            found = chunk_from(row[:width])
            document = documents.get(found.document_id)
            if document is None:
                document = documents[found.document_id] = document_from(row[width:])
            out[found.key] = (found, document)
        return out

    async def continuing(self, tenant_id: str, keys: Sequence[int]) -> set[int]:
        if not keys:
            return set()
        async with self._db.statements() as conn:
            result = await conn.execute(_CONTINUING, {"tenant_id": tenant_id, "keys": list(keys)})
            return {int(row[0]) for row in result.all()}

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


_SEARCHABLE = (
    select(*CHUNK_COLUMNS, *DOCUMENT_COLUMNS)
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

_BEFORE = aliased(ChunkRow)
#: Chunks whose predecessor in their document's version has the same heading path. Prebuilt,
#: like :data:`_SEARCHABLE`: every search on PostgreSQL runs it (the embedded backend keeps
#: the flags in its vector partitions and reads them here only to restore older ones).
_CONTINUING = (
    select(ChunkRow.key)
    .join(_BEFORE, chunk_before(_BEFORE))
    .where(
        ChunkRow.tenant_id == bindparam("tenant_id"),
        ChunkRow.key.in_(bindparam("keys", expanding=True)),
        _BEFORE.tenant_id == bindparam("tenant_id"),
        _BEFORE.heading_path == ChunkRow.heading_path,
    )
)
