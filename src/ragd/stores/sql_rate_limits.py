"""GCRA buckets in the ``rate_limits`` table (SQLite and PostgreSQL).

Each hit is one ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE ... RETURNING tat``: a
new key is inserted admitted; an existing one is moved only when the GCRA rule
(:func:`ragd.stores.rate_limits.admit`, written here in SQL) admits the hit, and a refused
hit returns no row and leaves the bucket as it was. The statement is atomic on both engines
(SQLite >= 3.35 for ``RETURNING``: one writer at a time; PostgreSQL: the conflicting row is
locked and the condition re-read under the lock), so concurrent hits from any number of
processes are counted one after the other. The buckets of one attempt (per address, then
per account) share one transaction, always in the same order: on SQLite that is one write
(one commit) per login attempt, and on PostgreSQL two logins never wait for each other's
rows in opposite orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, case, cast, delete, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.engine import Database
from ragd.db.tables import RateLimitRow
from ragd.stores.rate_limits import EPSILON, MAX_KEY_CHARS, Hit, Verdict, retry_after

__all__ = ["SqlRateLimits"]

#: The Julian day of the Unix epoch (SQLite's clock is ``julianday('now')``).
_UNIX_EPOCH_JULIAN_DAY = 2440587.5


class SqlRateLimits:
    """Implements :class:`ragd.stores.rate_limits.RateLimits` on any SQLAlchemy async engine
    of the two supported backends."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def hit(self, hits: Sequence[Hit], *, now: float | None = None) -> Verdict:
        for hit in hits:
            _check_key(hit.key)
        async with self._db.transaction() as s:
            clock = now if now is not None else await _database_now(s)
            tats: list[float] = []
            for hit in hits:
                tat = await s.scalar(_upsert(s, hit, clock))
                if tat is None:
                    current = await s.scalar(
                        select(RateLimitRow.tat).where(RateLimitRow.key == hit.key)
                    )
                    wait = retry_after(clock if current is None else current, clock, hit.rate)
                    return Verdict(clock, tuple(tats), wait)
                tats.append(float(tat))
            return Verdict(clock, tuple(tats), None)

    async def reset(self, key: str) -> None:
        _check_key(key)
        async with self._db.transaction() as s:
            await s.execute(delete(RateLimitRow).where(RateLimitRow.key == key))

    async def prune(self, *, now: float | None = None) -> int:
        async with self._db.transaction() as s:
            clock = now if now is not None else await _database_now(s)
            result = await s.execute(delete(RateLimitRow).where(RateLimitRow.tat <= clock))
            return int(result.rowcount)  # type: ignore[attr-defined]


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS:
        raise ValueError(f"a rate-limit key has 1 to {MAX_KEY_CHARS} characters")


def _upsert(s: AsyncSession, hit: Hit, now: float) -> Any:
    """The one statement that counts ``hit`` at ``now``: returns the new ``tat``, or no row
    when the bucket refuses it."""
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    at = literal(now, Float)
    interval = literal(hit.rate.interval, Float)
    # admit(): max(tat, now) + interval, admitted while at most ``window`` ahead of now.
    pushed = case((RateLimitRow.tat > at, RateLimitRow.tat), else_=at) + interval
    statement = insert(RateLimitRow).values(key=hit.key, tat=now + hit.rate.interval)
    return statement.on_conflict_do_update(
        index_elements=[RateLimitRow.key],
        set_={"tat": pushed},
        where=pushed - at <= literal(hit.rate.window + EPSILON, Float),
    ).returning(RateLimitRow.tat)


async def _database_now(s: AsyncSession) -> float:
    """The database server's clock, in seconds since the epoch."""
    if s.get_bind().dialect.name == "postgresql":
        expression: Any = cast(func.extract("epoch", func.clock_timestamp()), Float)
    else:
        expression = (func.julianday("now") - _UNIX_EPOCH_JULIAN_DAY) * 86400.0
    value = await s.scalar(select(expression))
    if value is None:
        raise RuntimeError("the database returned no time")
    return float(value)
