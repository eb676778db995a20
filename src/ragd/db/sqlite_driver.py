"""SQLite statements in one thread hop each.

SQLAlchemy's aiosqlite adapter runs a statement as four round trips between the event loop
and the connection's thread: open a cursor, execute, fetch the rows, close the cursor. Each
round trip waits for the event loop to come back to it, so under load (uploads being parsed,
jobs running, searches answered) a statement costs milliseconds of waiting for a
microsecond of SQLite, and a write transaction holds the process's one writer lane (and
SQLite's write lock) for all of that waiting: measured on an ingestion of 600 passages, a
version commit of ~12 statements held the lane 25 ms, against 7 ms on an idle server.

:class:`OneHopCursor` runs the whole statement (cursor, execute, fetch, close) as one call
on the connection's thread and keeps the result in memory, as the stock cursor does
(``fetchall`` before returning). Server-side cursors (``stream()``) stay the stock ones.
Measured with ``bench/ingest_corpus.py`` (500 documents of ~1 KB, medians of 3): 15.8 → 18.3
documents/s, and the server's CPU 89 → 80 ms a document (fewer callbacks on the loop).

It reaches into aiosqlite's connection (its queue of calls and its ``sqlite3`` connection),
as SQLAlchemy's own adapter does to set the isolation level; :func:`one_hop_dbapi` returns
None when an aiosqlite release no longer has them, and the engine then uses the stock
adapter (``tests/db/test_sqlite_driver.py`` fails loudly in that case).
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

__all__ = ["OneHopCursor", "one_hop_dbapi"]

_Result = tuple[Any, Sequence[Any], int, int | None]


def _run(connection: Any, operation: Any, parameters: Any, many: bool) -> _Result:
    """On the connection's thread: the whole statement, its rows read."""
    cursor: sqlite3.Cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else ()
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose every statement is one call on the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no aiosqlite cursor to open
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the connection's thread

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._call(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._call(operation, seq_of_parameters, many=True)

    def _call(self, operation: Any, parameters: Any, *, many: bool) -> None:
        try:
            result: _Result = await_(
                self._connection._execute(_run, self._connection, operation, parameters, many)
            )
        except Exception as error:  # noqa: BLE001 - mapped to SQLAlchemy's errors
            self._adapt_connection._handle_exception(error)
        self._description, rows, self._rowcount, self._lastrowid = result
        self._rows = collections.deque(rows)


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class _OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*arg, **kw)
        return _OneHopConnection(self, stock._connection)


def one_hop_dbapi(aiosqlite: ModuleType | None = None) -> AsyncAdapt_aiosqlite_dbapi | None:
    """The DBAPI module for ``create_async_engine(module=...)`` on ``sqlite+aiosqlite``;
    None when this aiosqlite lacks what the one-hop cursor needs."""
    if aiosqlite is None:
        import aiosqlite as imported

        aiosqlite = imported
    connection = getattr(aiosqlite, "Connection", None)
    if not all(hasattr(connection, name) for name in ("_execute", "_conn")):
        return None
    return _OneHopDBAPI(aiosqlite, sqlite3)
