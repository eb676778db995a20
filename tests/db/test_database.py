"""The SQLite engine: pragmas, migrations, write concurrency, rollback, and ``ragd db upgrade``."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from ragd.cli import app as cli_app
from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.tables import TenantRow
from ragd.errors import Conflict
from ragd.settings import Settings
from ragd.stores.identity import SqlIdentityStore
from tests.conftest import make_settings


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.resolve()}"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated database of its own, outside any app."""
    database = Database(_url(tmp_path / "db" / "ragd.db"))
    assert await migrate.upgrade(database) is True
    try:
        yield database
    finally:
        await database.dispose()


async def _pragma(session: Any, name: str) -> Any:
    return (await session.execute(text(f"PRAGMA {name}"))).scalar_one()


async def _count_tenants(database: Database) -> int:
    async with database.read() as s:
        return int(await s.scalar(select(func.count()).select_from(TenantRow)) or 0)


# -- pragmas ----------------------------------------------------------------------------------


async def test_app_database_file_is_in_wal_mode(app: FastAPI, settings: Settings) -> None:
    db_path = settings.data_dir / "ragd.db"
    assert db_path.is_file()

    def journal_mode() -> str:
        conn = sqlite3.connect(db_path)
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            conn.close()

    # WAL is persistent: a fresh connection without ragd's hooks sees it too.
    assert await asyncio.to_thread(journal_mode) == "wal"


async def test_connection_pragmas(tmp_path: Path) -> None:
    database = Database(_url(tmp_path / "pragmas.db"), busy_timeout_ms=1234)
    try:
        async with database.read() as s:
            assert await _pragma(s, "foreign_keys") == 1
            assert await _pragma(s, "synchronous") == 2  # FULL
            assert await _pragma(s, "busy_timeout") == 1234
            assert await _pragma(s, "journal_mode") == "wal"
        # Write connections get the same settings.
        async with database.transaction() as s:
            assert await _pragma(s, "foreign_keys") == 1
            assert await _pragma(s, "synchronous") == 2
            assert await _pragma(s, "busy_timeout") == 1234
    finally:
        await database.dispose()


async def test_every_pooled_connection_has_the_pragmas(tmp_path: Path) -> None:
    """Pragmas are per connection: check several connections held at once, not just one."""
    database = Database(_url(tmp_path / "pool.db"), busy_timeout_ms=4321)
    try:
        async with database.engine.connect() as c1, database.engine.connect() as c2, \
                database.engine.connect() as c3:
            for conn in (c1, c2, c3):
                assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
                assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == 2
                assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 4321
    finally:
        await database.dispose()


async def test_app_uses_the_configured_busy_timeout(tmp_path: Path) -> None:
    from ragd.app import create_app

    settings = make_settings(tmp_path / "data", database={"busy_timeout_ms": 777})
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        database: Database = application.state.services.db
        async with database.read() as s:
            assert await _pragma(s, "busy_timeout") == 777
            assert await _pragma(s, "foreign_keys") == 1
            assert await _pragma(s, "synchronous") == 2


async def test_foreign_keys_are_enforced(db: Database) -> None:
    store = SqlIdentityStore(db)
    with pytest.raises(Conflict):  # the IntegrityError (FK violation) surfaces as a Conflict
        await store.create_user("no-such-tenant", "orphan@acme.io", "hash")
    async with db.read() as s:
        assert (await s.execute(text("SELECT count(*) FROM users"))).scalar_one() == 0


# -- migrations -------------------------------------------------------------------------------


def test_head_revision_matches_scripts() -> None:
    assert migrate.HEAD_REVISION == migrate.script_head()


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    database = Database(_url(tmp_path / "fresh.db"))
    try:
        assert await migrate.current_revision(database) is None
        assert await migrate.upgrade(database) is True
        assert await migrate.current_revision(database) == migrate.HEAD_REVISION
        assert await migrate.upgrade(database) is False
        assert await migrate.current_revision(database) == migrate.HEAD_REVISION
        async with database.read() as s:
            tables: set[str] = set(
                (await s.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")))
                .scalars()
            )
            assert {"alembic_version", "tenants", "users"} <= tables
            assert await _pragma(s, "integrity_check") == "ok"
    finally:
        await database.dispose()


async def test_upgrade_keeps_data(db: Database) -> None:
    store = SqlIdentityStore(db)
    tenant = await store.create_tenant("keep-me")
    assert await migrate.upgrade(db) is False
    found = await store.get_tenant_by_name("keep-me")
    assert found is not None and found.id == tenant.id


async def test_app_start_migrates_then_restart_does_not(settings: Settings) -> None:
    from ragd.app import create_app

    first = create_app(settings)
    async with first.router.lifespan_context(first):
        assert first.state.services.migrations_applied is True
    second = create_app(settings)
    async with second.router.lifespan_context(second):
        assert second.state.services.migrations_applied is False


# -- concurrency and transactions ---------------------------------------------------------------


async def test_concurrent_writes_all_succeed(db: Database) -> None:
    store = SqlIdentityStore(db)
    names = [f"burst-{i:02d}" for i in range(50)]

    results = await asyncio.gather(*(store.create_tenant(name) for name in names),
                                   return_exceptions=True)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], [repr(e) for e in errors]
    assert sorted(t.name for t in results if not isinstance(t, BaseException)) == names
    assert len({t.id for t in results if not isinstance(t, BaseException)}) == 50
    assert await _count_tenants(db) == 50
    async with db.read() as s:
        assert await _pragma(s, "integrity_check") == "ok"


