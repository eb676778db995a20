"""Everything stateful in one process, built and torn down together.

:func:`open_services` is used by the FastAPI lifespan and by CLI commands that work on the
data dir directly, so both get the same wiring. Each family (identity store, catalog,
conversations, job queue, change signals, search backend) is built by its factory, keyed on
the database backend, and :class:`Services` holds it by its Protocol only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ragd.auth.accounts import AccountService
from ragd.auth.passwords import PasswordHasher
from ragd.auth.ratelimit import RateLimiter, keying_secret
from ragd.auth.revocation import RevocationList
from ragd.auth.service import AuthService
from ragd.auth.tokens import TokenService
from ragd.db import migrate
from ragd.db.backends import supported_backend
from ragd.db.engine import Database
from ragd.db.listen import Listener, build_listener
from ragd.db.locks import HOUSEKEEPING, STARTUP, AdvisoryLeadership, Leader, advisory_lock
from ragd.db.migrate import SchemaGate
from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES
from ragd.generation.answer import AnswerService, relevance_gate
from ragd.generation.providers.factory import build_routes
from ragd.generation.router import Router
from ragd.index.base import SearchBackend
from ragd.index.factory import build_search_backend
from ragd.ingestion.events import job_observer
from ragd.ingestion.pipeline import CollectionPurger, IngestionPipeline
from ragd.ingestion.service import IngestionService
from ragd.ingestion.worker import WorkerPool
from ragd.jobs.factory import ManagedJobQueue, build_job_queue
from ragd.models.registry import ModelRegistry
from ragd.models.runtime import ModelRuntime
from ragd.ops.files import Leadership, locked
from ragd.ops.memory import MemoryManager
from ragd.ops.metrics import Metrics
from ragd.ops.signals import build_change_signal
from ragd.ops.telemetry import install_live_metrics
from ragd.retrieval.search import SearchService
from ragd.settings import Settings, ensure_data_dir, with_runtime_secret
from ragd.stores.base import IdentityStore
from ragd.stores.catalog import DELETE_COLLECTION_JOB, INGEST_JOB, Catalog
from ragd.stores.conversations import Conversations
from ragd.stores.factory import (
    build_catalog,
    build_conversations,
    build_identity_store,
    build_rate_limits,
    catalog_finalisers,
)

logger = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 600.0
#: How often the lazily saved index partitions (the embedded vectors) are checkpointed.
INDEX_CHECKPOINT_SECONDS = 30.0
#: Lock files in the data dir (see the locks in ``ops/files.py``).
STARTUP_LOCK = "startup.lock"
HOUSEKEEPING_LOCK = "housekeeping.lock"


@dataclass
class StartupMetrics:
    """Seconds spent in each startup phase, in order."""

    started_at: float = field(default_factory=time.time)
    phases: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.perf_counter)

    def phase(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._mark, 6)
        self._mark = now

    @property
    def total(self) -> float:
        return round(sum(self.phases.values()), 6)


@dataclass
class Services:
    settings: Settings
    db: Database
    store: IdentityStore
    tokens: TokenService
    passwords: PasswordHasher
    revocation: RevocationList
    auth: AuthService
    accounts: AccountService
    startup: StartupMetrics
    metrics: Metrics
    runtime: ModelRuntime
    memory: MemoryManager
    catalog: Catalog
    queue: ManagedJobQueue
    indexes: SearchBackend
    ingestion: IngestionService
    search: SearchService
    conversations: Conversations
    router: Router
    answers: AnswerService
    schema: SchemaGate
    migrations_applied: bool = False
    workers: WorkerPool | None = None
    #: This process's LISTEN connection (PostgreSQL; None on SQLite).
    listener: Listener | None = None


def owner_only_dir(path: Path) -> None:
    """The data dir holds secrets, the database and every tenant's indexes: mode 0700."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o700)
        logger.warning("data directory was open to others; now 0700",
                       extra={"path": str(path), "mode": oct(mode)})


