"""The vector (HNSW) partition: one in-memory usearch index per tenant directory.

Layout of a partition directory, for a committed generation ``<gen>`` (a random token):

* ``vectors.<gen>.usearch``: the usearch index (cosine, f32);
* ``entries.<gen>.npz``: key → (document_id, collection_id), for scope filtering, and
  whether each chunk continues its section (``continues``; absent in partitions written
  before ragd kept it, which answer :meth:`UsearchPartition.continuing` with None until
  :meth:`UsearchPartition.restore_sections` or a rebuild);
* ``applied_seq.json``: ``applied_seq``, ``generation``, ``dimension`` and ``count``.

A commit writes both data files of a new generation (each atomically), then replaces the
sidecar, which is the commit point, then deletes older generations. Readers (also in other
processes) therefore always load a consistent pair. A crash before the sidecar is replaced
leaves the previous generation and ``applied_seq`` in force; the caller replays the changes,
which is harmless because upserts (remove then add) and deletes are idempotent.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from ragd.index.base import STATE_FILE, Hit, Scope, Vector, as_vector
from ragd.ops.files import atomic_write, file_signature, read_json, write_json_atomic
from ragd.stores.catalog import IndexEntry

#: A partition, or a scope, with at most this many entries is searched exactly (brute
#: force), which is both cheap and better than (over-)fetching from the graph.
EXACT_SEARCH_MAX = 512
#: Largest HNSW over-fetch tried for a scoped search before falling back to brute force.
MAX_OVERFETCH = 8192
_LOAD_ATTEMPTS = 5
_ENTRY_OVERHEAD_BYTES = 160  # dict slot, tuple, two set slots, int
_SET_SLOT_BYTES = 40  # a set slot (hash and pointer) at its load factor; the int is shared


def _vectors_file(generation: str) -> str:
    return f"vectors.{generation}.usearch"


def _entries_file(generation: str) -> str:
    return f"entries.{generation}.npz"


def _new_index(dimension: int) -> Index:
    return Index(ndim=dimension, metric="cos", dtype="f32")


def _free(index: Index) -> None:
    """Return an index's memory to the OS now (rather than at garbage collection)."""
    index.reset()  # type: ignore[no-untyped-call]


class _Snapshot:
    """What one committed generation holds in memory."""

    def __init__(self, dimension: int | None, index: Index | None) -> None:
        self.dimension = dimension
        self.index = index
        self.meta: dict[int, tuple[str, str]] = {}
        self.by_document: dict[str, set[int]] = {}
        self.by_collection: dict[str, set[int]] = {}
        #: The keys whose chunk continues its section.
        self.continuing: set[int] = set()
        #: False for a generation saved without the section flags: ``continuing`` is then
        #: incomplete and is neither answered from nor saved.
        self.sections = True

    def put(self, key: int, document_id: str, collection_id: str, continues: bool) -> None:
        self.meta[key] = (document_id, collection_id)
        self.by_document.setdefault(document_id, set()).add(key)
        self.by_collection.setdefault(collection_id, set()).add(key)
        if continues:
            self.continuing.add(key)

    def drop(self, key: int) -> None:
        found = self.meta.pop(key, None)
        if found is None:
            return
        self.continuing.discard(key)
        for groups, name in ((self.by_document, found[0]), (self.by_collection, found[1])):
            members = groups.get(name)
            if members is not None:
                members.discard(key)
                if not members:
                    del groups[name]


