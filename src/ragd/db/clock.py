"""The database's clock: one time source for every host that shares a database.

Leases, retry backoff and "is this job due" compare times written by one process with times
read by another. On SQLite every process runs on the one host that holds the file, so the
host's clock is that source. On PostgreSQL the processes run on several hosts whose clocks
drift apart (a host a minute ahead would take over every lease a minute early, one behind
would hold dead workers' jobs a minute too long), so time is read from the server, inside
the transaction that uses it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.tables import utcnow

__all__ = ["database_now"]


async def database_now(session: AsyncSession) -> datetime:
    """The current time (aware, UTC) by the clock of the database ``session`` talks to.

    PostgreSQL's ``clock_timestamp()`` (the wall clock when the statement runs, not the
    transaction's start: a transaction that waited for a lock still leases from now); on
    SQLite the host's clock, with no query.
    """
    if session.get_bind().dialect.name != "postgresql":
        return utcnow()
    value = await session.scalar(text("SELECT clock_timestamp()"))
    if not isinstance(value, datetime):
        raise TypeError("clock_timestamp() did not return a timestamp")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
