"""Change logs whose sequence order is their commit order.

``index_changes`` and ``auth_events`` are read as "everything after seq N", and a reader then
moves its watermark to the last seq it saw. That is sound only if no entry numbered below the
watermark can still commit: otherwise a transaction that took seq 1 and commits after the one
that took seq 2 is never seen (a chunk never indexed, a revocation that never arrives).

So every transaction that appends to a log first takes that log's append turn, held until it
commits or rolls back, and only then draws its sequence numbers. Appends to one log therefore
commit in the order of their numbers. On SQLite the database-wide write lock (every write
transaction starts with ``BEGIN IMMEDIATE``) already is that turn; on PostgreSQL it is a
transaction-scoped advisory lock per log (and key: a tenant's index changes are read per
tenant, so tenants do not wait for each other).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

#: The logs, by the name their turn is keyed on.
INDEX_CHANGES = "index_changes"
AUTH_EVENTS = "auth_events"


async def take_append_turn(session: AsyncSession, log: str, key: str = "") -> None:
    """Wait for this transaction's turn to append to ``log`` (per ``key``); call it before
    the first row is inserted. Held until the transaction ends."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        return  # the transaction already holds the only write lock (BEGIN IMMEDIATE)
    if dialect == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock_id(log, key)}
        )
        return
    raise NotImplementedError(f"no ordered appends on {dialect}")


def lock_id(log: str, key: str = "") -> int:
    """A stable signed 64-bit advisory lock id for ``(log, key)``."""
    digest = hashlib.blake2b(f"{log}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
