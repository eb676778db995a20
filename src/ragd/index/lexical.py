"""The lexical (BM25) partition: one tantivy index per tenant directory.

Layout of a partition directory: tantivy's own files (``meta.json``, segment files, lock
files) plus the ``applied_seq.json`` sidecar, written atomically after tantivy's commit is
durable. A crash between the two leaves the sidecar behind the data, so the caller replays
changes that are already applied; upserts (delete-by-key then add) and deletes are
idempotent, so the replay is harmless.

The tantivy ``IndexWriter`` only lives for the duration of :meth:`TantivyPartition.commit`
and :meth:`TantivyPartition.clear` (tantivy holds ``.tantivy-writer.lock`` while a writer
exists), so another process can write next; the caller serialises writers across processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path

import tantivy

from ragd.index.base import STATE_FILE, Hit, Scope, read_applied_seq
from ragd.ops.files import directory_bytes, file_signature, write_json_atomic
from ragd.stores.catalog import IndexEntry

KEY = "key"
DOCUMENT_ID = "document_id"
COLLECTION_ID = "collection_id"
TEXT = "text"

#: The tokenizer of the ``text`` field (built into tantivy: simple tokenizer, long-token
#: removal, lowercasing, English Snowball stemmer).
TEXT_TOKENIZER = "en_stem"
#: At most this many distinct query terms are used (the rest of a huge query is ignored).
MAX_QUERY_TERMS = 1024
_META_FILE = "meta.json"
_WRITER_HEAP_BYTES = 64_000_000
_RELOAD_ATTEMPTS = 3


def lexical_schema() -> tantivy.Schema:
    """The schema of a lexical partition."""
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field(KEY, stored=True, indexed=True, fast=True)
    builder.add_text_field(DOCUMENT_ID, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(COLLECTION_ID, tokenizer_name="raw", index_option="basic")
    builder.add_text_field(TEXT, tokenizer_name=TEXT_TOKENIZER, index_option="position")
    return builder.build()


def query_analyzer() -> tantivy.TextAnalyzer:
    """An analyser producing the same terms as ``en_stem`` does at indexing time."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


