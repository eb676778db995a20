"""The embedded search backend: per-tenant derived indexes kept in step with the SQL change log.

:class:`IndexManager` implements :class:`~ragd.index.base.SearchBackend` over tantivy (BM25)
and usearch (HNSW) partitions in the data dir.

``sync(tenant)`` replays every ``index_changes`` row after a partition's ``applied_seq``
(idempotently: an upsert of a chunk that no longer exists is a delete), so it is the one
recovery path for every failure: a crash between the SQL commit and the index write, a
partition deleted by hand, another process that committed changes. ``verify`` compares the
partitions with the chunk rows; ``rebuild`` refills them from SQL.

Writers serialise per tenant with an ``fcntl`` lock file, so an API server and separate
``ragd worker`` processes can share one data dir. Blocking index work runs in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragd.index.base import (
    Hit,
    LexicalPartition,
    Partition,
    Scope,
    Vector,
    VectorPartition,
    Verification,
    read_applied_seq,
)
from ragd.index.drift import compare
from ragd.ops.files import ChangeSignal, FileChangeSignal, lock_file
from ragd.stores.catalog import Catalog, Change, IndexEntry

logger = logging.getLogger(__name__)

_TENANT_DIR = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BATCH = 2000
#: Saving a vector partition rewrites all its vectors: at most this often on commit (the
#: periodic checkpoint task and shutdown save the rest; a crash replays the change log).
VECTOR_CHECKPOINT_SECONDS = 30.0

LexicalFactory = Callable[[Path], LexicalPartition]
VectorFactory = Callable[[Path], VectorPartition]


@dataclass
class Partitions:
    """The two partitions of one tenant, plus the in-process lock that guards them."""

    lexical: LexicalPartition
    vectors: VectorPartition
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dirty: bool = True


def default_factories() -> tuple[LexicalFactory, VectorFactory]:
    """tantivy for BM25 and usearch for vectors (imported on first use, not at startup)."""

    def lexical(path: Path) -> LexicalPartition:
        from ragd.index.lexical import TantivyPartition

        return TantivyPartition(path)

    def vectors(path: Path) -> VectorPartition:
        from ragd.index.vectors import UsearchPartition

        return UsearchPartition(path, None, checkpoint_seconds=VECTOR_CHECKPOINT_SECONDS)

    return lexical, vectors


class IndexManager:
    """Opens tenant partitions on demand and replays the change log into them.

    ``signal`` carries "the change log moved" between the processes sharing the data dir
    (default: a marker file under ``root``).
    """

    #: The partitions hold no metadata: the search service filters after retrieval.
    filters_metadata = False

    def __init__(
        self,
        catalog: Catalog,
        root: Path,
        *,
        signal: ChangeSignal | None = None,
        lexical_factory: LexicalFactory | None = None,
        vector_factory: VectorFactory | None = None,
    ) -> None:
        defaults = default_factories()
        self._catalog = catalog
        self._root = root
        self._lexical_factory = lexical_factory or defaults[0]
        self._vector_factory = vector_factory or defaults[1]
        self._tenants: dict[str, Partitions] = {}
        self._open_lock = threading.Lock()
        #: Background syncs after publish, one per tenant, and the tenants published again
        #: while theirs ran (so it runs once more, for all of them at once).
        self._publishing: dict[str, asyncio.Task[None]] = {}
        self._published_again: set[str] = set()
        #: Background reads of section flags for partitions saved without them.
        self._restoring: dict[str, asyncio.Task[None]] = {}
        root.mkdir(parents=True, exist_ok=True)
        self._signal = signal or FileChangeSignal(root / "changes.marker")

    # -- partitions ----------------------------------------------------------------------

    def _tenant_dir(self, tenant_id: str) -> Path:
        if not _TENANT_DIR.match(tenant_id):
            raise ValueError(f"unsafe tenant id for a directory name: {tenant_id!r}")
        return self._root / tenant_id

    async def partitions(self, tenant_id: str) -> Partitions:
        """The tenant's partitions, opened (in a thread) on first use."""
        found = self._tenants.get(tenant_id)
        if found is not None:
            return found
        return await asyncio.to_thread(self._open, tenant_id)

    def _open(self, tenant_id: str) -> Partitions:
        with self._open_lock:
            found = self._tenants.get(tenant_id)
            if found is None:
                base = self._tenant_dir(tenant_id)
                found = Partitions(
                    lexical=self._lexical_factory(base / "lexical"),
                    vectors=self._vector_factory(base / "vectors"),
                )
                self._tenants[tenant_id] = found
            return found

    # -- keeping in step -------------------------------------------------------------------

    def notify(self) -> None:
        """The change log moved: every search leg, in this process and in the others that
        share the signal, syncs its tenant's partitions before it searches again."""
        for parts in self._tenants.values():
            parts.dirty = True
        self._signal.notify()

    async def ensure_fresh(self, tenant_id: str) -> Partitions:
        """The tenant's partitions with every notified change applied (each search leg
        calls this: a ``stat`` when nothing moved)."""
        parts = await self.partitions(tenant_id)
        if self._signal.changed():
            for other in self._tenants.values():
                other.dirty = True
        # A sync in progress (a publish's, in the background) may be applying a change this
        # search must see: it cleared ``dirty`` when it started, so wait for it too.
        if parts.dirty or parts.lock.locked():
            async with parts.lock:
                # Both legs of a hybrid search get here together: the second finds the
                # partitions synced by the first and does not replay again.
                if parts.dirty:
                    await self._sync_locked(tenant_id, parts)
        return parts

    async def lexical_search(
        self, tenant_id: str, query: str, limit: int, scope: Scope | None = None
    ) -> list[Hit]:
        parts = await self.ensure_fresh(tenant_id)
        return await asyncio.to_thread(parts.lexical.search, query, limit, scope)

    async def dense_search(
        self, tenant_id: str, vector: Vector, limit: int, scope: Scope | None = None
    ) -> list[Hit]:
        parts = await self.ensure_fresh(tenant_id)
        return await asyncio.to_thread(parts.vectors.search, vector, limit, scope)

    async def publish(self, tenant_id: str) -> int:
        """:meth:`notify`, then sync the tenant in the background and return at once.

        The writer does not wait for the index files: every search leg syncs its tenant
        first (:meth:`ensure_fresh`), so nothing committed is missed, and documents committed
        while a sync runs are applied together by the next one, in one commit of each
        partition (group commit): a tantivy commit costs the same for one small document as
        for a hundred.
        """
        self.notify()
        if tenant_id in self._publishing:
            self._published_again.add(tenant_id)
        else:
            task = asyncio.create_task(self._publish_loop(tenant_id), name=f"publish-{tenant_id}")
            self._publishing[tenant_id] = task
        return 0

    async def _publish_loop(self, tenant_id: str) -> None:
        try:
            while True:
                self._published_again.discard(tenant_id)
                try:
                    await self.sync(tenant_id)
                except Exception:  # noqa: BLE001 - the next search (or publish) syncs again
                    logger.warning("background index sync failed", exc_info=True,
                                   extra={"tenant_id": tenant_id})
                    return
                if tenant_id not in self._published_again:
                    return
        finally:
            self._publishing.pop(tenant_id, None)

    async def settle(self) -> None:
        """Wait for the background syncs that :meth:`publish` started (and any restoring of
        section flags)."""
        while self._publishing or self._restoring:
            await asyncio.gather(*self._publishing.values(), *self._restoring.values(),
                                 return_exceptions=True)

    async def sync(self, tenant_id: str) -> int:
        """Apply every change after the partitions' marks; returns how many were applied."""
        parts = await self.partitions(tenant_id)
        async with parts.lock:
            return await self._sync_locked(tenant_id, parts)

    async def _sync_locked(self, tenant_id: str, parts: Partitions) -> int:
        parts.dirty = False
        try:
            with await asyncio.to_thread(self._file_lock, tenant_id) as _:
                return await self._replay(tenant_id, parts)
        except BaseException:
            parts.dirty = True
            raise

    async def _replay(self, tenant_id: str, parts: Partitions) -> int:
        await asyncio.to_thread(_refresh, parts)
        applied = 0
        while True:
            low = min(parts.lexical.applied_seq, parts.vectors.applied_seq)
            changes = await self._catalog.changes_after(tenant_id, low, limit=BATCH)
            if not changes:
                return applied
            upserts, deletes = _net(changes)
            entries = await self._catalog.index_entries(tenant_id, sorted(upserts))
            present = {entry.key for entry in entries}
            gone = deletes | (upserts - present)
            last = changes[-1].seq
            await asyncio.to_thread(_apply, parts, changes[0].seq, entries, gone, last)
            applied += len(changes)

    async def continuing(self, tenant_id: str, keys: Sequence[int]) -> set[int]:
        if not keys:
            return set()
        # The keys are hits of this search's legs, which brought the partitions up to date.
        parts = await self.partitions(tenant_id)
        # From memory (the vector partition keeps each entry's flag); a partition saved
        # before the flags were kept asks the chunk rows until its flags are restored.
        found = parts.vectors.continuing(keys)
        if found is None:
            if tenant_id not in self._restoring:
                self._restoring[tenant_id] = asyncio.create_task(
                    self._restore_sections(tenant_id, parts), name=f"sections-{tenant_id}"
                )
            return await self._catalog.continuing(tenant_id, keys)
        return found

    async def _restore_sections(self, tenant_id: str, parts: Partitions) -> None:
        """Read a flagless partition's section flags from the chunk rows, once, in the
        background (the searches meanwhile ask the rows). No replay runs meanwhile (the
        partitions' lock), so the entries read stay the entries flagged."""
        try:
            async with parts.lock:
                keys = sorted(await asyncio.to_thread(parts.vectors.keys))
                continuing: set[int] = set()
                for start in range(0, len(keys), BATCH):
                    continuing |= await self._catalog.continuing(
                        tenant_id, keys[start : start + BATCH]
                    )
                restored = await asyncio.to_thread(
                    parts.vectors.restore_sections, keys, continuing
                )
            if restored:
                logger.info("section flags restored from the chunk rows",
                            extra={"tenant_id": tenant_id, "entries": len(keys)})
        except Exception:  # noqa: BLE001 - the searches keep asking the rows; a later one retries
            logger.warning("restoring section flags failed", exc_info=True,
                           extra={"tenant_id": tenant_id})
        finally:
            self._restoring.pop(tenant_id, None)

    def _file_lock(self, tenant_id: str) -> contextlib.AbstractContextManager[None]:
        base = self._tenant_dir(tenant_id)
        base.mkdir(parents=True, exist_ok=True)
        return lock_file(base / ".lock")

    async def sync_all(self) -> int:
        """Sync every tenant whose saved partitions are behind the change log (startup
        recovery). Up-to-date tenants cost two small file reads, not a partition load."""
        total = 0
        for tenant_id in await self._catalog.tenants_with_changes():
            if tenant_id not in self._tenants and await self._saved_up_to_date(tenant_id):
                continue
            total += await self.sync(tenant_id)
        return total

    async def _saved_up_to_date(self, tenant_id: str) -> bool:
        base = self._tenant_dir(tenant_id)
        saved = min(
            await asyncio.to_thread(read_applied_seq, base / "lexical"),
            await asyncio.to_thread(read_applied_seq, base / "vectors"),
        )
        return saved >= await self._catalog.last_change(tenant_id)

    # -- verify and rebuild ----------------------------------------------------------------

    async def verify(self, tenant_id: str) -> Verification:
        # What this process published is in the partitions before they are compared.
        await self.settle()
        parts = await self.partitions(tenant_id)
        async with parts.lock:
            await asyncio.to_thread(_refresh, parts)
            since = await self._catalog.last_change(tenant_id)
            stored = await self._all_keys(tenant_id)
            last = await self._catalog.last_change(tenant_id)
            lexical, vectors = await asyncio.to_thread(
                lambda: (parts.lexical.keys(), parts.vectors.keys())
            )
        return await compare(  # which differences the log after each mark repairs
            self._catalog, tenant_id, stored=stored, since=since, last=last,
            lexical=(parts.lexical.applied_seq, lexical),
            vectors=(parts.vectors.applied_seq, vectors),
        )

    async def rebuild(self, tenant_id: str) -> int:
        """Refill both partitions from the chunk rows; returns the number of entries."""
        parts = await self.partitions(tenant_id)
        async with parts.lock:
            with await asyncio.to_thread(self._file_lock, tenant_id) as _:
                # Changes committed after this mark are replayed afterwards (idempotent).
                mark = await self._catalog.last_change(tenant_id)
                await asyncio.to_thread(_clear, parts)
                count = 0
                after = 0
                while keys := await self._catalog.chunk_keys(tenant_id, after=after, limit=BATCH):
                    entries = await self._catalog.index_entries(tenant_id, keys)
                    await asyncio.to_thread(_upsert_both, parts, entries)
                    count += len(entries)
                    after = keys[-1]
                await asyncio.to_thread(_commit_both, parts, mark)
                await self._replay(tenant_id, parts)
        self.notify()
        return count

    async def _all_keys(self, tenant_id: str) -> set[int]:
        keys: set[int] = set()
        after = 0
        while batch := await self._catalog.chunk_keys(tenant_id, after=after, limit=10_000):
            keys.update(batch)
            after = batch[-1]
        return keys

    async def flush(self) -> None:
        """Save lazily checkpointed partitions now (a periodic task and shutdown call it)."""
        for tenant_id, parts in list(self._tenants.items()):
            async with parts.lock:
                await asyncio.to_thread(self._flush_locked, tenant_id, parts)

    def _flush_locked(self, tenant_id: str, parts: Partitions) -> None:
        with self._file_lock(tenant_id):
            parts.lexical.flush()
            # Another process on the data dir may have saved as much or more since this one
            # last synced: adopt that save rather than write an older state over it (which
            # also leaves close() nothing older to save).
            saved = read_applied_seq(self._tenant_dir(tenant_id) / "vectors")
            if saved >= parts.vectors.applied_seq:
                parts.vectors.refresh()
            else:
                parts.vectors.flush()

    def memory_bytes(self) -> int:
        return sum(
            parts.lexical.memory_bytes() + parts.vectors.memory_bytes()
            for parts in list(self._tenants.values())
        )

    def close(self) -> None:
        """Save what is not checkpointed yet (under each tenant's file lock) and close."""
        with self._open_lock:
            for tenant_id, parts in self._tenants.items():
                try:
                    self._flush_locked(tenant_id, parts)
                except Exception:  # noqa: BLE001 - the change log replays whatever is lost
                    logger.exception("saving an index partition failed")
                for partition in (parts.lexical, parts.vectors):
                    try:
                        partition.close()
                    except Exception:  # noqa: BLE001 - closing must reach every partition
                        logger.exception("closing an index partition failed")
            self._tenants.clear()


