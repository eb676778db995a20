"""The data dir and the database hold password hashes and every tenant's documents:
owner-only whatever the umask, and tightened when found open."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragd.app import create_app
from tests.conftest import make_settings, register, running


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


async def test_new_data_dir_and_database_are_owner_only(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data"
    async with running(create_app(make_settings(data))) as client:
        await register(client)  # writes, so the WAL files exist
        assert _mode(data) == 0o700
        db = data / "ragd.db"
        assert _mode(db) == 0o600
        for suffix in ("-wal", "-shm"):
            assert _mode(db.with_name(db.name + suffix)) == 0o600


async def test_open_data_dir_and_database_are_tightened(
    tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "data"
    async with running(create_app(make_settings(data))) as client:
        await register(client)
    os.chmod(data, 0o755)  # noqa: S103 - the permissive mode under test
    for file in data.glob("ragd.db*"):
        os.chmod(file, 0o644)
    async with running(create_app(make_settings(data))) as client:
        await register(client)
        assert _mode(data) == 0o700
        assert {file.name: _mode(file) for file in data.glob("ragd.db*")} == {
            file.name: 0o600 for file in data.glob("ragd.db*")
        }
