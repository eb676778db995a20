"""The contract suite's fixtures: one parametrised ``backend`` (every test runs once per
backend in :data:`~tests.contracts.backends.BACKENDS`) and one fixture per store family,
each built on a fresh database of that backend.

Families: ``identity`` (tenants, users, sessions, API keys, auth events), ``catalog``
(collections, documents, the version-commit protocol, the change log, the search reads),
``conversations``, ``queue`` (leases under an injected clock), change signals
(``site.signal(channel)``) and ``search`` (the search backend over the catalog).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ragd.index.base import SearchBackend
from ragd.jobs.factory import ManagedJobQueue
from ragd.stores.base import IdentityStore
from ragd.stores.catalog import Catalog
from ragd.stores.conversations import Conversations
from tests.contracts.backends import BACKENDS, Backend
from tests.contracts.site import Site, open_site


class Clock:
    """A controllable UTC clock that also ticks 1 ms per reading, so rows keep a strict
    order: time moves when a test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    started = BACKENDS[request.param]()
    started.start(tmp_path_factory.mktemp(f"backend-{request.param}"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def site(backend: Backend, tmp_path: Path) -> AsyncIterator[Site]:
    opened = await open_site(backend, tmp_path / "data")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def identity(site: Site) -> IdentityStore:
    return site.identity()


@pytest.fixture
def catalog(site: Site) -> Catalog:
    return site.catalog()


@pytest.fixture
def conversations(site: Site) -> Conversations:
    return site.conversations()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(site: Site) -> ManagedJobQueue:
    """The queue on the real clock, as the catalog enqueues its jobs (the queue's own
    contract tests put it on :class:`Clock`)."""
    return site.queue()


@pytest.fixture
def search(site: Site, catalog: Catalog) -> Iterator[SearchBackend]:
    backend = site.search(catalog)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
async def tenant(identity: IdentityStore) -> str:
    return (await identity.create_tenant("acme")).id


@pytest.fixture
async def other_tenant(identity: IdentityStore) -> str:
    return (await identity.create_tenant("globex")).id
