"""One deployment on a fresh database, with every store family built as the app builds it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ragd.db.engine import Database
from ragd.db.listen import Listener, build_listener, channel_name
from ragd.db.sequence import INDEX_CHANGES
from ragd.db.tables import utcnow
from ragd.index.base import SearchBackend
from ragd.index.factory import build_search_backend
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import CompletionObserver
from ragd.ops.files import ChangeSignal
from ragd.ops.signals import build_change_signal
from ragd.settings import Settings
from ragd.stores.base import IdentityStore
from ragd.stores.catalog import Catalog
from ragd.stores.conversations import Conversations
from ragd.stores.factory import (
    build_catalog,
    build_conversations,
    build_identity_store,
    build_rate_limits,
    catalog_finalisers,
)
from ragd.stores.rate_limits import RateLimits
from tests.conftest import make_settings
from tests.contracts.backends import Backend
from tests.waiting import eventually

__all__ = ["Site", "open_site"]

#: The channel :meth:`Site.delivered` sends its barriers on.
BARRIER = channel_name("test_barrier")
_tokens = itertools.count()


@dataclass
class Site:
    """A data dir and a database of one backend, seen from one process (one engine).

    :meth:`another_process` is the same deployment seen from a second process: another engine
    on the same database, the same data dir, stores of its own.
    """

    backend: Backend
    settings: Settings
    db: Database
    _processes: list[Site] = field(default_factory=list)
    #: Every process of the deployment (this one first), shared by all of them.
    _family: list[Site] = field(default_factory=list)
    _listener: Listener | None = None
    _barriers: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self._family:
            self._family.append(self)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def identity(self) -> IdentityStore:
        return build_identity_store(self.settings, self.db)

    def catalog(self) -> Catalog:
        return build_catalog(self.settings, self.db)

    def conversations(self) -> Conversations:
        return build_conversations(self.settings, self.db)

    def rate_limits(self) -> RateLimits:
        return build_rate_limits(self.settings, self.db)

    def queue(
        self, *, clock: Callable[[], datetime] = utcnow, lease_seconds: float = 30,
        on_complete: CompletionObserver | None = None,
    ) -> ManagedJobQueue:
        """The job queue, with the catalog's finalisers, reading time from ``clock``."""
        return self.backend.queue(
            self.db, lease_seconds=lease_seconds, clock=clock,
            finalisers=catalog_finalisers(self.settings), on_complete=on_complete,
        )

    def signal(self, channel: str) -> ChangeSignal:
        return build_change_signal(self.settings, channel, self.listener())

    def listener(self) -> Listener | None:
        """This process's LISTEN connection (PostgreSQL; None on SQLite), made on first use
        and started by :meth:`delivered`."""
        if self._listener is None:
            self._listener = build_listener(self.settings.database_url)
            if self._listener is not None:
                self._listener.subscribe(BARRIER, self._barriers.add)
        return self._listener

    async def delivered(self) -> None:
        """Start every process's listener, then wait until every notification any process
        sent so far reached every other process (a barrier sent after them, on each sender's
        connection, has arrived: notifications arrive in commit order). Nothing to wait for
        where notifications are files."""
        listeners = [(p, p.listener()) for p in self._family]
        started = [(p, listener) for p, listener in listeners if listener is not None]
        for _, listener in started:
            await listener.start()
        for _, sender in started:
            for receiver, _ in started:
                token = f"{next(_tokens)}"
                sender.notify(BARRIER, token)
                await eventually(receiver._arrived(token), what="a barrier notification")

    def _arrived(self, token: str) -> Callable[[], bool]:
        return lambda: token in self._barriers

    def search(self, catalog: Catalog | None = None) -> SearchBackend:
        """The search backend over ``catalog`` (default: a catalog of this process)."""
        return build_search_backend(
            self.settings, self.db, catalog or self.catalog(), self.signal(INDEX_CHANGES)
        )

    def another_process(self) -> Site:
        other = Site(self.backend, self.settings, _engine(self.settings),
                     _family=self._family)
        self._family.append(other)
        self._processes.append(other)
        return other

    async def close(self) -> None:
        for other in self._processes:
            await other.close()
        if self._listener is not None:
            await self._listener.close()
        await self.db.dispose()


#: Versions of more chunks than this are staged in batches: small, so that the contract runs
#: both ways of committing a version (one transaction, and staged batches then activation).
COMMIT_BATCH = 2


async def open_site(backend: Backend, data_dir: Path) -> Site:
    """A new deployment of ``backend``: ``data_dir`` and a fresh database."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    url = await backend.fresh_url(data_dir)
    settings = make_settings(
        data_dir, database={"url": url}, ingestion={"commit_batch_chunks": COMMIT_BATCH}
    )
    return Site(backend, settings, _engine(settings))


def _engine(settings: Settings) -> Database:
    return Database(settings.database_url, busy_timeout_ms=settings.database.busy_timeout_ms)
