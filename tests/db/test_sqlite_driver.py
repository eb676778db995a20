"""The one-hop SQLite cursor (``ragd.db.sqlite_driver``): in use, one call on the connection's
thread per statement, and the DBAPI results SQLAlchemy relies on (rows, rowcount, lastrowid,
executemany, RETURNING over many rows, errors mapped to SQLAlchemy's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError, OperationalError

from ragd.db.engine import Database
from ragd.db.sqlite_driver import OneHopCursor, one_hop_dbapi


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{(tmp_path / 'one-hop.db').resolve()}")
    async with database.transaction() as s:
        await s.execute(text(
            "CREATE TABLE items (key INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, n INT)"
        ))
    try:
        yield database
    finally:
        await database.dispose()


def test_this_aiosqlite_supports_the_one_hop_cursor() -> None:
    # Fails loudly (instead of silently falling back to four hops a statement) when an
    # aiosqlite release drops what the cursor reaches into.
    assert one_hop_dbapi() is not None


async def test_the_engine_uses_the_one_hop_cursor(db: Database) -> None:
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection.cursor(), OneHopCursor)


async def test_a_statement_is_one_call_on_the_connections_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(
        self: aiosqlite.Connection, fn: object, *args: object, **kw: object
    ) -> object:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kw)

    async with db.read() as s:
        await s.execute(text("SELECT 1"))  # the connection and its BEGIN, before counting
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        rows = (await s.execute(text("SELECT name FROM items"))).all()
        during = list(calls)
    assert rows == []
    assert during == ["_run"]


async def test_rows_rowcount_lastrowid_and_executemany(db: Database) -> None:
    async with db.transaction() as s:
        result = await s.execute(
            text("INSERT INTO items (name, n) VALUES (:name, :n)"),
            [{"name": f"item-{i}", "n": i} for i in range(5)],
        )
        assert result.rowcount == 5
        single = await s.execute(text("INSERT INTO items (name, n) VALUES ('last', 9)"))
        assert single.lastrowid == 6
        updated = await s.execute(text("UPDATE items SET n = n + 1 WHERE n >= 3"))
        assert updated.rowcount == 3
    async with db.read() as s:
        rows = (await s.execute(text("SELECT name, n FROM items ORDER BY key"))).all()
    assert [tuple(row) for row in rows] == [
        ("item-0", 0), ("item-1", 1), ("item-2", 2), ("item-3", 4), ("item-4", 5), ("last", 10),
    ]


async def test_returning_over_many_rows_keeps_the_parameters_order(db: Database) -> None:
    from sqlalchemy import Column, Integer, MetaData, String, Table

    items = Table("items", MetaData(), Column("key", Integer, primary_key=True),
                  Column("name", String), Column("n", Integer))
    names = [f"r-{i}" for i in range(40)]
    async with db.transaction() as s:
        keys = list(await s.scalars(
            insert(items).returning(items.c.key, sort_by_parameter_order=True),
            [{"name": name, "n": 0} for name in names],
        ))
    async with db.read() as s:
        stored = dict((await s.execute(text("SELECT key, name FROM items"))).all())
    assert [stored[key] for key in keys] == names


async def test_errors_are_sqlalchemys_and_roll_back(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await s.execute(text("INSERT INTO items (name, n) VALUES ('twice', 1)"))
            await s.execute(text("INSERT INTO items (name, n) VALUES ('twice', 2)"))
    with pytest.raises(OperationalError):
        async with db.read() as s:
            await s.execute(text("SELECT * FROM no_such_table"))
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM items"))).scalar_one() == 0
