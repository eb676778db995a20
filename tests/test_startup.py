"""Start-up work that must happen once per deployment, with many processes starting together
on one database (several hosts on PostgreSQL, one data dir on SQLite): migrations run once,
the first admin is created once, a schema behind this build holds a replica back (not ready,
503 schema_pending) until ``ragd db upgrade`` brings it to head, and a schema ahead of it is
refused at start."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from ragd.app import create_app
from ragd.cli.main import _bootstrap_admin
from ragd.container import Services, open_services
from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.tables import UserRow
from ragd.errors import ConfigurationError
from ragd.settings import Settings
from tests.conftest import TEST_SECRET, assert_error, make_settings, running
from tests.loop_clock import LoopClock
from tests.postgres import PostgresServer
from tests.waiting import HANG_TIMEOUT, eventually

ROOT = Path(__file__).resolve().parents[1]
_names = itertools.count()


async def _empty_url(backend: str, postgres: PostgresServer, tmp_path: Path) -> str:
    """A database with no schema at all."""
    if backend == "postgresql":
        return await postgres.create_database(f"empty_{os.getpid()}_{next(_names)}")
    path = tmp_path / f"empty{next(_names)}.db"
    return f"sqlite+aiosqlite:///{path}"


def _hosts(
    tmp_path: Path, url: str, count: int, *, migrate_on_start: bool = True, **overrides: Any
) -> list[Settings]:
    """``count`` processes on one database. On SQLite they share the data dir (one host);
    on PostgreSQL each has its own (as on separate hosts)."""
    database = {"url": url, "migrate_on_start": migrate_on_start}
    if url.startswith("sqlite"):
        data_dir = Path(url.removeprefix("sqlite+aiosqlite:///")).parent / "data"
        return [make_settings(data_dir, database=database, **overrides)] * count
    return [make_settings(tmp_path / f"host{n}", database=database, **overrides)
            for n in range(count)]


async def _revision_and_users(url: str) -> tuple[str | None, int]:
    db = Database(url)
    try:
        revision = await migrate.current_revision(db)
        async with db.read() as s:
            users = int(await s.scalar(select(func.count()).select_from(UserRow)) or 0)
        return revision, users
    finally:
        await db.dispose()


BACKENDS = ["sqlite", "postgresql"]


# -- once-only work ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_processes_starting_together_migrate_once(
    backend: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await _empty_url(backend, postgres, tmp_path)
    hosts = _hosts(tmp_path, url, 6)

    async with AsyncExitStack() as stack:
        async with asyncio.timeout(HANG_TIMEOUT):
            started: list[Services] = await asyncio.gather(
                *(stack.enter_async_context(open_services(settings)) for settings in hosts)
            )
        assert sorted(s.migrations_applied for s in started) == [False] * 5 + [True]
        assert all(s.schema.ready for s in started)
    assert await _revision_and_users(url) == (migrate.HEAD_REVISION, 0)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_processes_starting_together_create_one_first_admin(
    backend: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await _empty_url(backend, postgres, tmp_path)
    hosts = _hosts(tmp_path, url, 4, bootstrap_admin=True)
    async with AsyncExitStack() as stack:
        started: list[Services] = await asyncio.gather(
            *(stack.enter_async_context(open_services(settings)) for settings in hosts)
        )
        async with asyncio.timeout(HANG_TIMEOUT):
            created = await asyncio.gather(*(_bootstrap_admin(s) for s in started))
    assert len([admin for admin in created if admin is not None]) == 1
    assert await _revision_and_users(url) == (migrate.HEAD_REVISION, 1)


def _ragd(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
        [sys.executable, "-m", "ragd", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _env(tmp_path: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(RAGD_DATABASE__URL=url, RAGD_JWT_SECRET=TEST_SECRET,
               RAGD_DATA_DIR=str(tmp_path / f"host{next(_names)}"), **extra)
    return env


@pytest.mark.slow
async def test_concurrent_db_upgrade_commands_migrate_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await _empty_url("postgresql", postgres, tmp_path)
    # The replicas' setting does not stop the command that exists to migrate.
    procs = [_ragd("db", "upgrade", env=_env(tmp_path, url,
                                               RAGD_DATABASE__MIGRATE_ON_START="false"))
             for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(asyncio.to_thread(p.communicate, timeout=HANG_TIMEOUT) for p in procs)
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, out + err
    outputs = sorted("already up to date" in out for out, _ in results)
    assert outputs == [False, True, True, True], results
    assert await _revision_and_users(url) == (migrate.HEAD_REVISION, 0)


@pytest.mark.slow
async def test_cli_commands_refuse_a_schema_behind_them_without_migrating(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await _empty_url("postgresql", postgres, tmp_path)
    proc = _ragd("admin", "create-tenant", "acme",
                 env=_env(tmp_path, url, RAGD_DATABASE__MIGRATE_ON_START="false"))
    out, err = await asyncio.to_thread(proc.communicate, timeout=HANG_TIMEOUT)
    assert proc.returncode == 2, out + err
    assert "ragd db upgrade" in err and "Traceback" not in err
    assert await migrate.current_revision(Database(url)) is None


# -- a replica waiting for `ragd db upgrade` --------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def waiting_replica(
    request: pytest.FixtureRequest, postgres: PostgresServer, tmp_path: Path
) -> AsyncIterator[tuple[str, Any, httpx.AsyncClient]]:
    """A server started with migrate_on_start off on a database with no schema yet."""
    url = await _empty_url(request.param, postgres, tmp_path)
    settings = _hosts(tmp_path, url, 1, migrate_on_start=False)[0]
    app = create_app(settings)
    async with running(app) as client:
        yield url, app, client


async def test_a_replica_is_not_ready_until_the_schema_is_at_head_then_is_without_restart(
    waiting_replica: tuple[str, Any, httpx.AsyncClient],
) -> None:
    url, app, client = waiting_replica
    services: Services = app.state.services
    assert services.schema.ready is False
    assert services.workers is None  # no worker claims from tables that are not there

    ready = await client.get("/health/ready")
    assert_error(ready, 503, "not_ready")
    details = ready.json()["error"]["details"]
    assert {"check": "migrations", "status": "pending"} in details
    assert {"check": "startup", "status": "pending"} in details
    assert (await client.get("/health/live")).status_code == 200
    for request in (
        client.post("/api/v1/auth/login", json={"email": "a@b.io", "password": "x" * 12}),
        client.get("/api/v1/collections"),
        client.get("/v1/models"),
        client.get("/performance/health"),
    ):
        response = await request
        assert_error(response, 503, "schema_pending")
        assert response.headers["retry-after"] == "5"

    db = Database(url)  # the one-shot `ragd db upgrade`, elsewhere
    try:
        assert await migrate.upgrade(db) is True
    finally:
        await db.dispose()

    async def is_ready() -> bool:
        return (await client.get("/health/ready")).status_code == 200

    await eventually(is_ready, what="the replica turns ready once the schema is at head")
    assert services.schema.ready and services.workers is not None
    registered = await client.post("/api/v1/auth/register", json={
        "email": "first@acme.io", "password": "violet-harbour-trumpet-42",
        "tenant_name": "acme",
    })
    assert registered.status_code == 201, registered.text


async def test_a_waiting_process_checks_the_schema_again_periodically(
    postgres: PostgresServer, tmp_path: Path, loop_clock: LoopClock
) -> None:
    url = await _empty_url("postgresql", postgres, tmp_path)
    settings = make_settings(tmp_path / "data", database={"url": url, "migrate_on_start": False})
    async with open_services(settings) as services:
        loaded: list[bool] = []
        await services.schema.then(lambda: _record(loaded))
        waiting = asyncio.create_task(services.schema.wait())
        try:
            # The first check found no schema; the gate then waits on its timer.
            await eventually(lambda: services.schema.checks == 1, what="the first check")
            assert not services.schema.ready and loaded == []
            db = Database(url)
            try:
                await migrate.upgrade(db)
            finally:
                await db.dispose()
            loop_clock.advance(migrate.SCHEMA_CHECK_SECONDS)  # no probe pokes: the timer
            async with asyncio.timeout(HANG_TIMEOUT):
                await waiting
            assert services.schema.ready and loaded == [True]
            await services.schema.then(lambda: _record(loaded))  # ready: runs at once
            assert loaded == [True, True]
        finally:
            waiting.cancel()


async def _record(into: list[bool]) -> None:
    into.append(True)


# -- a schema ahead of this build --------------------------------------------------------------


@pytest.mark.parametrize("migrate_on_start", [True, False], ids=["migrating", "replica"])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_schema_newer_than_this_build_is_refused_at_start(
    backend: str, migrate_on_start: bool, postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await _empty_url(backend, postgres, tmp_path)
    db = Database(url)
    try:
        await migrate.upgrade(db)
        async with db.transaction() as s:
            await s.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        await db.dispose()
    settings = _hosts(tmp_path, url, 1, migrate_on_start=migrate_on_start)[0]
    with pytest.raises(ConfigurationError, match=r"revision '9999'.*newer ragd"):
        async with open_services(settings):
            pass
    assert (await _revision_and_users(url))[0] == "9999"  # nothing was "upgraded"
