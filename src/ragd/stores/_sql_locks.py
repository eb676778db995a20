"""The row locks that the SQL catalog's writes take, and the one order they take them in.

On SQLite every write transaction holds the whole database (``BEGIN IMMEDIATE``): a
transaction that reads a row and then writes on what it read cannot be raced, and these
locks compile to nothing. On PostgreSQL (READ COMMITTED, many writers) a plain read may be
stale by the time the write commits: the job's lease taken over, the document replaced or
deleted, the collection being deleted, an embedder recorded by another first ingestion. So a
write first locks the rows its decision depends on, and reads them *through* the lock: a
locked read waits for a concurrent writer of the row, then returns the row as that writer
committed it, re-checked against the query's conditions (a collection that became "deleting"
meanwhile is simply not found).

The order. Every transaction takes the locks it needs in this order and never backwards, so
no two transactions wait for each other in a cycle (a deadlock, which PostgreSQL breaks by
failing one of them as :class:`~ragd.errors.Busy`):

1. the **collection**: ``FOR KEY SHARE`` to write inside it (commit a version, upload,
   replace or delete a document: any number at once, and compatible with recording the
   embedder), ``FOR UPDATE`` to rename or delete it (alone, after the writes inside it);
2. the **job**: ``FOR UPDATE``. The queue takes a job first too (it claims it, then its
   finaliser ends the job's document);
3. the **document**: ``FOR UPDATE``;
4. then the rows the transaction writes (chunks, versions' bytes) and the change log's
   append turn (:mod:`ragd.db.sequence`).

Private to :mod:`ragd.stores.sql_catalog` and its parts.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.tables import CollectionRow, DocumentRow, JobRow
from ragd.stores._sql_rows import document_row

__all__ = ["locked_collection", "locked_document", "locked_document_and_job", "locked_job"]


async def locked_collection(
    s: AsyncSession, tenant_id: str, collection_id: str, *, exclusive: bool
) -> CollectionRow | None:
    """The tenant's active collection, locked: shared by writers inside it, ``exclusive``
    for renaming or deleting it (which then waits for those writers, and they for it)."""
    query = select(CollectionRow).where(
        CollectionRow.id == collection_id,
        CollectionRow.tenant_id == tenant_id,
        CollectionRow.status == "active",
    )
    if exclusive:
        query = query.with_for_update()
    else:
        query = query.with_for_update(read=True, key_share=True)
    return (await s.scalars(query.execution_options(populate_existing=True))).first()


async def locked_job(s: AsyncSession, job_id: str) -> JobRow | None:
    """The job, locked: its lease cannot be taken over (a claimer skips a locked job) and
    it cannot end until this transaction does."""
    query = select(JobRow).where(JobRow.id == job_id).with_for_update()
    return (await s.scalars(query.execution_options(populate_existing=True))).first()


async def locked_document(s: AsyncSession, tenant_id: str, document_id: str) -> DocumentRow | None:
    """The tenant's document in an active collection, locked (the collection is not)."""
    query = (
        select(DocumentRow)
        .join(CollectionRow, CollectionRow.id == DocumentRow.collection_id)
        .where(
            DocumentRow.id == document_id,
            DocumentRow.tenant_id == tenant_id,
            CollectionRow.status == "active",
        )
        .with_for_update(of=DocumentRow)
    )
    return (await s.scalars(query.execution_options(populate_existing=True))).first()


async def locked_document_and_job(
    s: AsyncSession, tenant_id: str, document_id: str
) -> DocumentRow | None:
    """The document locked for a change that also ends its current job (a replacement, a
    deletion): its collection (shared), its current job, then the document itself.

    The job must be locked before the document (the order above), but which job is current
    is known only from the document. So the document is read first without a lock; if its
    job changed by the time the document is locked (another replacement committed in
    between), the document's lock is let go again (a savepoint rolled back) and the new job
    is locked first. Only a race does that; on SQLite it never happens.
    """
    seen = await document_row(s, tenant_id, document_id)
    if seen is None:
        return None
    if await locked_collection(s, tenant_id, seen.collection_id, exclusive=False) is None:
        return None
    jobs: set[str] = set()
    job_id = seen.job_id
    while True:
        if job_id is not None and job_id not in jobs:
            await locked_job(s, job_id)
            jobs.add(job_id)
        savepoint = await s.begin_nested()
        row = await locked_document(s, tenant_id, document_id)
        if row is None or row.job_id is None or row.job_id in jobs:
            await savepoint.commit()
            return row
        job_id = row.job_id
        await savepoint.rollback()
