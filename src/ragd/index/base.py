"""The contracts of the search backend and of the derived indexes it keeps.

:class:`SearchBackend` is what the rest of ragd sees: search reads its lexical and dense legs,
ingestion tells it about commits, the CLI verifies and rebuilds it. The embedded backend
(``index/manager.py``) keeps the partitions described below; a backend that indexes inside the
database (PostgreSQL full-text and pgvector) implements the same Protocol without them.

SQLite (or PostgreSQL) is the source of truth: chunk rows with their vectors, and an
append-only change log (``index_changes``: ``seq``, ``tenant_id``, ``op``, ``chunk_key``).
In the embedded backend the lexical (BM25) and vector (HNSW) indexes are *derived*: each
tenant has its own partition (its own files under ``data_dir/indexes/<tenant_id>/``), so no
query can reach another tenant's entries by construction. Each partition records the last
change sequence it applied (``applied_seq``); replaying changes after that mark, or
rebuilding from the chunk rows, brings it back in step after a crash between the SQL commit
and the index write. The mark lives in the partition directory's :data:`STATE_FILE` sidecar.

Entries are keyed by the chunk row's integer ``key`` (unique across tenants, never reused).
Applying the same upsert or delete twice leaves the partition unchanged (idempotent).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

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
    ``metadata`` is the search's documents-metadata filter (validated by
    ``retrieval/filters.py``); a backend whose ``filters_metadata`` is true applies it in its
    legs, the others ignore it (the search service filters after retrieval either way).
    """

    collection_ids: Collection[str] | None = None
    document_ids: Collection[str] | None = None
    metadata: Mapping[str, Any] | None = None


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

    def continuing(self, keys: Iterable[int]) -> set[int] | None:
        """The keys among ``keys`` whose entry continues its section
        (:attr:`IndexEntry.continues`); None when the partition cannot tell (it was saved
        before the flags were kept)."""
        ...

    def restore_sections(self, keys: Collection[int], continuing: Collection[int]) -> bool:
        """Set the flags of a partition that cannot tell: ``continuing`` among ``keys``, its
        entries when they were read; False (nothing set) when its entries are no longer
        ``keys``."""
        ...


VerificationState = Literal["ok", "pending", "broken"]


@dataclass(frozen=True, slots=True)
class Verification:
    """How one tenant's search indexes compare with its chunk rows (``ragd index verify``).

    ``*_missing`` are chunk rows a partition lacks, ``*_orphans`` entries it holds without a
    chunk row; ``*_pending`` is how many of those differences the change log after the
    partition's saved mark (``*_applied``) accounts for, so that replaying the log (the next
    sync, or the next start) repairs them. A vector partition is saved at most every 30 s,
    so during ingestion its saved file is normally behind by the chunks committed since.

    :attr:`state`: ``ok`` (in step), ``pending`` (behind, and every difference is in the log
    after the mark: nothing to repair) or ``broken`` (a difference the log does not account
    for, or a mark ahead of the log: only ``ragd index rebuild`` repairs it).
    """

    tenant_id: str
    chunks: int
    last_change: int
    lexical_applied: int
    vector_applied: int
    lexical_missing: int
    lexical_orphans: int
    vector_missing: int
    vector_orphans: int
    lexical_pending: int = 0
    vector_pending: int = 0

    @property
    def ok(self) -> bool:
        """In step: no difference, and both partitions have applied the whole log."""
        return (
            self.lexical_missing == self.lexical_orphans == 0
            and self.vector_missing == self.vector_orphans == 0
            and self.lexical_applied >= self.last_change
            and self.vector_applied >= self.last_change
        )

    @property
    def broken(self) -> bool:
        """A difference that replaying the change log would not repair."""
        return (
            self.lexical_missing + self.lexical_orphans > self.lexical_pending
            or self.vector_missing + self.vector_orphans > self.vector_pending
            # A mark ahead of the log (a database restored from an older backup, say):
            # replay would skip the changes numbered up to the mark.
            or self.lexical_applied > self.last_change
            or self.vector_applied > self.last_change
        )

    @property
    def state(self) -> VerificationState:
        if self.broken:
            return "broken"
        return "ok" if self.ok else "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id, "state": self.state, "ok": self.ok,
            "chunks": self.chunks, "last_change": self.last_change,
            "lexical_applied": self.lexical_applied, "vector_applied": self.vector_applied,
            "lexical_missing": self.lexical_missing, "lexical_orphans": self.lexical_orphans,
            "lexical_pending": self.lexical_pending, "vector_missing": self.vector_missing,
            "vector_orphans": self.vector_orphans, "vector_pending": self.vector_pending,
        }


