"""Migration 0005: stored emails take the NFKC form that login compares, without merging."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ragd.db import migrate
from ragd.db.engine import Database


def _upgrade_to(revision: str) -> object:
    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return run


async def test_emails_are_normalised_and_look_alikes_are_not_merged(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{(tmp_path / 'ragd.db').resolve()}")
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade_to("0004"))
            await conn.execute(text(
                "INSERT INTO tenants (id, name, name_key, status, created_at, updated_at) "
                "VALUES ('t', 't', 't', 'active', '2026-01-01', '2026-01-01')"
            ))
            rows = [
                ("u1", "bob@acme.io", "2026-01-01"),
                ("u2", "\uff42\uff4f\uff42@acme.io", "2026-01-02"),  # fullwidth look-alike
                ("u3", "\uff43\uff41\uff52\uff4f\uff4c@acme.io", "2026-01-03"),  # alone
            ]
            for user_id, email, created in rows:
                await conn.execute(text(
                    "INSERT INTO users (id, tenant_id, email, password_hash, role, is_active, "
                    "is_verified, is_superuser, created_at, updated_at) VALUES (:id, 't', "
                    ":email, 'x', 'member', 1, 0, 0, :created, :created)"
                ), {"id": user_id, "email": email, "created": created})
        assert await migrate.upgrade(db) is True
        async with db.engine.connect() as conn:
            emails = dict((await conn.execute(text("SELECT id, email FROM users"))).all())
        assert emails == {
            "u1": "bob@acme.io",
            "u2": "\uff42\uff4f\uff42@acme.io",  # would collide with u1: left for an operator
            "u3": "carol@acme.io",
        }
    finally:
        await db.dispose()
