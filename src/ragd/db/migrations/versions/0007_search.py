"""search: full-text search and pgvector columns on PostgreSQL (nothing on SQLite)

On PostgreSQL the search backend searches inside the database (``index/postgres.py``), so a
commit is searchable at once in every process and no tenant data lives on local disk. This
adds, on PostgreSQL only:

* ``chunks.lexemes``: the ``tsvector`` of the text the embedded lexical index indexes (heading
  path + chunk text), written with the chunk row (``stores/sql_changes.py``) from its words
  (:func:`ragd.db.pgsearch.search_words`: split and lower-cased in Python, so the database's
  locale does not change them) under the ``english`` configuration; GIN index on
  ``(tenant_id, lexemes)`` (``btree_gin``), so a word's matches are found inside one tenant;
* ``chunks.embedding``: the chunk's float32 vector as a pgvector ``vector``, also written with
  the row. Untyped (any dimension): each embedder dimension gets its own partial HNSW
  expression index, created by the search backend when a dimension is first committed (here
  for the dimensions already stored). Kept inline (STORAGE MAIN) so exact scans read no TOAST;
* ``documents.metadata_jsonb``: the metadata as ``jsonb`` (generated), for metadata filters
  in SQL;
* ``ix_chunks_collection_id``: scoped searches count and read a collection's chunks.

Existing rows are backfilled from their text and float32 blobs, in batches. The extensions
``vector`` and ``btree_gin`` are created when missing (``vector`` needs a superuser, or an
operator who created it beforehand).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import json
import re
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BACKFILL_BATCH = 1000
#: pgvector's HNSW limit for ``vector`` (larger embeddings are searched exactly).
HNSW_MAX_DIMENSION = 2000
# As of this revision (``ragd.db.pgsearch``): words, and the text the lexical index reads.
_WORD = re.compile(r"[^\W_]+")
_MAX_WORD_BYTES = 40


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute("ALTER TABLE chunks ADD COLUMN lexemes tsvector")
    op.execute("ALTER TABLE chunks ADD COLUMN embedding vector")
    op.execute("ALTER TABLE chunks ALTER COLUMN embedding SET STORAGE MAIN")
    # Float blobs do not compress: store them out of line without trying.
    op.execute("ALTER TABLE chunks ALTER COLUMN vector SET STORAGE EXTERNAL")
    op.execute(
        "ALTER TABLE documents ADD COLUMN metadata_jsonb jsonb "
        "GENERATED ALWAYS AS (metadata::jsonb) STORED"
    )
    _backfill(bind)
    op.execute("CREATE INDEX ix_chunks_lexemes ON chunks USING gin (tenant_id, lexemes)")
    op.execute("CREATE INDEX ix_chunks_collection_id ON chunks (collection_id)")
    dimensions: list[int] = list(bind.execute(sa.text(
        "SELECT DISTINCT vector_dims(embedding) FROM chunks WHERE embedding IS NOT NULL"
    )).scalars().all())
    for dimension in dimensions:
        if dimension <= HNSW_MAX_DIMENSION:
            op.execute(hnsw_sql(int(dimension)))


def _backfill(bind: sa.Connection) -> None:
    """``lexemes`` and ``embedding`` of the existing rows, a batch at a time."""
    after = 0
    while True:
        rows: list[Any] = list(bind.execute(
            sa.text(
                "SELECT key, heading_path, text, vector FROM chunks WHERE key > :after "
                "ORDER BY key LIMIT :limit"
            ),
            {"after": after, "limit": _BACKFILL_BATCH},
        ).all())
        if not rows:
            return
        bind.execute(
            sa.text(
                "UPDATE chunks SET lexemes = to_tsvector('english'::regconfig, :words), "
                "embedding = CAST(:embedding AS vector) WHERE key = :key"
            ),
            [
                {
                    "key": key, "words": _words(headings, text),
                    "embedding": None if blob is None
                    else vector_literal(np.frombuffer(blob, dtype=np.float32)),
                }
                for key, headings, text, blob in rows
            ],
        )
        after = rows[-1][0]


def _words(headings: str, text: str) -> str:
    """The embed text (non-blank headings joined, a blank line, the text), as words."""
    kept = [heading for heading in json.loads(headings) if heading.strip()]
    full = f"{' > '.join(kept)}\n\n{text}" if kept else text
    return " ".join(
        word for word in (match.lower() for match in _WORD.findall(full))
        if len(word.encode()) < _MAX_WORD_BYTES
    )


def hnsw_sql(dimension: int) -> str:
    """The partial HNSW index (cosine) over the embeddings of one dimension (the same as
    ``ragd.db.pgsearch.create_hnsw_sql`` builds when a dimension is first committed)."""
    return (
        f"CREATE INDEX IF NOT EXISTS ix_chunks_embedding_{dimension} ON chunks USING hnsw "
        f"((embedding::vector({dimension})) vector_cosine_ops) "
        f"WHERE vector_dims(embedding) = {dimension}"
    )


def vector_literal(values: np.ndarray) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    names: list[str] = list(bind.execute(sa.text(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' "
        "AND indexname LIKE 'ix_chunks_embedding_%'"
    )).scalars().all())
    for name in names:
        op.execute(f'DROP INDEX "{name}"')
    op.execute("DROP INDEX ix_chunks_collection_id")
    op.execute("DROP INDEX ix_chunks_lexemes")
    op.execute("ALTER TABLE documents DROP COLUMN metadata_jsonb")
    op.execute("ALTER TABLE chunks DROP COLUMN lexemes")
    op.execute("ALTER TABLE chunks DROP COLUMN embedding")
    op.execute("ALTER TABLE chunks ALTER COLUMN vector SET STORAGE EXTENDED")
