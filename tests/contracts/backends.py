"""The database backends the contract suite runs every family against.

A backend is one way to run ragd's source of truth (SQLite today; PostgreSQL next). The
suite asks it for two things only: a fresh, migrated, empty database per test (anything
expensive, a server or a migrated template, is set up once per session) and a job queue with
an injected clock (time is moved by the tests, never waited for). Every other family is built
the way the app builds it, through the factories keyed on settings (``stores/factory.py``,
``ops/signals.py``, ``index/factory.py``), so the implementation a backend's URL selects
there is the one the suite runs.

Adding a backend: write a class with the :class:`Backend` methods and add it to
:data:`BACKENDS`; the ``backend`` fixture then runs every contract test against it too.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import CompletionObserver, Finaliser, SqlJobQueue
from tests.postgres import shared_postgres

__all__ = ["BACKENDS", "Backend", "PostgresBackend", "SqliteBackend"]

Clock = Callable[[], datetime]


class Backend(Protocol):
    name: str

    def start(self, workdir: Path) -> None:
        """Once per session: start what every test of this backend shares."""
        ...

    def stop(self) -> None: ...

    async def fresh_url(self, data_dir: Path) -> str:
        """The URL of a new database, migrated to head and empty, for one test."""
        ...

    def queue(
        self, db: Database, *, lease_seconds: float, clock: Clock,
        finalisers: Mapping[str, Finaliser], on_complete: CompletionObserver | None = None,
    ) -> ManagedJobQueue:
        """This backend's job queue on ``db``, reading time from ``clock``."""
        ...


class SqliteBackend:
    """A database file per test, copied from one migrated at the start of the session."""

    name = "sqlite"

    def __init__(self) -> None:
        self._template: Path | None = None

    def start(self, workdir: Path) -> None:
        self._template = workdir / "template.db"
        asyncio.run(_migrate(_url(self._template)))

    def stop(self) -> None:
        self._template = None

    async def fresh_url(self, data_dir: Path) -> str:
        assert self._template is not None, "start() first"
        path = data_dir / "ragd.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._template, path)
        path.chmod(0o600)  # as ragd creates it
        return _url(path)

    def queue(
        self, db: Database, *, lease_seconds: float, clock: Clock,
        finalisers: Mapping[str, Finaliser], on_complete: CompletionObserver | None = None,
    ) -> ManagedJobQueue:
        return SqlJobQueue(db, lease_seconds=lease_seconds, clock=clock, finalisers=finalisers,
                           on_complete=on_complete)


class PostgresBackend:
    """A database per test on the run's one PostgreSQL, copied from a migrated template."""

    name = "postgresql"

    def start(self, workdir: Path) -> None:
        shared_postgres()  # started once per run, stopped at its end

    def stop(self) -> None:
        pass

    async def fresh_url(self, data_dir: Path) -> str:
        return await shared_postgres().fresh_database("contract")

    def queue(
        self, db: Database, *, lease_seconds: float, clock: Clock,
        finalisers: Mapping[str, Finaliser], on_complete: CompletionObserver | None = None,
    ) -> ManagedJobQueue:
        return SqlJobQueue(db, lease_seconds=lease_seconds, clock=clock, finalisers=finalisers,
                           on_complete=on_complete)


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path.resolve()}"


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()  # the last connection checkpoints the WAL into the file


#: Every backend the suite knows, by the name the ``backend`` fixture's ids show.
BACKENDS: Mapping[str, Callable[[], Backend]] = {
    SqliteBackend.name: SqliteBackend, PostgresBackend.name: PostgresBackend,
}