async def test_concurrent_read_then_write_transactions(db: Database) -> None:
    """Read-then-write in one transaction is the pattern that fails with "database is
    locked" under deferred BEGIN; ``transaction()`` takes the write lock up front."""
    store = SqlIdentityStore(db)

    async def read_then_write(i: int) -> None:
        async with db.transaction() as s:
            before = await s.scalar(select(func.count()).select_from(TenantRow))
            await asyncio.sleep(0)  # let the others interleave between read and write
            s.add(TenantRow(name=f"rw-{i}", name_key=f"rw-{i}", status="active"))
            await s.flush()
            after = await s.scalar(select(func.count()).select_from(TenantRow))
            assert after == (before or 0) + 1  # serialised: nobody wrote in between

    async def reader() -> int:
        return len(await store.list_tenants(limit=200, offset=0))

    jobs: list[Any] = []
    for i in range(50):
        jobs.append(read_then_write(i))
        if i % 5 == 0:
            jobs.append(reader())
    results = await asyncio.gather(*jobs, return_exceptions=True)

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [], [repr(e) for e in errors]
    assert await _count_tenants(db) == 50
    async with db.read() as s:
        assert await _pragma(s, "integrity_check") == "ok"


async def test_failed_write_transaction_rolls_back(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with db.transaction() as s:
            s.add(TenantRow(name="ghost", name_key="ghost", status="active"))
            await s.flush()
            # Visible inside the transaction...
            assert await s.scalar(select(func.count()).select_from(TenantRow)) == 1
            raise Boom

    # ...and gone after it.
    assert await _count_tenants(db) == 0
    assert await SqlIdentityStore(db).get_tenant_by_name("ghost") is None
    # The connection went back to the pool usable: the next transaction commits normally.
    await SqlIdentityStore(db).create_tenant("after-ghost")
    assert await _count_tenants(db) == 1


async def test_conflicting_write_leaves_no_partial_rows(db: Database) -> None:
    store = SqlIdentityStore(db)
    await store.create_tenant("taken")
    with pytest.raises(Conflict):
        await store.create_tenant("TAKEN")  # name_key is case-insensitive unique
    with pytest.raises(Conflict):
        await store.create_tenant_with_admin("taken", "someone@acme.io", "hash")
    assert await _count_tenants(db) == 1
    assert await store.get_user_by_email("someone@acme.io") is None


async def test_read_session_does_not_persist_writes(db: Database) -> None:
    async with db.read() as s:
        s.add(TenantRow(name="read-only", name_key="read-only", status="active"))
        await s.flush()
    assert await _count_tenants(db) == 0


# -- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI configures logging for the process; put it back for the other tests."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic")
    saved = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level,
               logging.getLogger(name).propagate, logging.getLogger(name).disabled)
        for name in names
    }
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


def test_cli_db_upgrade(tmp_path: Path, restore_logging: None) -> None:
    data_dir = tmp_path / "cli-data"
    runner = CliRunner()

    first = runner.invoke(cli_app, ["db", "upgrade", "--data-dir", str(data_dir)])
    assert first.exit_code == 0, first.output
    assert "migrated" in first.output
    assert "already up to date" not in first.output
    assert (data_dir / "ragd.db").is_file()

    second = runner.invoke(cli_app, ["db", "upgrade", "--data-dir", str(data_dir)])
    assert second.exit_code == 0, second.output
    assert "already up to date" in second.output

    conn = sqlite3.connect(data_dir / "ragd.db")
    try:
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    assert revision == migrate.HEAD_REVISION
    assert mode == "wal"
    assert check == "ok"
