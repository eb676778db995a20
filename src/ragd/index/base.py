"""The contracts of the derived indexes that search reads.

SQLite (or PostgreSQL) is the source of truth: chunk rows with their vectors, and an
append-only change log (``index_changes``: ``seq``, ``tenant_id``, ``op``, ``chunk_key``).
The lexical (BM25) and vector (HNSW) indexes are *derived*: each tenant has its own partition
(its own files under ``data_dir/indexes/<tenant_id>/``), so no query can reach another
tenant's entries by construction. Each partition records the last change sequence it applied
(``applied_seq``); replaying changes after that mark, or rebuilding from the chunk rows, brings
it back in step after a crash between the SQL commit and the index write. The mark lives in
the partition directory's :data:`STATE_FILE` sidecar.

Entries are keyed by the chunk row's integer ``key`` (unique across tenants, never reused).
Applying the same upsert or delete twice leaves the partition unchanged (idempotent).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ragd.ops.files import read_json
from ragd.stores.catalog import IndexEntry

Vector = npt.NDArray[np.float32]
#: The sidecar, in each partition directory, that records the partition's ``applied_seq``.
STATE_FILE = "applied_seq.json"


@dataclass(frozen=True, slots=True)
class Hit:
    """One search hit: the chunk key and the index's own score (higher is better)."""

    key: int
    score: float


@dataclass(frozen=True, slots=True)
class Scope:
    """Optional restriction of a search inside one tenant partition (None = no restriction).

    Tenant isolation does not depend on this: a partition only ever holds one tenant.
    """

    collection_ids: Collection[str] | None = None
    document_ids: Collection[str] | None = None


class Partition(Protocol):
    """Operations shared by both kinds of partition (one tenant, one index kind)."""

    @property
    def applied_seq(self) -> int:
        """The highest change sequence whose effect is durably in this partition."""
        ...

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        """Add entries, replacing any with the same key (buffered until :meth:`commit`)."""
        ...

    def delete(self, keys: Collection[int]) -> None:
        """Remove entries by key; unknown keys are ignored (buffered until :meth:`commit`)."""
        ...

    def commit(self, applied_seq: int) -> None:
        """Make buffered changes visible and record ``applied_seq``. Implementations whose
        saves are expensive may save at checkpoints (see :meth:`flush`): the on-disk mark
        never runs ahead of the on-disk data, so replaying the log repairs a crash."""
        ...

    def clear(self) -> None:
        """Remove every entry and reset ``applied_seq`` to 0 (committed at once)."""
        ...

    def flush(self) -> None:
        """Save anything committed but only checkpointed lazily (no-op where every commit is
        saved). After a crash, whatever was not flushed is replayed from the change log."""
        ...

    def count(self) -> int:
        """Number of entries visible to search."""
        ...

    def keys(self) -> set[int]:
        """Every key visible to search (for ``ragd index verify``)."""
        ...

    def refresh(self) -> None:
        """Pick up commits made by other processes (cheap when nothing changed)."""
        ...

    def memory_bytes(self) -> int:
        """Approximate resident memory of this partition."""
        ...

    def close(self) -> None: ...


class LexicalPartition(Partition, Protocol):
    """BM25 over the entries' text."""

    def search(self, query: str, limit: int, scope: Scope | None = None) -> list[Hit]:
        """Best ``limit`` hits by BM25 for a free-text query (never raises on odd syntax:
        the query is treated as words, not as a query language)."""
        ...


class VectorPartition(Partition, Protocol):
    """Approximate nearest neighbours (cosine) over the entries' vectors."""

    @property
    def dimension(self) -> int | None:
        """The vectors' dimension, or None while empty and never written."""
        ...

    def search(self, vector: Vector, limit: int, scope: Scope | None = None) -> list[Hit]:
        """Best ``limit`` hits by cosine similarity (score = similarity, higher is better)."""
        ...


def as_vector(value: Any, dimension: int) -> Vector:
    """A float32 ``(dimension,)`` view of ``value`` (bytes blob or array); ValueError when the
    size does not match."""
    array = (
        np.frombuffer(value, dtype=np.float32)
        if isinstance(value, bytes | bytearray | memoryview)
        else np.asarray(value, dtype=np.float32)
    )
    if array.shape != (dimension,):
        raise ValueError(f"vector has shape {array.shape}, expected ({dimension},)")
    return array


def read_applied_seq(directory: Path) -> int:
    """The ``applied_seq`` recorded in a partition directory's sidecar (0 when absent)."""
    data = read_json(directory / STATE_FILE)
    return int(data.get("applied_seq", 0)) if data else 0
