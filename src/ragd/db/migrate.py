"""Apply Alembic migrations programmatically (no alembic.ini needed), and hold a process back
until its schema is there.

Startup checks the recorded revision against :data:`HEAD_REVISION` first, so an up-to-date
database costs one small query and Alembic is not even imported.

Migrations run once however many processes start together: on PostgreSQL under an advisory
lock (``db/locks.py``) with the revision checked again once it is held; on SQLite the caller
holds the data dir's start-up lock. A schema at a revision this build does not know (a newer
ragd migrated it) is refused with a clear error instead of being "upgraded" or used.

In scale-out a one-shot ``ragd db upgrade`` migrates, and replicas started with
``database.migrate_on_start`` off wait for it behind a :class:`SchemaGate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, ProgrammingError

from ragd.db.engine import Database
from ragd.db.locks import MIGRATIONS, advisory_lock
from ragd.errors import ConfigurationError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Must equal the head of ``migrations/versions`` (a test checks it).
HEAD_REVISION = "0008"
#: How often a process waiting for the schema checks the recorded revision again.
SCHEMA_CHECK_SECONDS = 5.0

#: Where a database's schema stands for this build: at its head, behind it (empty, or an
#: older revision this build migrates from), or ahead (a revision it does not know).
SchemaStatus = Literal["current", "behind", "ahead"]


async def current_revision(db: Database) -> str | None:
    """The revision recorded in the database, or None for an empty database."""
    try:
        async with db.engine.connect() as conn:
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            row = result.first()
    except (OperationalError, ProgrammingError):
        return None
    return None if row is None else str(row[0])


def status_of(revision: str | None) -> SchemaStatus:
    """Where ``revision`` (as recorded in a database) stands for this build."""
    if revision == HEAD_REVISION:
        return "current"
    if revision is None or revision in known_revisions():
        return "behind"
    return "ahead"


async def schema_status(db: Database) -> SchemaStatus:
    """Where ``db``'s schema stands for this build (one small query)."""
    return status_of(await current_revision(db))


def ahead_error(revision: str | None) -> ConfigurationError:
    """The refusal to run on a schema a newer ragd wrote."""
    return ConfigurationError(
        f"the database schema is at revision {str(revision)[:32]!r}, which this ragd does "
        f"not know (it needs {HEAD_REVISION}): a newer ragd migrated it; run that version"
    )


async def schema_gate(db: Database, *, interval: float = SCHEMA_CHECK_SECONDS) -> SchemaGate:
    """The gate of a process that does not migrate: ready when the schema is at head,
    waiting when it is behind, :class:`ConfigurationError` when it is ahead."""
    revision = await current_revision(db)
    status = status_of(revision)
    if status == "ahead":
        raise ahead_error(revision)
    if status == "behind":
        logger.warning(
            "database schema behind this ragd: waiting for `ragd db upgrade`",
            extra={"revision": revision, "needs": HEAD_REVISION},
        )
    return SchemaGate(db, ready=status == "current", interval=interval)


async def upgrade(db: Database) -> bool:
    """Bring the schema to head. Returns True when migrations ran (in this process)."""
    revision = await current_revision(db)
    if revision == HEAD_REVISION:
        return False
    if status_of(revision) == "ahead":
        raise ahead_error(revision)
    if not db.is_postgresql:
        return await _migrate(db)
    async with advisory_lock(db, MIGRATIONS):
        # Another process may have migrated while this one waited for the lock.
        revision = await current_revision(db)
        if revision == HEAD_REVISION:
            return False
        if status_of(revision) == "ahead":
            raise ahead_error(revision)
        return await _migrate(db)


async def _migrate(db: Database) -> bool:
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade_sync)
    logger.info("database migrated", extra={"revision": HEAD_REVISION})
    return True


def script_head() -> str | None:
    """The head revision according to the migration scripts themselves."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision of this build's migration scripts (read once, when first needed)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    return frozenset(script.revision for script in scripts.walk_revisions())


def _upgrade_sync(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


Hook = Callable[[], Awaitable[None]]


class SchemaGate:
    """Whether this process may use the schema yet, and what it does once it may.

    A process that migrates at start, or finds the schema at head, is ready at once. One
    started with ``database.migrate_on_start`` off on a schema behind its head serves only
    its probes meanwhile: the start-up work that needs the schema (loading the revocation
    list, starting workers and housekeeping, the first admin) is queued with :meth:`then`,
    and :meth:`wait` checks the revision every ``interval`` (or at once after :meth:`poke`:
    the readiness probe pokes it) until the schema is at head, runs that work in order, and
    only then turns :attr:`ready`. A hook that fails is tried again at the next check.
    """

    def __init__(
        self, db: Database, *, ready: bool, interval: float = SCHEMA_CHECK_SECONDS
    ) -> None:
        self._db = db
        self._ready = ready
        self._interval = interval
        self._hooks: list[Hook] = []
        self._poke = asyncio.Event()
        self._turn = asyncio.Lock()
        self._said_ahead = False
        #: Revision checks made so far (plain state, for tests and diagnostics).
        self.checks = 0

    @property
    def ready(self) -> bool:
        """The schema is at head and the queued start-up work has run."""
        return self._ready

    async def revision(self) -> str | None:
        """The revision recorded in the database now (the readiness probe's query)."""
        return await current_revision(self._db)

    async def then(self, hook: Hook) -> None:
        """Run ``hook`` now when ready, else before :attr:`ready` turns true."""
        if self._ready:
            await hook()
        else:
            self._hooks.append(hook)

    def poke(self) -> None:
        """Check the revision now instead of at the next interval."""
        self._poke.set()

    async def wait(self) -> None:
        """Return once ready (checking the schema until it is at head)."""
        async with self._turn:
            while not self._ready:
                await self._check()
                if self._ready:
                    return
                self._poke.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._poke.wait()

    async def _check(self) -> None:
        try:
            revision = await current_revision(self._db)
            self.checks += 1
            status = status_of(revision)
            if status == "ahead" and not self._said_ahead:
                self._said_ahead = True
                logger.error("database schema is newer than this ragd",
                             extra={"revision": str(revision)[:32], "needs": HEAD_REVISION})
            if status != "current":
                return
            while self._hooks:
                await self._hooks[0]()
                self._hooks.pop(0)
        except Exception:  # noqa: BLE001 - a transient failure: the next check tries again
            logger.warning("start-up work waiting for the schema failed", exc_info=True)
            return
        self._ready = True
        logger.info("database schema at head: ready", extra={"revision": HEAD_REVISION})
