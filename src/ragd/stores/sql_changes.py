""":class:`~ragd.stores.catalog.ChangeLog` over SQLAlchemy: the index change log.

Both sides of the log live here. The writers (:func:`add_chunks`, :func:`remove_chunks`) are
the only code that inserts or deletes chunk rows, and each appends the matching
``index_changes`` rows in the caller's transaction, after taking the log's append turn (see
:mod:`ragd.db.sequence`), so a chunk never changes without its change being logged and seq
order is commit order. The readers (:class:`SqlChangeLog`) are what the derived indexes
replay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.sequence import INDEX_CHANGES, take_append_turn
from ragd.db.tables import ChunkRow, IndexChangeRow, utcnow
from ragd.stores._sql_rows import SqlPart, dumps
from ragd.stores.catalog import Change, IndexEntry, NewChunk, embed_text

__all__ = ["SqlChangeLog", "add_chunks", "np_vector", "remove_chunks"]


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


# -- the writers (in the caller's transaction) ---------------------------------------------


async def add_chunks(
    s: AsyncSession, tenant_id: str, collection_id: str, document_id: str, version: int,
    chunks: Sequence[NewChunk], now: datetime,
) -> None:
    """Insert ``chunks`` as ``version`` of the document and log an ``upsert`` for every chunk
    row the document then has."""
    if not chunks:
        return
    await take_append_turn(s, INDEX_CHANGES, tenant_id)
    await s.execute(
        insert(ChunkRow),
        [
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
        ],
    )
    keys = (await s.scalars(select(ChunkRow.key).where(ChunkRow.document_id == document_id))).all()
    await s.execute(
        insert(IndexChangeRow),
        [
            {"tenant_id": tenant_id, "op": "upsert", "chunk_key": key, "created_at": now}
            for key in keys
        ],
    )


async def remove_chunks(s: AsyncSession, tenant_id: str, condition: Any) -> None:
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


def np_vector(blob: bytes) -> npt.NDArray[np.float32]:
    """A read-only float32 view of a stored vector blob."""
    return np.frombuffer(blob, dtype=np.float32)
