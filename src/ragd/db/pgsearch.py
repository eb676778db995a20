"""The search columns of PostgreSQL (migration 0007): their names, their SQL and their values.

On PostgreSQL, ``chunks`` carries two columns the SQLite schema does not have, so
:class:`~ragd.db.tables.ChunkRow` does not map them (every SQLite read of a chunk would name
them); ``stores/sql_changes.py`` writes both with the chunk row, so the transaction that
activates a version makes it searchable:

* ``lexemes`` (``tsvector``): ``to_tsvector('english', search_words(embed text))``.
  :func:`search_words` splits and lower-cases in Python, like the embedded index's tokenizer
  (letters and digits, split at everything else), because PostgreSQL's parser and
  lower-casing follow the database's locale (under ``C``, ``é`` is no letter to a regex and
  ``É`` is not lower-cased): the same text gives the same lexemes on every server. Queries go
  through the same two steps. The ``english`` configuration stems (Snowball, as the embedded
  index does) and drops English stop words (measured on the dev sets: better BM25 than
  keeping them, and the commonest words never reach the index);
* ``embedding`` (pgvector ``vector``): the float32 vector in the database's own type. Untyped,
  so any embedder dimension fits; each dimension gets its own partial HNSW index over
  ``embedding::vector(d)``, and a query names the dimension as a literal
  (:func:`cosine_distance_sql`) so the planner can match the index's expression and
  predicate.

``documents.metadata_jsonb`` is the metadata as ``jsonb`` (generated). :data:`PG_CHUNKS` is
the chunks table as PostgreSQL has it, for the writers.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import TableClause, bindparam, column, func, literal_column, table
from sqlalchemy.types import UserDefinedType

from ragd.db.tables import ChunkRow

__all__ = [
    "EMBEDDING", "HNSW_MAX_DIMENSION", "LEXEMES", "PG_CHUNKS", "TEXT_SEARCH_CONFIG", "WORDS",
    "cosine_distance_sql", "create_hnsw_sql", "hnsw_index_name", "lexemes_of", "search_words",
    "vector_literal",
]

#: The text search configuration of ``chunks.lexemes`` (migration 0007 backfilled with it):
#: queries are parsed with the same one, or their words would not meet the stored lexemes.
TEXT_SEARCH_CONFIG = "english"
LEXEMES = "lexemes"
EMBEDDING = "embedding"
#: The bound parameter of a chunk insert that carries :func:`search_words` of its text.
WORDS = "search_words"
#: Words of this many UTF-8 bytes or more are not indexed (the embedded index's limit).
MAX_WORD_BYTES = 40
_WORD = re.compile(r"[^\W_]+")
#: pgvector indexes ``vector`` columns of up to this many dimensions with HNSW; a larger
#: embedder's vectors are searched exactly.
HNSW_MAX_DIMENSION = 2000


class PgVector(UserDefinedType[str]):
    """pgvector's ``vector``, bound as its text form (``'[0.1,0.2]'``): asyncpg sends types
    it has no binary codec for as text, and the server parses it."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


class TsVector(UserDefinedType[str]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "tsvector"


def _pg_chunks() -> TableClause:
    mapped = ChunkRow.__table__.columns
    return table(
        ChunkRow.__tablename__,
        *(column(each.name, each.type) for each in mapped),
        column(LEXEMES, TsVector()),
        column(EMBEDDING, PgVector()),
    )


#: ``chunks`` with the ``lexemes`` and ``embedding`` columns (for writes on PostgreSQL).
PG_CHUNKS = _pg_chunks()


def search_words(text: str) -> str:
    """``text`` as the full-text index reads it: its words (runs of Unicode letters and
    digits), lower-cased, without words of :data:`MAX_WORD_BYTES` bytes or more, joined by
    single spaces. Nothing else survives (no NUL, no surrogate, no punctuation), so the
    result is safe for any PostgreSQL text function and never query syntax."""
    return " ".join(
        word for word in (match.lower() for match in _WORD.findall(text))
        if len(word.encode()) < MAX_WORD_BYTES
    )


def lexemes_of(parameter: str = WORDS) -> Any:
    """``to_tsvector('english', :parameter)``: the SQL of a row's lexemes from its words."""
    return func.to_tsvector(
        literal_column(f"'{TEXT_SEARCH_CONFIG}'::regconfig"), bindparam(parameter)
    )


def vector_literal(values: npt.ArrayLike) -> str:
    """pgvector's text form of a float32 vector (each value's shortest repr that reads back
    as the same float32: numpy's ``str`` of a float32)."""
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    return "[" + ",".join(map(str, array)) + "]"


def hnsw_index_name(dimension: int) -> str:
    return f"ix_chunks_embedding_{int(dimension)}"


def create_hnsw_sql(dimension: int, *, concurrently: bool) -> str:
    """The partial HNSW index (cosine) over the embeddings of one dimension."""
    dimension = _dimension(dimension)
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {hnsw_index_name(dimension)} ON chunks "
        f"USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) "
        f"WHERE vector_dims(embedding) = {dimension}"
    )


def cosine_distance_sql(dimension: int, parameter: str = "query") -> str:
    """``embedding <=> :parameter`` at ``dimension``, in the form the HNSW index of that
    dimension matches (a literal dimension: a bound one would hide the index)."""
    dimension = _dimension(dimension)
    return f"(c.embedding::vector({dimension}) <=> CAST(:{parameter} AS vector({dimension})))"


def _dimension(dimension: int) -> int:
    value = int(dimension)
    if not 0 < value <= 16_000:  # pgvector's own limit
        raise ValueError(f"unsupported vector dimension {dimension}")
    return value
