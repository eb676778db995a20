"""The async SQLAlchemy engine with ragd's SQLite pragmas and transaction discipline."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ragd.db.sqlite_driver import one_hop_dbapi
from ragd.errors import Busy

logger = logging.getLogger(__name__)

#: A pooled PostgreSQL connection that sat unused for longer than this is pinged before it
#: is handed out (see :func:`_install_idle_ping`).
PING_AFTER_IDLE_SECONDS = 5.0


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

    def __init__(
        self, url: str, *, busy_timeout_ms: int = 15_000, echo: bool = False,
        ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
                pool_size=20, max_overflow=10, pool_recycle=1800,
                connect_args={"server_settings": {
                    "application_name": "ragd",
                    # Plans for the values at hand: the driver prepares every statement, and
                    # after five runs PostgreSQL may switch to a generic plan that knows
                    # neither the tenant nor the words nor the vector. Tenants differ in size
                    # by orders of magnitude (measured: a lexical search went from 30 ms to
                    # seconds on its sixth run); planning ragd's statements costs far less.
                    "plan_cache_mode": "force_custom_plan",
                    "lock_timeout": str(int(busy_timeout_ms)),
                    "idle_in_transaction_session_timeout": "600000",
                }},
            )
        if self.is_sqlite and parsed.get_driver_name() == "aiosqlite":
            # One thread hop per statement instead of four (see ragd.db.sqlite_driver).
            module = one_hop_dbapi()
            if module is not None:
                kwargs["module"] = module
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _install_sqlite_hooks(self.engine, busy_timeout_ms)
        elif self.is_postgresql:
            _install_idle_ping(self.engine, ping_after_idle, clock)
        self._reads = async_sessionmaker(self.engine, expire_on_commit=False)
        self._statements = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.is_postgresql else self.engine
        )
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
    async def statements(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads that need no snapshot shared by their statements: on
        PostgreSQL each statement is its own transaction (autocommit), which saves the
        BEGIN and ROLLBACK round trips of :meth:`read` (search runs three such reads per
        request). Never for writes, nor for reads that must agree with each other."""
        with self._busy_as_error():
            async with self._statements.connect() as conn:
                yield conn

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


def _install_idle_ping(
    engine: AsyncEngine, idle_seconds: float, clock: Callable[[], float]
) -> None:
    """Ping a pooled connection before use only when it sat idle for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout, and its asyncpg ping is three
    round trips (BEGIN, an empty query, ROLLBACK): a search checks out three connections, so
    that was nine round trips per search, measured at a tenth of a replica's CPU under load.
    A connection used moments ago is alive in all but one case: the server (or a proxy)
    dropped it since. Its first statement then fails as a disconnect, SQLAlchemy discards it
    and every pooled connection opened before it, and the pool reconnects; so a restart of
    PostgreSQL under load costs the requests in flight (as with pre-ping), and one after an
    idle spell costs nothing."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["ragd_idle_since"] = clock()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("ragd_idle_since")
        if since is None or clock() - since < idle_seconds:
            return
        try:
            dbapi_conn.ping()
        except Exception as exc:  # whatever the driver raised: this connection is gone
            raise DisconnectionError("the pooled connection is gone") from exc


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