class UsearchPartition:
    """Approximate nearest-neighbour search (cosine) over one tenant's chunk vectors.

    The whole index lives in memory. Saving it rewrites every vector, so :meth:`commit` saves
    at most once per ``checkpoint_seconds`` (0: on every commit) and :meth:`flush`/:meth:`close`
    save what is left. Between checkpoints the on-disk ``applied_seq`` lags the in-memory one;
    that is safe because the SQL change log is replayed from the on-disk mark after a crash,
    and it keeps a bulk ingestion linear instead of quadratic in the tenant's size.
    Writes (:meth:`upsert`, :meth:`delete`) are buffered until :meth:`commit`. Searches may
    run from several threads while one thread writes; usearch calls are serialised by a lock.
    """

    def __init__(
        self, path: Path, dimension: int | None = None, *, checkpoint_seconds: float = 0.0
    ) -> None:
        """Open (or create) the partition stored in the directory ``path``.

        ``dimension`` is checked against the stored one (ValueError on mismatch); with None
        on an empty directory, the first :meth:`upsert` fixes it.
        """
        if dimension is not None and dimension <= 0:
            raise ValueError(f"dimension must be positive, got {dimension}")
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()  # the usearch index and the key maps
        self._write_lock = threading.RLock()  # commit / clear / refresh / pending buffer
        self._pending: dict[int, tuple[str, str, Vector, bool] | None] = {}
        self._closed = False
        self._applied_seq = 0
        self._generation: str | None = None
        self._state_sig: tuple[int, int, int] | None = None
        self._snap = _Snapshot(dimension, None)
        self._checkpoint_seconds = checkpoint_seconds
        self._durable_seq = 0
        self._unsaved = False  # in-memory data newer than the saved generation
        self._saved_at = time.monotonic()
        self._load(requested_dimension=dimension)

    # -- properties -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The partition's directory."""
        return self._path

    @property
    def applied_seq(self) -> int:
        """The highest change sequence applied to this partition (in memory; see
        :attr:`durable_seq` for what is saved)."""
        return self._applied_seq

    @property
    def durable_seq(self) -> int:
        """The ``applied_seq`` of the saved snapshot (what a restart starts from)."""
        return self._durable_seq

    @property
    def dimension(self) -> int | None:
        """The vectors' dimension, or None while empty and never written."""
        return self._snap.dimension

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"vector partition {self._path} is closed")

    # -- loading ----------------------------------------------------------------------------

    def _load(self, requested_dimension: int | None) -> None:
        """(Re)load the committed generation named by the sidecar."""
        state_path = self._path / STATE_FILE
        for attempt in range(_LOAD_ATTEMPTS):
            state_sig = file_signature(state_path)
            state = read_json(state_path) or {}
            try:
                snap = self._read_generation(state, requested_dimension)
            except FileNotFoundError:
                # Another process committed (and removed this generation) meanwhile.
                if attempt == _LOAD_ATTEMPTS - 1:
                    raise
                continue
            with self._lock:
                old = self._snap
                self._snap = snap
                self._applied_seq = int(state.get("applied_seq", 0))
                self._durable_seq = self._applied_seq
                self._unsaved = False
                self._generation = state.get("generation")
                self._state_sig = state_sig
            if old.index is not None and old.index is not snap.index:
                _free(old.index)
            return

    def _read_generation(self, state: dict[str, Any], requested: int | None) -> _Snapshot:
        stored = state.get("dimension")
        dimension = int(stored) if stored is not None else None
        if requested is not None and dimension is not None and requested != dimension:
            raise ValueError(
                f"{self._path}: stored vectors have dimension {dimension}, not {requested}"
            )
        dimension = dimension if dimension is not None else requested
        if dimension is None and self._snap.dimension is not None:
            dimension = self._snap.dimension
        generation = state.get("generation")
        if generation is None or dimension is None:
            return _Snapshot(dimension, _new_index(dimension) if dimension else None)
        vectors_path = self._path / _vectors_file(str(generation))
        if not vectors_path.exists():
            raise FileNotFoundError(vectors_path)
        index = _new_index(dimension)
        try:
            try:
                index.load(str(vectors_path))
            except RuntimeError:
                if not vectors_path.exists():  # removed by a newer commit while loading
                    raise FileNotFoundError(vectors_path) from None
                raise
            with np.load(self._path / _entries_file(str(generation)), allow_pickle=False) as npz:
                keys = npz["keys"]
                documents = npz["documents"]
                collections = npz["collections"]
                document_names = [str(name) for name in npz["document_names"]]
                collection_names = [str(name) for name in npz["collection_names"]]
                sections = "continues" in npz.files
                continues = (
                    npz["continues"] if sections else np.zeros(len(keys), dtype=np.bool_)
                )
        except BaseException:
            _free(index)
            raise
        snap = _Snapshot(dimension, index)
        snap.sections = sections
        for key, doc, coll, flag in zip(
            keys.tolist(), documents.tolist(), collections.tolist(), continues.tolist(),
            strict=True,
        ):
            snap.put(int(key), document_names[doc], collection_names[coll], bool(flag))
        return snap

    # -- writes -----------------------------------------------------------------------------

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        """Add entries, replacing any with the same key (buffered until :meth:`commit`).

        ValueError when an entry has no vector or a vector of the wrong dimension (the
        first vector ever written fixes the dimension of a new partition).
        """
        self._check_open()
        with self._write_lock:
            dimension = self._snap.dimension
            staged: list[tuple[int, tuple[str, str, Vector, bool]]] = []
            for entry in entries:
                if entry.vector is None:
                    raise ValueError(f"entry {entry.key} has no vector")
                if entry.key < 0:
                    raise ValueError(f"keys must be non-negative, got {entry.key}")
                if dimension is None:
                    shape = np.shape(entry.vector)
                    if len(shape) != 1 or shape[0] == 0:
                        raise ValueError(f"vector has shape {shape}, expected (dimension,)")
                    dimension = int(shape[0])
                vector = np.array(as_vector(entry.vector, dimension), dtype=np.float32)
                staged.append(
                    (entry.key, (entry.document_id, entry.collection_id, vector, entry.continues))
                )
            if dimension is not None and self._snap.dimension is None:
                with self._lock:
                    self._snap.dimension = dimension
            self._pending.update(staged)

    def delete(self, keys: Collection[int]) -> None:
        """Remove entries by key; unknown keys are ignored (buffered until :meth:`commit`)."""
        self._check_open()
        with self._write_lock:
            for key in keys:
                if key >= 0:
                    self._pending[key] = None

    def commit(self, applied_seq: int) -> None:
        """Make buffered changes durable and visible, then record ``applied_seq``."""
        self._check_open()
        with self._write_lock:
            if self._pending:
                self._apply_pending()
                self._unsaved = True
            self._applied_seq = applied_seq
            due = time.monotonic() - self._saved_at >= self._checkpoint_seconds
            if due:
                self._save()

    def flush(self) -> None:
        """Save the in-memory state now if it is newer than the saved snapshot."""
        if self._closed:
            return
        with self._write_lock:
            self._save()

    def _save(self) -> None:
        if self._unsaved or self._applied_seq != self._durable_seq:
            self._persist(self._applied_seq, new_generation=self._unsaved)

    def _apply_pending(self) -> None:
        snap = self._snap
        dimension = snap.dimension
        if dimension is None:  # only deletes were buffered on a never-written partition
            self._pending.clear()
            return
        removed = np.array([key for key in self._pending if key in snap.meta], dtype=np.uint64)
        added = [(key, item) for key, item in self._pending.items() if item is not None]
        with self._lock:
            if snap.index is None:
                snap.index = _new_index(dimension)
            if len(removed):
                snap.index.remove(removed)
            for key in removed.tolist():
                snap.drop(int(key))
            if added:
                snap.index.add(
                    np.array([key for key, _ in added], dtype=np.uint64),
                    np.stack([item[2] for _, item in added]),
                )
                for key, (document_id, collection_id, _, continues) in added:
                    snap.put(key, document_id, collection_id, continues)
        self._pending.clear()

    def _persist(self, applied_seq: int, *, new_generation: bool) -> None:
        """Write the data files (when changed) and then the sidecar, the commit point."""
        snap = self._snap
        generation = self._generation
        if new_generation or (generation is None and snap.index is not None):
            generation = uuid.uuid4().hex
            index = snap.index
            assert index is not None  # noqa: S101 - a new generation always has an index
            # Saving only reads the index, so it may run while searches run.
            atomic_write(self._path / _vectors_file(generation), lambda tmp: index.save(str(tmp)))
            arrays = _entries_arrays(snap)  # only this (writer) thread mutates it
            atomic_write(
                self._path / _entries_file(generation),
                lambda tmp: _save_npz(tmp, arrays),
            )
        state_path = self._path / STATE_FILE
        write_json_atomic(
            state_path,
            {
                "applied_seq": applied_seq,
                "generation": generation,
                "dimension": snap.dimension,
                "count": len(snap.meta),
            },
        )
        self._applied_seq = applied_seq
        self._durable_seq = applied_seq
        self._unsaved = False
        self._saved_at = time.monotonic()
        self._generation = generation
        self._state_sig = file_signature(state_path)
        self._remove_other_generations(generation)

    def _remove_other_generations(self, keep: str | None) -> None:
        wanted = {_vectors_file(keep), _entries_file(keep)} if keep else set()
        # Writers are serialised, so temporary files left now are from a crashed writer.
        for pattern in ("vectors.*.usearch", "entries.*.npz", ".vectors.*.tmp", ".entries.*.tmp"):
            for stale in self._path.glob(pattern):
                if stale.name not in wanted:
                    with contextlib.suppress(FileNotFoundError):
                        stale.unlink()

    def clear(self) -> None:
        """Remove every entry and reset ``applied_seq`` to 0 (committed at once). The
        dimension, once known, is kept."""
        self._check_open()
        with self._write_lock:
            self._pending.clear()
            dimension = self._snap.dimension
            fresh = _Snapshot(dimension, _new_index(dimension) if dimension else None)
            with self._lock:
                old, self._snap = self._snap, fresh
            if old.index is not None:
                _free(old.index)
            self._generation = None
            self._persist(0, new_generation=fresh.index is not None)

    def refresh(self) -> None:
        """Pick up commits made by other processes (one ``stat`` when nothing changed)."""
        self._check_open()
        with self._write_lock:
            state_path = self._path / STATE_FILE
            state_sig = file_signature(state_path)
            if state_sig == self._state_sig:
                return
            state = read_json(state_path) or {}
            if state.get("generation") == self._generation and state.get("generation"):
                self._applied_seq = int(state.get("applied_seq", 0))
                self._durable_seq = self._applied_seq
                self._state_sig = state_sig
                return
            self._load(requested_dimension=None)

    # -- reads ------------------------------------------------------------------------------

    def search(self, vector: Vector, limit: int, scope: Scope | None = None) -> list[Hit]:
        """Best ``limit`` hits by cosine similarity (score = similarity, higher is better).

        Small partitions and small scopes are searched exactly. Otherwise the HNSW graph is
        searched (over-fetching and filtering for a scope), falling back to an exact search
        over the allowed entries when that yields fewer than ``limit`` hits while more exist.
        ValueError on a wrong-dimension query.
        """
        self._check_open()
        with self._lock:
            snap = self._snap
            if snap.dimension is None:
                return []
            query = as_vector(vector, snap.dimension)
            index = snap.index
            if limit <= 0 or index is None or not snap.meta:
                return []
            matching = _matching_keys(snap, scope)
            if matching is None:
                wanted = min(limit, len(snap.meta))
                if len(snap.meta) <= EXACT_SEARCH_MAX:
                    return _graph_search(index, query, wanted, exact=True)
                hits = _graph_search(index, query, wanted)
                if len(hits) < wanted:  # the graph can miss entries; scan them all
                    hits = _graph_search(index, query, wanted, exact=True)
                return hits
            if not matching:
                return []
            wanted = min(limit, len(matching))
            if len(matching) > EXACT_SEARCH_MAX:
                ratio = len(snap.meta) / len(matching)
                fetch = max(4 * limit, math.ceil(2 * ratio * limit))
                fetch = min(len(snap.meta), MAX_OVERFETCH, fetch)
                hits = [hit for hit in _graph_search(index, query, fetch) if hit.key in matching]
                if len(hits) >= wanted:
                    return hits[:limit]
            return _exact_search(index, query, matching, limit)

    def continuing(self, keys: Iterable[int]) -> set[int] | None:
        """The keys among ``keys`` whose chunk continues its section, from memory; None when
        this partition's saved generation predates the flags (until they are restored). Lock
        free: membership tests are atomic, and a search calls this on every request."""
        snap = self._snap
        if not snap.sections:
            return None
        continuing = snap.continuing
        return {key for key in keys if key in continuing}

    def restore_sections(self, keys: Collection[int], continuing: Collection[int]) -> bool:
        """Give a partition saved without section flags its flags: ``continuing`` are the
        continuing keys among ``keys``, read from the chunk rows. Applied only while the
        partition holds exactly ``keys`` (False otherwise: it changed meanwhile, read again).
        In memory; saved with the partition's next save."""
        self._check_open()
        with self._write_lock:
            snap = self._snap
            if snap.sections:
                return True
            with self._lock:
                if snap.meta.keys() != set(keys):
                    return False
                snap.continuing = {key for key in continuing if key in snap.meta}
                snap.sections = True
            return True

    def count(self) -> int:
        """Number of entries visible to search."""
        return len(self._snap.meta)

    def keys(self) -> set[int]:
        """Every key visible to search."""
        with self._lock:
            return set(self._snap.meta)

    def memory_bytes(self) -> int:
        """Approximate resident memory: the usearch index (see :func:`_index_bytes`), the key
        maps and the pending buffer."""
        with self._lock:
            snap = self._snap
            used = _index_bytes(snap.index) if snap.index is not None else 0
            used += len(snap.meta) * _ENTRY_OVERHEAD_BYTES
            used += len(snap.continuing) * _SET_SLOT_BYTES
            used += sum(len(name) + 64 for name in snap.by_document)
            used += sum(len(name) + 64 for name in snap.by_collection)
        pending = list(self._pending.values())
        used += sum(item[2].nbytes + 128 for item in pending if item is not None)
        return int(used)

    def close(self) -> None:
        """Save committed changes not yet checkpointed, then free the in-memory index
        (pending, uncommitted changes are discarded)."""
        with self._write_lock:
            if not self._closed:
                self._pending.clear()
                self._save()
        with self._write_lock, self._lock:
            self._closed = True
            self._pending.clear()
            if self._snap.index is not None:
                _free(self._snap.index)
            self._snap = _Snapshot(self._snap.dimension, None)


