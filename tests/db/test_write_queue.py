"""Writes queue instead of failing: one writer lane per process (first come, first served),
a bounded wait, and past it a clean :class:`Busy` (HTTP 503 with ``Retry-After``, nothing
written, the connection kept) instead of "database is locked"."""

from __future__ import annotations

import asyncio
import http.client
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.tables import TenantRow
from ragd.errors import Busy
from ragd.stores.identity import SqlIdentityStore
from tests.conftest import STRONG_PASSWORD, make_settings
from tests.generation.serving import serving
from tests.waiting import eventually


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.resolve()}"


@contextmanager
def other_process_writing(path: Path) -> Iterator[None]:
    """Hold the database's write lock the way another process's writer would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def _open(path: Path, busy_timeout_ms: int) -> Database:
    database = Database(_url(path), busy_timeout_ms=busy_timeout_ms)
    await migrate.upgrade(database)
    return database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await _open(tmp_path / "ragd.db", busy_timeout_ms=60_000)
    try:
        yield database
    finally:
        await database.dispose()


async def _tenants(db: Database) -> int:
    async with db.read() as s:
        return int((await s.scalar(select(func.count()).select_from(TenantRow))) or 0)


async def test_writers_of_one_process_take_turns_first_come_first_served(db: Database) -> None:
    store = SqlIdentityStore(db)
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with db.transaction() as s:
            s.add(TenantRow(name="first", name_key="first"))
            await release.wait()  # keeps the lane while the others line up
        order.append("first")

    async def writer(index: int) -> None:
        await store.create_tenant(f"t{index:02d}")
        order.append(f"t{index:02d}")

    holder = asyncio.create_task(first())
    await eventually(lambda: db._lane_holder is holder)
    writers = []
    for index in range(20):
        writers.append(asyncio.create_task(writer(index)))
        # Each one is in line before the next starts, so the line's order is known.
        await eventually(lambda n=index + 1: db.waiting_writers == n)
    release.set()
    await asyncio.gather(holder, *writers)
    assert order == ["first", *(f"t{index:02d}" for index in range(20))]
    assert await _tenants(db) == 21
    assert db.waiting_writers == 0


async def test_a_write_behind_another_process_past_its_budget_is_busy_and_writes_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ragd.db"
    db = await _open(path, busy_timeout_ms=200)
    try:
        store = SqlIdentityStore(db)
        with other_process_writing(path):
            with pytest.raises(Busy) as caught:
                await store.create_tenant("acme")
            assert caught.value.code == "busy" and caught.value.retry_after >= 1
        assert await _tenants(db) == 0
        # Once the other writer is done, the same write goes through.
        await store.create_tenant("acme")
        assert await _tenants(db) == 1
    finally:
        await db.dispose()


async def test_a_write_that_waits_in_line_past_its_budget_is_busy(tmp_path: Path) -> None:
    db = await _open(tmp_path / "ragd.db", busy_timeout_ms=100)
    try:
        release = asyncio.Event()

        async def holder() -> None:
            async with db.transaction() as s:
                s.add(TenantRow(name="slow", name_key="slow"))
                await release.wait()

        task = asyncio.create_task(holder())
        await eventually(lambda: db._lane_holder is task)
        with pytest.raises(Busy):
            await SqlIdentityStore(db).create_tenant("waiting")
        release.set()
        await task
        assert await _tenants(db) == 1
    finally:
        await db.dispose()


async def test_a_write_transaction_inside_another_fails_loudly(db: Database) -> None:
    async with db.transaction():
        with pytest.raises(RuntimeError, match="inside another"):
            async with db.transaction():
                pass
    # The lane is free again.
    await SqlIdentityStore(db).create_tenant("after")


def test_busy_is_a_503_with_retry_after_and_keeps_the_connection(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", database={"busy_timeout_ms": 200})
    with serving(settings) as base:
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        body = json.dumps({"email": "busy@acme.io", "password": STRONG_PASSWORD,
                           "tenant_name": "busy"})
        headers = {"Content-Type": "application/json", "X-Request-ID": "req-busy"}
        try:
            with other_process_writing(tmp_path / "data" / "ragd.db"):
                conn.request("POST", "/api/v1/auth/register", body=body, headers=headers)
                sock = conn.sock
                response = conn.getresponse()
                payload = json.loads(response.read())
            assert response.status == 503
            assert payload["error"]["code"] == "busy"
            assert int(response.getheader("retry-after") or "0") >= 1
            assert response.getheader("x-request-id") == "req-busy"
            # Nothing was written: the same registration now succeeds, on the same connection.
            conn.request("POST", "/api/v1/auth/register", body=body, headers=headers)
            assert conn.sock is sock
            again = conn.getresponse()
            assert again.status == 201, again.read()
        finally:
            conn.close()
