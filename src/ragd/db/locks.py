"""PostgreSQL advisory locks: work that must happen once among processes on several hosts.

The embedded deployment coordinates the processes on one data dir with ``flock`` on lock
files (``ops/files.py``). Processes that share a PostgreSQL database share no directory, so
the database holds the lock instead: a session-level advisory lock, taken on a connection
this module keeps for as long as the lock is held.

* :func:`advisory_lock` waits for its turn and holds the lock for a block (migrations, the
  first admin): processes starting together take turns.
* :class:`AdvisoryLeadership` elects one holder without waiting (housekeeping). The server
  drops a session's locks when its connection ends, so a leader whose process dies, or whose
  connection drops, loses the lead, and the next process to ask takes it over; the old
  leader learns it on its next :meth:`~AdvisoryLeadership.acquire`.

Waiting is polling with ``pg_try_advisory_lock`` rather than a blocking
``pg_advisory_lock``: the engine's ``lock_timeout`` (the write budget) would end a long wait
behind a slow migration with an error, and a cancelled wait leaves no query running on the
server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from ragd.db.engine import Database
from ragd.db.sequence import lock_id

__all__ = [
    "HOUSEKEEPING",
    "LOCK_RETRY_SECONDS",
    "MIGRATIONS",
    "STARTUP",
    "AdvisoryLeadership",
    "Leader",
    "advisory_lock",
]

logger = logging.getLogger(__name__)

#: Lock names (hashed to a 64-bit key per name, as the change logs' append turns are).
MIGRATIONS = "ragd:migrations"
STARTUP = "ragd:startup"
HOUSEKEEPING = "ragd:housekeeping"
#: How often a waiter asks again.
LOCK_RETRY_SECONDS = 0.1


class Leader(Protocol):
    """One holder among the processes of a deployment; :meth:`acquire` never waits."""

    @property
    def held(self) -> bool: ...

    async def acquire(self) -> bool:
        """True when this process holds the lead (now, or still); False when another does."""
        ...

    async def release(self) -> None: ...


@asynccontextmanager
async def advisory_lock(db: Database, name: str) -> AsyncIterator[None]:
    """Hold the advisory lock ``name`` for the block, waiting (on the event loop) while
    another session holds it."""
    key = lock_id(name)
    conn = await _session(db)
    try:
        while not await _try_lock(conn, key):  # noqa: ASYNC110 - held by another process
            await asyncio.sleep(LOCK_RETRY_SECONDS)
        yield
    finally:
        await _let_go(conn, key)


class AdvisoryLeadership:
    """:class:`Leader` through the advisory lock ``name`` of ``db``'s database."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._key = lock_id(name)
        self._conn: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def acquire(self) -> bool:
        if self._conn is not None:
            if await _alive(self._conn):
                return True
            logger.warning("lost the lead: its database connection ended")
            await _discard(self._conn)
            self._conn = None
        conn = await _session(self._db)
        try:
            won = await _try_lock(conn, self._key)
        except BaseException:
            await _discard(conn)
            raise
        if not won:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await _let_go(conn, self._key)


async def _session(db: Database) -> AsyncConnection:
    """A connection of its own, each statement committed at once: a session-level lock
    outlives transactions, and an idle open transaction would be ended by the server's
    ``idle_in_transaction_session_timeout`` (and the lock with it)."""
    conn = await db.engine.connect()
    try:
        return await conn.execution_options(isolation_level="AUTOCOMMIT")
    except BaseException:
        await _discard(conn)
        raise


async def _try_lock(conn: AsyncConnection, key: int) -> bool:
    return bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))


async def _alive(conn: AsyncConnection) -> bool:
    try:
        await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        return False
    return True


async def _let_go(conn: AsyncConnection, key: int) -> None:
    """Unlock and return the connection; a connection that fails is closed for good (the
    server then drops its locks)."""
    try:
        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    except (SQLAlchemyError, OSError):
        await _discard(conn)
        return
    except BaseException:
        await _discard(conn)
        raise
    await conn.close()


async def _discard(conn: AsyncConnection) -> None:
    """Close the connection without returning it to the pool."""
    try:
        await conn.invalidate()
    except (SQLAlchemyError, OSError):
        logger.debug("closing a lock connection failed", exc_info=True)
    try:
        await conn.close()
    except (SQLAlchemyError, OSError):
        logger.debug("closing a lock connection failed", exc_info=True)