def _index_bytes(index: Index) -> int:
    """Resident bytes of a usearch index. Its own ``memory_usage`` counts the arena it
    reserves (about 16 MB even for one vector, mostly never touched), so it is capped by an
    estimate from the contents: the vector, the base-layer links and per-node overhead."""
    per_node = index.ndim * 4 + index.connectivity * 2 * 4 + 96
    return int(min(int(index.memory_usage), len(index) * per_node + 64 * 1024))


def _matching_keys(snap: _Snapshot, scope: Scope | None) -> set[int] | None:
    """The keys a scope allows (None: no restriction)."""
    if scope is None or (scope.collection_ids is None and scope.document_ids is None):
        return None
    result: set[int] | None = None
    for groups, names in (
        (snap.by_collection, scope.collection_ids),
        (snap.by_document, scope.document_ids),
    ):
        if names is None:
            continue
        allowed = _union(groups.get(name) for name in set(names))
        result = allowed if result is None else result & allowed
    return result


def _union(groups: Iterable[set[int] | None]) -> set[int]:
    out: set[int] = set()
    for group in groups:
        if group:
            out |= group
    return out


def _graph_search(index: Index, query: Vector, count: int, *, exact: bool = False) -> list[Hit]:
    """usearch's search: HNSW, or with ``exact`` a linear scan over every entry."""
    matches = index.search(query, count, exact=exact)
    return [
        Hit(int(key), 1.0 - float(distance))
        for key, distance in zip(matches.keys.tolist(), matches.distances.tolist(), strict=True)
    ]


