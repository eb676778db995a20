"""The async SQLAlchemy engine with ragd's SQLite pragmas and transaction discipline."""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ragd.errors import Busy

logger = logging.getLogger(__name__)


class Database:
    """One engine and its session factory.

    ``read()`` yields a session for queries. ``transaction()`` yields a session inside a write
    transaction that commits on success and rolls back on error.

    On SQLite, writes queue instead of failing. In one process they take turns in one writer
    lane (first come, first served, waiting on the event loop, not in SQLite's polling busy
    handler, where a writer can starve); the write transaction then starts with
    ``BEGIN IMMEDIATE``, which takes the file lock up front (waiting up to ``busy_timeout``
    for another process's writer) instead of failing with SQLITE_BUSY when a read turns into
    a write. A write that still cannot get its turn within the budget raises
    :class:`~ragd.errors.Busy` (HTTP 503 with ``Retry-After``): nothing was written.
    """

    def __init__(self, url: str, *, busy_timeout_ms: int = 15_000, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.is_postgresql = parsed.get_backend_name() == "postgresql"
        self._write_budget = busy_timeout_ms / 1000
        self._lane: asyncio.Lock | None = None
        self._lane_holder: asyncio.Task[Any] | None = None
        self._waiting = 0
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            owner_only(Path(parsed.database))
            # Readers never block each other in WAL mode; keep enough connections pooled for
            # typical concurrency so they are not reopened (and re-PRAGMAed) per request.
            kwargs.update(pool_size=16, max_overflow=16)
        elif self.is_postgresql:
            # Every replica and worker holds its own pool: keep it modest (the server's
            # max_connections is shared by all of them). A lock wait past the write budget
            # (a row, or a change log's append turn) fails as Busy instead of queueing forever.
            kwargs.update(
                pool_size=10, max_overflow=10, pool_pre_ping=True, pool_recycle=1800,
                connect_args={"server_settings": {
                    "application_name": "ragd",
                    "lock_timeout": str(int(busy_timeout_ms)),
                    "idle_in_transaction_session_timeout": "600000",
                }},
            )
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine, busy_timeout_ms)
        self._reads = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writes = async_sessionmaker(
            self.engine.execution_options(ragd_write=True), expire_on_commit=False
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; anything it writes is rolled back."""
        with self._busy_as_error():
            async with self._reads() as session:
                yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed when the block exits cleanly."""
        async with self._write_turn():
            with self._busy_as_error():
                async with self._writes() as session, session.begin():
                    yield session

    @contextmanager
    def _busy_as_error(self) -> Iterator[None]:
        """A write that could not get its turn within the budget as :class:`Busy`: SQLite's
        "database is locked" (SQLITE_BUSY), PostgreSQL's lock timeout, deadlock or
        serialization failure (the transaction was rolled back); any other error unchanged."""
        try:
            yield
        except DBAPIError as exc:
            if not _is_busy(exc):
                raise
            raise self._busy() from exc

    def _busy(self) -> Busy:
        """Busy, with a retry hint of a fraction of the write budget (at least a second)."""
        return Busy(retry_after=max(1, math.ceil(self._write_budget / 5)))

    @property
    def waiting_writers(self) -> int:
        """Write transactions of this process waiting for their turn in the lane."""
        return self._waiting

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """This process's one writer lane (SQLite only; other engines lock rows)."""
        if not self.is_sqlite:
            yield
            return
        task = asyncio.current_task()
        if task is not None and task is self._lane_holder:
            # It would wait for itself: a bug, made loud instead of a stall.
            raise RuntimeError("a write transaction was opened inside another one")
        if self._lane is None:
            self._lane = asyncio.Lock()
        lane = self._lane
        self._waiting += 1
        try:
            async with asyncio.timeout(self._write_budget):
                await lane.acquire()
        except TimeoutError:
            raise self._busy() from None
        finally:
            self._waiting -= 1
        self._lane_holder = task
        try:
            yield
        finally:
            self._lane_holder = None
            lane.release()

    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


#: PostgreSQL SQLSTATEs of a transaction that lost a race for a lock (nothing was written):
#: lock_not_available (lock_timeout), deadlock_detected, serialization_failure.
_PG_BUSY = frozenset({"55P03", "40P01", "40001"})


def _is_busy(exc: DBAPIError) -> bool:
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is None:
        cause = getattr(orig, "__cause__", None)
        sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in _PG_BUSY:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database is busy" in message


def owner_only(path: Path) -> None:
    """Create the SQLite file mode 0600, and tighten an existing one (with its -wal/-shm).

    It holds password hashes and every tenant's documents. SQLite creates the -wal and -shm
    files with the database file's own mode, so the main file's mode is what counts.
    """
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = file.stat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(file, 0o600)
            logger.warning("database file was readable by others; now 0600",
                           extra={"path": str(file), "mode": oct(mode)})


def _install_sqlite_hooks(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's implicit transactions
        # would defer it and ignore IMMEDIATE).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # Auth and job tables must survive power loss: FULL for every connection.
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("ragd_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
