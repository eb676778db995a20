"""The database backend as the key of every family's factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ragd.db.backends import backend_name, choose, supported_backend
from ragd.db.engine import Database
from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES
from ragd.errors import ConfigurationError
from ragd.index.factory import build_search_backend
from ragd.index.manager import IndexManager
from ragd.jobs.factory import build_job_queue
from ragd.jobs.queue import SqlJobQueue
from ragd.ops.files import FileChangeSignal
from ragd.ops.signals import build_change_signal
from ragd.settings import Settings
from ragd.stores.factory import (
    build_catalog,
    build_conversations,
    build_identity_store,
    catalog_finalisers,
)
from ragd.stores.identity import SqlIdentityStore
from ragd.stores.sql_catalog import SqlCatalog
from ragd.stores.sql_conversations import SqlConversations
from tests.conftest import make_settings

POSTGRES = "postgresql+asyncpg://ragd:s3cret-pw@db.example:5432/ragd"
MYSQL = "mysql+aiomysql://ragd:s3cret-pw@db.example:3306/ragd"


@pytest.mark.parametrize(("url", "name"), [
    ("sqlite+aiosqlite:///data/ragd.db", "sqlite"),
    ("sqlite+aiosqlite://", "sqlite"),
    (POSTGRES, "postgresql"),
    ("postgresql://h/db", "postgresql"),
])
def test_the_backend_is_the_urls_dialect_without_its_driver(url: str, name: str) -> None:
    assert backend_name(url) == name


def test_an_unsupported_backend_is_named_with_the_supported_ones_and_no_secret() -> None:
    with pytest.raises(ConfigurationError) as caught:
        supported_backend(MYSQL)
    message = str(caught.value)
    assert "'mysql' is not supported (supported: postgresql, sqlite)" in message
    assert "s3cret" not in message and "db.example" not in message
    assert supported_backend("sqlite+aiosqlite:///x.db") == "sqlite"
    assert supported_backend(POSTGRES) == "postgresql"


def test_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a database URL"):
        backend_name("not a url")


def test_choose_names_the_family() -> None:
    assert choose("sqlite+aiosqlite://", {"sqlite": 1, "postgresql": 2}, "catalog") == 1
    with pytest.raises(ConfigurationError, match=r"^job queue: database backend 'mysql'"):
        choose("mysql+aiomysql://h/db", {"sqlite": 1}, "job queue")


def _factories(settings: Settings, db: Database) -> dict[str, Callable[[], Any]]:
    catalog = SqlCatalog(db)
    signal = FileChangeSignal(settings.data_dir / "x.marker")
    return {
        "identity store": lambda: build_identity_store(settings, db),
        "catalog": lambda: build_catalog(settings, db),
        "conversations": lambda: build_conversations(settings, db),
        "job queue": lambda: build_job_queue(settings, db),
        "change signals": lambda: build_change_signal(settings, AUTH_EVENTS),
        "search backend": lambda: build_search_backend(settings, db, catalog, signal),
    }


@pytest.mark.parametrize("family", [
    "identity store", "catalog", "conversations", "job queue", "change signals",
    "search backend",
])
async def test_every_family_refuses_an_unsupported_backend_by_name(
    tmp_path: Path, family: str
) -> None:
    settings = make_settings(tmp_path / "data", database={"url": MYSQL})
    db = Database("sqlite+aiosqlite://")  # never connected: the factories only read the URL
    try:
        with pytest.raises(ConfigurationError,
                           match=rf"^{family}: .*supported: postgresql, sqlite"):
            _factories(settings, db)[family]()
    finally:
        await db.dispose()


async def test_sqlite_builds_the_embedded_families(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    db = Database(settings.database_url)
    try:
        built = {name: make() for name, make in _factories(settings, db).items()}
        assert isinstance(built["identity store"], SqlIdentityStore)
        assert isinstance(built["catalog"], SqlCatalog)
        assert isinstance(built["conversations"], SqlConversations)
        assert isinstance(built["job queue"], SqlJobQueue)
        assert isinstance(built["change signals"], FileChangeSignal)
        assert isinstance(built["search backend"], IndexManager)
        built["search backend"].close()
        assert set(catalog_finalisers(settings)) == {"ingest"}
    finally:
        await db.dispose()


def test_each_change_log_has_its_own_signal(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    (settings.data_dir / "indexes").mkdir(parents=True)
    auth = build_change_signal(settings, AUTH_EVENTS)
    other_process = build_change_signal(settings, INDEX_CHANGES)
    build_change_signal(settings, INDEX_CHANGES).notify()
    assert other_process.changed()
    assert not auth.changed()
    with pytest.raises(ValueError, match="unknown change log"):
        build_change_signal(settings, "documents")


async def test_the_app_refuses_an_unsupported_backend_before_opening_anything(
    tmp_path: Path,
) -> None:
    from ragd.container import open_services

    settings = make_settings(tmp_path / "data", database={"url": MYSQL})
    with pytest.raises(ConfigurationError, match="supported: postgresql, sqlite"):
        async with open_services(settings):
            pass
    assert not (tmp_path / "data").exists()