def _exact_search(index: Index, query: Vector, keys: set[int], limit: int) -> list[Hit]:
    """Brute-force cosine similarity over ``keys``' stored vectors."""
    ordered = np.fromiter(keys, dtype=np.uint64, count=len(keys))
    rows = cast(tuple[npt.NDArray[np.float32], ...], index.get(ordered))
    matrix = np.vstack(rows).astype(np.float32, copy=False)
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(query))
    dots = matrix @ query
    scores = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    take = min(limit, len(scores))
    top = np.argpartition(-scores, take - 1)[:take] if take < len(scores) else np.arange(take)
    top = top[np.argsort(-scores[top], kind="stable")]
    return [Hit(int(ordered[i]), float(scores[i])) for i in top.tolist()]


def _entries_arrays(snap: _Snapshot) -> dict[str, npt.NDArray[Any]]:
    """The key map as compact arrays (interned names plus integer codes), with the section
    flags when the snapshot has them all."""
    meta = snap.meta
    document_codes: dict[str, int] = {}
    collection_codes: dict[str, int] = {}
    count = len(meta)
    keys = np.empty(count, dtype=np.uint64)
    documents = np.empty(count, dtype=np.int32)
    collections = np.empty(count, dtype=np.int32)
    for row, (key, (document_id, collection_id)) in enumerate(meta.items()):
        keys[row] = key
        documents[row] = document_codes.setdefault(document_id, len(document_codes))
        collections[row] = collection_codes.setdefault(collection_id, len(collection_codes))
    arrays: dict[str, npt.NDArray[Any]] = {
        "keys": keys,
        "documents": documents,
        "collections": collections,
        "document_names": np.array(list(document_codes), dtype=np.str_),
        "collection_names": np.array(list(collection_codes), dtype=np.str_),
    }
    if snap.sections:
        continuing = snap.continuing
        arrays["continues"] = np.fromiter(
            (key in continuing for key in meta), dtype=np.bool_, count=count
        )
    return arrays


def _save_npz(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    with open(path, "wb") as handle:
        _write_npz(handle, arrays)


def _write_npz(handle: BinaryIO, arrays: dict[str, npt.NDArray[Any]]) -> None:
    np.savez(handle, allow_pickle=False, **arrays)