@asynccontextmanager
async def open_services(
    settings: Settings, *, startup: StartupMetrics | None = None
) -> AsyncIterator[Services]:
    """Open the database (migrating it), build the services, and close them on exit."""
    startup = startup or StartupMetrics()
    supported_backend(settings.database_url)  # before anything is created or opened
    owner_only_dir(ensure_data_dir(settings))
    settings = with_runtime_secret(settings)
    startup.phase("settings")
    db = Database(
        settings.database_url,
        busy_timeout_ms=settings.database.busy_timeout_ms,
        echo=settings.database.echo,
    )
    listener: Listener | None = None
    try:
        # Processes starting together on a new data dir take turns: the first connection's
        # switch of a new SQLite file to WAL fails at once ("database is locked", whatever
        # the busy timeout) while another process creates the schema, and the migrations
        # must run once. With migrate_on_start off (replicas behind a one-shot
        # `ragd db upgrade`), a schema behind this build holds back what needs it.
        applied = False
        async with startup_lock(settings, db):
            await db.ping()
            startup.phase("database")
            if settings.database.migrate_on_start:
                applied = await migrate.upgrade(db)
                schema = SchemaGate(db, ready=True)
            else:
                schema = await migrate.schema_gate(db)
        startup.phase("migrations")
        # Subscribed before it starts and before any state is read from the database: a
        # change committed after that is heard, one committed before is in what is read.
        listener = build_listener(settings.database_url)
        auth_signal = build_change_signal(settings, AUTH_EVENTS, listener)
        index_signal = build_change_signal(settings, INDEX_CHANGES, listener)
        if listener is not None:
            await listener.start()  # never fails: the signals read the logs until it connects
        store = build_identity_store(settings, db)
        revocation = RevocationList(
            store, auth_signal, sync_interval=settings.auth.revocation_sync_seconds,
        )
        await schema.then(revocation.load)
        tokens = TokenService(settings)
        passwords = PasswordHasher(
            memory_kib=settings.auth.argon2_memory_kib,
            time_cost=settings.auth.argon2_time_cost,
            parallelism=settings.auth.argon2_parallelism,
            concurrency=settings.auth.hash_concurrency,
        )
        auth = AuthService(
            store, tokens, passwords, revocation, settings.auth,
            throttle=RateLimiter(build_rate_limits(settings, db), keying_secret(settings)),
            allow_registration=settings.registration_open,
        )
        accounts = AccountService(store, auth, revocation)
        metrics = Metrics()
        runtime = build_runtime(settings, metrics)
        memory = MemoryManager(settings.memory)
        runtime.attach(memory)
        install_live_metrics(metrics, runtime=runtime, memory=memory)
        catalog = build_catalog(settings, db)
        queue = build_job_queue(
            settings, db, finalisers=catalog_finalisers(settings),
            on_complete=job_observer(metrics),
        )
        indexes = build_search_backend(settings, db, catalog, index_signal)
        ingestion = IngestionService(catalog, queue, indexes, settings.ingestion)
        search = SearchService(catalog, indexes, runtime, on_search=metrics.observe_search)
        conversations = build_conversations(settings, db)
        # Providers are built from configuration only: no network call, no model load.
        router = Router(build_routes(settings.llm, runtime), settings.llm,
                        on_outcome=metrics.llm_outcome)
        answers = AnswerService(search, router, conversations, settings.llm,
                                gate=relevance_gate(settings.llm, settings.models.embedder),
                                on_answer=metrics.observe_chat)
        startup.phase("services")
        services = Services(
            settings=settings,
            db=db,
            store=store,
            tokens=tokens,
            passwords=passwords,
            revocation=revocation,
            auth=auth,
            accounts=accounts,
            startup=startup,
            metrics=metrics,
            runtime=runtime,
            memory=memory,
            catalog=catalog,
            queue=queue,
            indexes=indexes,
            ingestion=ingestion,
            search=search,
            conversations=conversations,
            router=router,
            answers=answers,
            schema=schema,
            migrations_applied=applied,
            listener=listener,
        )
        try:
            yield services
        finally:
            await router.aclose()
            await runtime.close()
            await indexes.settle()
            indexes.close()
    finally:
        if listener is not None:
            await listener.close()
        await db.dispose()


def startup_lock(
    settings: Settings, db: Database
) -> contextlib.AbstractAsyncContextManager[None]:
    """Held while a process does start-up work that must happen once per deployment (the
    migrations, the first admin); other processes starting at the same time wait for it: a
    lock file in the data dir, or on PostgreSQL (processes on several hosts) an advisory
    lock in the database."""
    if db.is_postgresql:
        return advisory_lock(db, STARTUP)
    return locked(settings.data_dir / STARTUP_LOCK)


class FileLeader:
    """:class:`~ragd.db.locks.Leader` through an ``flock`` in the data dir
    (:class:`~ragd.ops.files.Leadership`: the processes of one host)."""

    def __init__(self, path: Path) -> None:
        self._lead = Leadership(path)

    @property
    def held(self) -> bool:
        return self._lead.held

    async def acquire(self) -> bool:
        return self._lead.acquire()  # never waits: a non-blocking flock

    async def release(self) -> None:
        self._lead.release()


def housekeeping_leader(settings: Settings, db: Database) -> Leader:
    """Who runs the deletes: one process per data dir, or per database on PostgreSQL."""
    if db.is_postgresql:
        return AdvisoryLeadership(db, HOUSEKEEPING)
    return FileLeader(settings.data_dir / HOUSEKEEPING_LOCK)