class SearchBackend(Protocol):
    """The lexical (BM25) and dense (vector) legs of search, one family, per tenant.

    The contract every backend keeps:

    * Every call names the tenant and reaches that tenant's entries only; an unknown tenant
      is an empty index, not an error.
    * The catalog's change log is the source of truth, applied in log order and
      idempotently. After :meth:`sync` returns, every change committed before the call is
      searchable in this process; :meth:`notify` tells the other processes, and each search
      first applies whatever was notified before it. (A backend that searches the
      catalog's rows themselves, like the PostgreSQL one, has nothing to apply: a change is
      searchable everywhere once committed, and :meth:`sync` returns 0.)
    * Search methods never raise on odd query text; scores are higher-is-better and are
      only comparable within one leg.
    """

    #: True when both legs apply ``Scope.metadata`` (so the search service need not look
    #: deeper than it shows); False when they ignore it.
    filters_metadata: bool

    async def lexical_search(
        self, tenant_id: str, query: str, limit: int, scope: Scope | None = None
    ) -> list[Hit]:
        """Best ``limit`` BM25 hits for free text (words, not a query language)."""
        ...

    async def dense_search(
        self, tenant_id: str, vector: Vector, limit: int, scope: Scope | None = None
    ) -> list[Hit]:
        """Best ``limit`` hits by cosine similarity to ``vector``."""
        ...

    async def continuing(self, tenant_id: str, keys: Sequence[int]) -> set[int]:
        """The tenant's chunks among ``keys`` (hits of its legs) that continue a section:
        the chunk before them in their document's version has the same heading path. The
        search service asks on every hybrid or dense search, so a backend answers from what
        it holds where it can."""
        ...

    async def sync(self, tenant_id: str) -> int:
        """Apply every committed change of the tenant not applied yet (call it after a
        commit); returns how many were applied."""
        ...

    def notify(self) -> None:
        """The change log moved (call it right after the commit, before :meth:`sync`): a
        search that starts after this, in any process, sees the committed changes."""
        ...

    async def publish(self, tenant_id: str) -> int:
        """What a writer calls after its commit: :meth:`notify` first (so no search that
        follows it, anywhere, misses the commit), then :meth:`sync` of the tenant here (so
        the next search is fast), which may run in the background (:meth:`settle` waits for
        it); returns how many changes were applied before it returned."""
        ...

    async def settle(self) -> None:
        """Wait for background work that :meth:`publish` started (tests, shutdown)."""
        ...

    async def sync_all(self) -> int:
        """Catch up every tenant that is behind the change log (startup recovery)."""
        ...

    async def flush(self) -> None:
        """Make applied changes durable where the backend checkpoints lazily (periodic)."""
        ...

    async def verify(self, tenant_id: str) -> Verification: ...

    async def rebuild(self, tenant_id: str) -> int:
        """Refill the tenant's indexes from the chunk rows; returns the number of entries."""
        ...

    def memory_bytes(self) -> int:
        """Approximate resident memory of what this process holds open."""
        ...

    def close(self) -> None:
        """Save what is not saved yet and release everything (shutdown)."""
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
