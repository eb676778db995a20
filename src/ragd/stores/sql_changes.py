""":class:`~ragd.stores.catalog.ChangeLog` over SQLAlchemy: the index change log.

Both sides of the log live here. The writers (:func:`add_chunks`, :func:`remove_chunks`, and
for a large version :func:`stage_chunks` then :func:`log_upserts`) are the only code that
inserts or deletes chunk rows, and the rows of an active version are always logged in the
transaction that makes them active, after taking the log's append turn (see
:mod:`ragd.db.sequence`), so seq order is commit order. Invariant: a chunk row is in the log
(and so in the indexes) exactly when its version is its document's active version; staged
rows of a version still being written are read by nothing. The readers
(:class:`SqlChangeLog`) are what the derived indexes replay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from ragd.db.pgsearch import (
    EMBEDDING,
    LEXEMES,
    PG_CHUNKS,
    WORDS,
    lexemes_of,
    search_words,
    vector_literal,
)
from ragd.db.sequence import INDEX_CHANGES, take_append_turn
from ragd.db.tables import ChunkRow, DocumentRow, IndexChangeRow, utcnow
from ragd.stores._sql_rows import SqlPart, chunk_before, dumps
from ragd.stores.catalog import Change, IndexEntry, NewChunk, embed_text

__all__ = [
    "SqlChangeLog", "active_chunks", "add_chunks", "log_upserts", "np_vector", "remove_chunks",
    "stage_chunks", "staged_chunks",
]


class SqlChangeLog(SqlPart):
    """The change log as the derived indexes read it (per tenant, in seq order)."""

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
        before = aliased(ChunkRow)
        async with self._db.read() as s:
            rows = (
                await s.execute(
                    select(
                        ChunkRow.key, ChunkRow.document_id, ChunkRow.collection_id,
                        ChunkRow.heading_path, ChunkRow.text, ChunkRow.vector,
                        before.heading_path,
                    )
                    # The chunk before it, for whether it continues its section.
                    .outerjoin(before, and_(chunk_before(before), before.tenant_id == tenant_id))
                    .where(ChunkRow.tenant_id == tenant_id, ChunkRow.key.in_(list(keys)))
                )
            ).all()
        return [
            IndexEntry(
                key=key, document_id=document_id, collection_id=collection_id,
                text=embed_text(json.loads(headings), text),
                vector=None if vector is None else np_vector(vector),
                continues=previous is not None and previous == headings,
            )
            for key, document_id, collection_id, headings, text, vector, previous in rows
        ]

    async def chunk_keys(self, tenant_id: str, *, after: int, limit: int) -> list[int]:
        async with self._db.read() as s:
            return list(
                (
                    await s.scalars(
                        select(ChunkRow.key)
                        .where(ChunkRow.tenant_id == tenant_id, ChunkRow.key > after,
                               active_chunks())
                        .order_by(ChunkRow.key)
                        .limit(limit)
                    )
                ).all()
            )


# -- the writers (in the caller's transaction) ---------------------------------------------


async def add_chunks(
    s: AsyncSession, tenant_id: str, collection_id: str, document_id: str, version: int,
    chunks: Sequence[NewChunk], now: datetime,
) -> None:
    """Insert ``chunks`` as ``version`` of the document and log an ``upsert`` for every chunk
    row the document then has (the caller removed its other rows first)."""
    if not chunks:
        return
    if s.get_bind().dialect.name == "postgresql":
        await stage_chunks(s, tenant_id, collection_id, document_id, version, chunks, now)
        await log_upserts(s, tenant_id, document_id, now)
        return
    # The new rows' keys come back from the insert itself: no second read of the chunks.
    keys = list(await s.scalars(
        insert(ChunkRow).returning(ChunkRow.key, sort_by_parameter_order=True),
        _chunk_rows(tenant_id, collection_id, document_id, version, chunks, now),
    ))
    await _log(s, tenant_id, "upsert", keys, now)


async def stage_chunks(
    s: AsyncSession, tenant_id: str, collection_id: str, document_id: str, version: int,
    chunks: Sequence[NewChunk], now: datetime,
) -> None:
    """Insert chunk rows without logging them. Only for a version that is not active yet:
    such rows are invisible (no index has them, and the catalog's chunk reads take the active
    version only) until :func:`log_upserts` runs in the transaction that activates it."""
    if not chunks:
        return
    rows = _chunk_rows(tenant_id, collection_id, document_id, version, chunks, now)
    if s.get_bind().dialect.name == "postgresql":
        # The search backend's columns, written with the row, so the commit that activates
        # the version makes it searchable (see ragd.db.pgsearch).
        for row, chunk in zip(rows, chunks, strict=True):
            row[WORDS] = search_words(embed_text(chunk.heading_path, chunk.text))
            row[EMBEDDING] = (
                None if chunk.vector is None else vector_literal(np_vector(chunk.vector))
            )
        await s.execute(insert(PG_CHUNKS).values({LEXEMES: lexemes_of()}), rows)
        return
    await s.execute(insert(ChunkRow), rows)


def _chunk_rows(
    tenant_id: str, collection_id: str, document_id: str, version: int,
    chunks: Sequence[NewChunk], now: datetime,
) -> list[dict[str, Any]]:
    return [
        {
            "id": chunk.id, "tenant_id": tenant_id,
            "collection_id": collection_id, "document_id": document_id,
            "version": version, "ordinal": chunk.ordinal,
            "text": chunk.text, "heading_path": dumps(list(chunk.heading_path)),
            "page": chunk.page, "page_end": chunk.page_end,
            "token_count": chunk.token_count, "start": chunk.start,
            "end": chunk.end, "keywords": dumps(list(chunk.keywords)),
            "vector": chunk.vector, "created_at": now,
        }
        for chunk in chunks
    ]


async def log_upserts(s: AsyncSession, tenant_id: str, document_id: str, now: datetime) -> int:
    """Log an ``upsert`` for every chunk row the document has; how many."""
    keys = (await s.scalars(select(ChunkRow.key).where(ChunkRow.document_id == document_id))).all()
    await _log(s, tenant_id, "upsert", keys, now)
    return len(keys)


async def _log(
    s: AsyncSession, tenant_id: str, op: str, keys: Sequence[int], now: datetime
) -> None:
    """Append one change per chunk key, after taking the log's append turn."""
    if not keys:
        return
    await take_append_turn(s, INDEX_CHANGES, tenant_id)
    await s.execute(
        insert(IndexChangeRow),
        [{"tenant_id": tenant_id, "op": op, "chunk_key": key, "created_at": now}
         for key in keys],
    )


def active_chunks() -> Any:
    """The condition that keeps chunk rows of their document's active version (staged rows
    of a version still being written are not part of the catalog yet)."""
    return ChunkRow.version == _active_version()


def staged_chunks() -> Any:
    """Chunk rows of any other version than their document's active one (also when the
    document has none yet): staged, never logged."""
    return ChunkRow.version.is_distinct_from(_active_version())


def _active_version() -> Any:
    return (
        select(DocumentRow.active_version)
        .where(DocumentRow.id == ChunkRow.document_id)
        .scalar_subquery()
    )


async def remove_chunks(s: AsyncSession, tenant_id: str, condition: Any) -> None:
    """Delete the chunks matching ``condition`` and log a ``delete`` change for each."""
    keys = (await s.scalars(select(ChunkRow.key).where(condition))).all()
    if not keys:
        return
    await _log(s, tenant_id, "delete", keys, utcnow())
    await s.execute(delete(ChunkRow).where(condition))


def np_vector(blob: bytes) -> npt.NDArray[np.float32]:
    """A read-only float32 view of a stored vector blob."""
    return np.frombuffer(blob, dtype=np.float32)