def build_runtime(settings: Settings, metrics: Metrics) -> ModelRuntime:
    """Register the configured models (nothing loads until first use)."""
    from ragd.models.factory import embedder_loader, embedder_name
    from ragd.models.reranker import reranker_loader

    registry = ModelRegistry(settings.models, observer=metrics)
    return ModelRuntime(
        settings.models,
        registry,
        embedder_loader=embedder_loader(settings),
        embedder_name=embedder_name(settings),
        reranker_loader=reranker_loader(settings.models),
        query_cache_mb=settings.memory.query_cache_mb,
        keyword_cache_mb=settings.memory.keyword_cache_mb,
        phrase_cache_mb=settings.memory.phrase_cache_mb,
        cache_ttl_seconds=settings.memory.cache_ttl_seconds,
    )


async def run_housekeeping(
    services: Services,
    interval: float = PRUNE_INTERVAL_SECONDS,
    *,
    leader: Leader | None = None,
) -> None:
    """Every ``interval``, forever (a lifespan background task): forget this process's stale
    in-memory entries, and delete expired sessions, tokens, events and old jobs.

    The deletes run in one process only, the housekeeping leader (:func:`housekeeping_leader`):
    N processes would otherwise repeat the same deletes N times, each taking write locks.
    When the leader exits (or, on PostgreSQL, its lock connection drops), the next process
    to try takes over; two leaders for a moment would only repeat idempotent deletes.
    """
    leader = leader or housekeeping_leader(services.settings, services.db)
    try:
        while True:
            await asyncio.sleep(interval)
            services.auth.forget_stale()
            try:
                if not await leader.acquire():
                    continue
                removed = await services.auth.prune()
                jobs = await services.queue.prune(
                    timedelta(days=services.settings.ingestion.job_retention_days)
                )
            except Exception:  # noqa: BLE001 - housekeeping must outlive a transient DB error
                logger.exception("housekeeping failed")
                continue
            if removed or jobs:
                logger.info("pruned expired rows", extra={"auth_rows": removed, "jobs": jobs})
    finally:
        await leader.release()


def build_workers(
    services: Services, concurrency: int, *, only: Callable[[], Collection[str]] | None = None
) -> WorkerPool:
    """A worker pool running ingestion and collection-deletion jobs (with ``only``: just the
    jobs whose ids it returns, see :class:`WorkerPool`)."""
    pipeline = IngestionPipeline(
        services.catalog, services.queue, services.runtime, services.indexes,
        services.settings.ingestion,
    )
    purger = CollectionPurger(services.catalog, services.queue, services.indexes)
    pool = WorkerPool(
        services.queue,
        {INGEST_JOB: pipeline.run, DELETE_COLLECTION_JOB: purger.run},
        concurrency=concurrency,
        poll_interval=services.settings.ingestion.poll_interval_seconds,
        only=only,
    )
    pool.add_cleanup(pipeline.close)
    services.ingestion.set_wake(pool.wake)  # this process's enqueues: at once, any backend
    if services.listener is not None:
        pool.listen(services.listener)  # every process's, through NOTIFY (PostgreSQL)
    return pool


async def recover_indexes(services: Services) -> None:
    """Replay index changes that a crash left unapplied (a startup background task)."""
    try:
        applied = await services.indexes.sync_all()
    except Exception:  # noqa: BLE001 - search re-syncs on demand; keep serving
        logger.exception("index recovery failed")
        return
    if applied:
        logger.info("index changes replayed", extra={"changes": applied})


async def run_index_checkpoints(services: Services, interval: float | None = None) -> None:
    """Save lazily checkpointed index partitions every ``interval`` seconds (default
    :data:`INDEX_CHECKPOINT_SECONDS`; a background task)."""
    while True:
        await asyncio.sleep(INDEX_CHECKPOINT_SECONDS if interval is None else interval)
        try:
            await services.indexes.flush()
        except Exception:  # noqa: BLE001 - the next checkpoint (or a replay) covers it
            logger.exception("index checkpoint failed")


@asynccontextmanager
async def background(services: Services) -> AsyncIterator[None]:
    """Run housekeeping, the memory monitor, index recovery and the in-process workers (all
    but the monitor once the schema is there: see ``SchemaGate``)."""
    tasks = [asyncio.create_task(services.memory.run(), name="ragd-memory-monitor")]

    async def start() -> None:
        tasks.extend([
            asyncio.create_task(run_housekeeping(services), name="ragd-housekeeping"),
            asyncio.create_task(recover_indexes(services), name="ragd-index-recovery"),
            asyncio.create_task(run_index_checkpoints(services), name="ragd-index-checkpoints"),
        ])
        workers = services.settings.ingestion.workers
        if workers > 0:
            services.workers = build_workers(services, workers)
            services.workers.start()

    await services.schema.then(start)
    if not services.schema.ready:
        tasks.append(asyncio.create_task(services.schema.wait(), name="ragd-schema-wait"))
    try:
        yield
    finally:
        if services.workers is not None:
            await services.workers.stop()
            services.workers = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