# -- blocking helpers (run in threads) ---------------------------------------------------


def _net(changes: list[Change]) -> tuple[set[int], set[int]]:
    """The last operation per key wins: (keys to upsert, keys to delete)."""
    last: dict[int, str] = {}
    for change in changes:
        last[change.chunk_key] = change.op
    upserts = {key for key, op in last.items() if op == "upsert"}
    return upserts, set(last) - upserts


def _refresh(parts: Partitions) -> None:
    parts.lexical.refresh()
    parts.vectors.refresh()


def _apply(
    parts: Partitions, first: int, entries: list[IndexEntry], gone: set[int], last: int
) -> None:
    partition: Partition
    for partition in (parts.lexical, parts.vectors):
        if partition.applied_seq >= last:
            continue  # this partition already has the whole batch
        if gone:
            partition.delete(gone)
        if partition is parts.vectors:
            with_vectors = [entry for entry in entries if entry.vector is not None]
            if with_vectors:
                partition.upsert(with_vectors)
        elif entries:
            partition.upsert(entries)
        partition.commit(last)
    del first


def _clear(parts: Partitions) -> None:
    parts.lexical.clear()
    parts.vectors.clear()


def _upsert_both(parts: Partitions, entries: list[IndexEntry]) -> None:
    parts.lexical.upsert(entries)
    with_vectors = [entry for entry in entries if entry.vector is not None]
    if with_vectors:
        parts.vectors.upsert(with_vectors)


def _commit_both(parts: Partitions, mark: int) -> None:
    parts.lexical.commit(mark)
    parts.vectors.commit(mark)