class TantivyPartition:
    """BM25 search over one tenant's chunk texts, stored in a tantivy index at ``path``.

    Writes (:meth:`upsert`, :meth:`delete`) are buffered in memory until :meth:`commit`.
    Searches may run from several threads while one thread writes.
    """

    def __init__(self, path: Path, *, writer_heap_bytes: int = _WRITER_HEAP_BYTES) -> None:
        """Open (or create) the partition stored in the directory ``path``."""
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._heap = writer_heap_bytes
        self._schema = lexical_schema()
        self._analyzer = query_analyzer()
        index = tantivy.Index(self._schema, path=str(path), reuse=True)
        index.config_reader(reload_policy="manual")
        index.reload()
        self._index: tantivy.Index | None = index
        self._lock = threading.Lock()  # pending buffer, writer, applied_seq, signatures
        self._pending: dict[int, IndexEntry | None] = {}
        self._meta_sig = file_signature(path / _META_FILE)
        self._state_sig = file_signature(path / STATE_FILE)
        self._applied_seq = read_applied_seq(path)

    @property
    def path(self) -> Path:
        """The partition's directory."""
        return self._path

    @property
    def applied_seq(self) -> int:
        """The highest change sequence whose effect is durably in this partition."""
        return self._applied_seq

    def _live(self) -> tantivy.Index:
        index = self._index
        if index is None:
            raise RuntimeError(f"lexical partition {self._path} is closed")
        return index

    # -- writes -----------------------------------------------------------------------------

    def upsert(self, entries: Sequence[IndexEntry]) -> None:
        """Add entries, replacing any with the same key (buffered until :meth:`commit`)."""
        self._live()
        for entry in entries:
            if entry.key < 0:
                raise ValueError(f"keys must be non-negative, got {entry.key}")
        with self._lock:
            for entry in entries:
                self._pending[entry.key] = entry

    def delete(self, keys: Collection[int]) -> None:
        """Remove entries by key; unknown keys are ignored (buffered until :meth:`commit`)."""
        self._live()
        with self._lock:
            for key in keys:
                if key >= 0:  # a negative key can never have been indexed
                    self._pending[key] = None

    def commit(self, applied_seq: int) -> None:
        """Make buffered changes durable and visible, then record ``applied_seq``."""
        index = self._live()
        with self._lock:
            changed = bool(self._pending)
            if changed:
                writer = index.writer(heap_size=self._heap, num_threads=1)
                try:
                    # One delete for every touched key, then the adds: a delete only
                    # affects documents added before it, so upserts replace.
                    # (delete_documents_by_term does not match u64 terms in tantivy-py 0.27.)
                    touched = tantivy.Query.term_set_query(self._schema, KEY, sorted(self._pending))
                    writer.delete_documents_by_query(touched)
                    for entry in self._pending.values():
                        if entry is not None:
                            writer.add_document(self._document(entry))
                    writer.commit()
                except BaseException:
                    writer.rollback()
                    raise
                finally:
                    # Joins merge threads and drops the writer: releases the writer lock.
                    writer.wait_merging_threads()
                self._pending.clear()
                self._reload(index)
            if changed or applied_seq != self._applied_seq:
                self._write_state(applied_seq)

    def flush(self) -> None:
        """Nothing to do: every commit is already saved."""

    def clear(self) -> None:
        """Remove every entry and reset ``applied_seq`` to 0 (committed at once)."""
        index = self._live()
        with self._lock:
            writer = index.writer(heap_size=self._heap, num_threads=1)
            try:
                writer.delete_all_documents()
                writer.commit()
            finally:
                writer.wait_merging_threads()
            self._pending.clear()
            self._reload(index)
            self._write_state(0)

    def _document(self, entry: IndexEntry) -> tantivy.Document:
        doc = tantivy.Document()
        doc.add_unsigned(KEY, entry.key)
        doc.add_text(DOCUMENT_ID, entry.document_id)
        doc.add_text(COLLECTION_ID, entry.collection_id)
        doc.add_text(TEXT, entry.text)
        return doc

    def _write_state(self, applied_seq: int) -> None:
        state = self._path / STATE_FILE
        write_json_atomic(state, {"applied_seq": applied_seq})
        self._applied_seq = applied_seq
        self._state_sig = file_signature(state)

    def _reload(self, index: tantivy.Index) -> None:
        """Point searches at the latest commit on disk (retrying if another process's garbage
        collection removes a segment file while it is being opened)."""
        for attempt in range(_RELOAD_ATTEMPTS):
            sig = file_signature(self._path / _META_FILE)
            try:
                index.reload()
            except (OSError, ValueError, RuntimeError):
                if attempt == _RELOAD_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
            else:
                self._meta_sig = sig
                return

    def refresh(self) -> None:
        """Pick up commits made by other processes (two ``stat`` calls when nothing changed)."""
        index = self._live()
        with self._lock:
            if file_signature(self._path / _META_FILE) != self._meta_sig:
                self._reload(index)
            state_sig = file_signature(self._path / STATE_FILE)
            if state_sig != self._state_sig:
                self._applied_seq = read_applied_seq(self._path)
                self._state_sig = state_sig

    # -- reads ------------------------------------------------------------------------------

    def search(self, query: str, limit: int, scope: Scope | None = None) -> list[Hit]:
        """Best ``limit`` hits by BM25 for a free-text query.

        The query is only ever split into words (with the indexing analyser), never parsed as
        tantivy query syntax, so no input raises; any word may match (OR semantics). ``scope``
        restricts hits to the given collections and/or documents without changing scores.
        """
        index = self._live()
        if limit <= 0:
            return []
        terms = list(dict.fromkeys(self._analyzer.analyze(query)))[:MAX_QUERY_TERMS]
        if not terms:
            return []
        words = [tantivy.Query.term_query(self._schema, TEXT, term) for term in terms]
        text_query = (
            words[0]
            if len(words) == 1
            else tantivy.Query.boolean_query([(tantivy.Occur.Should, w) for w in words])
        )
        clauses = [(tantivy.Occur.Must, text_query)]
        if scope is not None:
            for field, values in (
                (COLLECTION_ID, scope.collection_ids),
                (DOCUMENT_ID, scope.document_ids),
            ):
                if values is None:
                    continue
                wanted = sorted(set(values))
                if not wanted:
                    return []
                restriction = tantivy.Query.term_set_query(self._schema, field, wanted)
                # A zero constant score filters without shifting the BM25 scores.
                clauses.append(
                    (tantivy.Occur.Must, tantivy.Query.const_score_query(restriction, 0.0))
                )
        final = text_query if len(clauses) == 1 else tantivy.Query.boolean_query(clauses)
        searcher = index.searcher()
        hits = searcher.search(final, limit, count=False).hits
        if not hits:
            return []
        keys = searcher.fast_field_values(KEY, [address for _, address in hits])
        return [
            Hit(int(key), float(score))
            for (score, _), key in zip(hits, keys, strict=True)
            if key is not None
        ]

    def count(self) -> int:
        """Number of entries visible to search."""
        return int(self._live().searcher().num_docs)

    def keys(self) -> set[int]:
        """Every key visible to search (reads the ``key`` fast field of every document)."""
        searcher = self._live().searcher()
        total = int(searcher.num_docs)
        if total == 0:
            return set()
        hits = searcher.search(tantivy.Query.all_query(), total, count=False).hits
        values = searcher.fast_field_values(KEY, [address for _, address in hits])
        return {int(value) for value in values if value is not None}

    def memory_bytes(self) -> int:
        """Approximate resident memory: the index files (memory-mapped, so an upper bound of
        what is resident) plus the pending write buffer."""
        pending = sum(
            len(entry.text) + len(entry.document_id) + len(entry.collection_id) + 64
            for entry in list(self._pending.values())
            if entry is not None
        )
        return directory_bytes(self._path) + pending

    def close(self) -> None:
        """Release the index (pending, uncommitted changes are discarded)."""
        with self._lock:
            self._pending.clear()
            self._index = None
