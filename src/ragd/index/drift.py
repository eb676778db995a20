"""How far a tenant's partitions are from its chunk rows, and whether the log accounts for it.

A partition of the embedded backend records a mark, ``applied_seq``: the last change of the
log (``index_changes``) whose effect its saved files hold. The vector partition is saved at
most every 30 s (saving rewrites every vector), so while documents are being ingested its
saved file is normally behind by the chunks committed since; the change log holds them, and
the next sync (or the next start, after a crash) replays them. ``ragd index verify`` must
tell that from damage the log cannot repair.

A difference between a partition and the chunk rows is **pending** when replaying the log
after the partition's mark repairs it:

* a missing entry whose chunk's last change after the mark is an ``upsert``;
* an orphan whose chunk's last change after the mark is a ``delete``;
* either, for a chunk changed after ``since`` (the end of the log read *before* the chunk
  rows were): it changed while verify was reading, and replay applies its last change
  whatever the rows showed.

Every other difference is **broken** (an entry lost or added behind the log's back, files
restored from elsewhere): only a rebuild from the chunk rows repairs it.
"""

from __future__ import annotations

from ragd.index.base import Verification
from ragd.stores.catalog import ChangeLog

__all__ = ["compare", "replayable"]

#: Changes read per query while scanning the log after a mark.
SCAN_BATCH = 10_000


async def replayable(
    log: ChangeLog, tenant_id: str, *, mark: int, missing: set[int], orphans: set[int],
    since: int,
) -> int:
    """How many of ``missing`` and ``orphans`` replaying the log after ``mark`` repairs.

    Reads only the log after ``mark`` (in batches) and keeps one entry per differing key,
    so memory is bounded by the differences, not by the log."""
    differing = missing | orphans
    if not differing:
        return 0
    last_op: dict[int, str] = {}
    changed_late: set[int] = set()
    after = mark
    while changes := await log.changes_after(tenant_id, after, limit=SCAN_BATCH):
        for change in changes:
            if change.chunk_key in differing:
                last_op[change.chunk_key] = change.op
                if change.seq > since:
                    changed_late.add(change.chunk_key)
        after = changes[-1].seq
        if len(changes) < SCAN_BATCH:
            break
    pending = sum(1 for key in missing if last_op.get(key) == "upsert" or key in changed_late)
    pending += sum(1 for key in orphans if last_op.get(key) == "delete" or key in changed_late)
    return pending


async def compare(
    log: ChangeLog, tenant_id: str, *, stored: set[int], since: int, last: int,
    lexical: tuple[int, set[int]], vectors: tuple[int, set[int]],
) -> Verification:
    """The :class:`Verification` of a tenant: ``stored`` are its chunk keys, read after
    ``since`` and before ``last`` (the log's end both times); ``lexical`` and ``vectors`` are
    each partition's mark and keys."""
    (lexical_mark, lexical_keys), (vector_mark, vector_keys) = lexical, vectors
    counts: list[tuple[int, int, int]] = []
    for mark, keys in ((lexical_mark, lexical_keys), (vector_mark, vector_keys)):
        missing, orphans = stored - keys, keys - stored
        pending = await replayable(
            log, tenant_id, mark=mark, missing=missing, orphans=orphans, since=since
        )
        counts.append((len(missing), len(orphans), pending))
    return Verification(
        tenant_id=tenant_id, chunks=len(stored), last_change=last,
        lexical_applied=lexical_mark, vector_applied=vector_mark,
        lexical_missing=counts[0][0], lexical_orphans=counts[0][1], lexical_pending=counts[0][2],
        vector_missing=counts[1][0], vector_orphans=counts[1][1], vector_pending=counts[1][2],
    )
