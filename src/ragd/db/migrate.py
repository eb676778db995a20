"""Apply Alembic migrations programmatically (no alembic.ini needed).

Startup checks the recorded revision against :data:`HEAD_REVISION` first, so an up-to-date
database costs one small query and Alembic is not even imported.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, ProgrammingError

from ragd.db.engine import Database

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: Must equal the head of ``migrations/versions`` (a test checks it).
HEAD_REVISION = "0007"


async def current_revision(db: Database) -> str | None:
    """The revision recorded in the database, or None for an empty database."""
    try:
        async with db.engine.connect() as conn:
            result = await conn.execute(text("SELECT version_num FROM alembic_version"))
            row = result.first()
    except (OperationalError, ProgrammingError):
        return None
    return None if row is None else str(row[0])


async def upgrade(db: Database) -> bool:
    """Bring the schema to head. Returns True when migrations ran."""
    if await current_revision(db) == HEAD_REVISION:
        return False
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade_sync)
    logger.info("database migrated", extra={"revision": HEAD_REVISION})
    return True


def script_head() -> str | None:
    """The head revision according to the migration scripts themselves."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def _upgrade_sync(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
