"""The ingestion pipeline: parse → chunk → embed → keywords → index, for one job.

Every stage before ``index`` only computes: nothing is written until the index stage commits
the whole version in one transaction (see :class:`~ragd.stores.catalog.Catalog`). A job that
is retried, or reclaimed after its worker was killed, therefore recomputes the same chunks
(same ids, same text) and commits them once; a stale worker's commit is refused because it no
longer holds the lease. Cancellation is checked between stages (and between embedding
batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from ragd.errors import Busy, InvalidInput, RagdError
from ragd.index.base import SearchBackend
from ragd.ingestion.chunking import Chunk, cap_chunks, chunk_document, chunk_id
from ragd.ingestion.limits import ParseLimits
from ragd.ingestion.parsers.base import ParsedDocument, ParseError, document_title
from ragd.ingestion.sandbox import DEFAULT_TARGET, SandboxPool
from ragd.jobs.queue import Job, JobQueue
from ragd.models.runtime import ModelRuntime
from ragd.settings import IngestionSettings
from ragd.stores.catalog import (
    UNTITLED,
    Catalog,
    CommitOutcome,
    NewChunk,
    VersionCommit,
    check_embedder,
)

logger = logging.getLogger(__name__)

#: Stages in the order they run. Keywords are taken during ``embed``, from the chunk's own
#: forward pass; their share of the time is reported as ``keywords`` within ``embed``.
STAGES = ("parse", "chunk", "embed", "index")
#: Progress is written at most this often per job (see ``IngestionPipeline._stage``).
PROGRESS_SECONDS = 0.5
#: Keywords kept for the whole document (aggregated over its chunks).
DOCUMENT_KEYWORDS = 10
#: Leave room for [CLS]/[SEP] and the heading prefix under the embedder's token limit.
_SPECIAL_TOKENS = 2
#: Parser error codes worth another attempt (the file itself may be fine).
#: A job that met a busy database is due again this much later.
BUSY_RETRY = timedelta(seconds=2)
_TRANSIENT_PARSE_CODES = frozenset({"timeout", "resource_limit", "parser_crashed"})


class Stop(Exception):
    """The job must stop now: cancellation was requested or the lease was lost."""

    def __init__(self, cancelled: bool) -> None:
        super().__init__("cancelled" if cancelled else "lease lost")
        self.cancelled = cancelled


@dataclass
class _Run:
    """State of one job attempt."""

    job: Job
    worker_id: str
    timings: dict[str, float]
    lost: asyncio.Event
    #: Monotonic time of the last progress write; the claim counts as one (it marked the job
    #: running), so a document done within :data:`PROGRESS_SECONDS` writes none.
    reported_at: float = field(default_factory=time.monotonic)


def parse_limits(settings: IngestionSettings) -> ParseLimits:
    """The sandbox limits configured for ingestion."""
    return ParseLimits(
        timeout_seconds=settings.parse_timeout_seconds,
        memory_mb=settings.parse_memory_mb,
        cpu_seconds=settings.parse_cpu_seconds,
        max_file_bytes=settings.max_upload_bytes,
        max_pages=settings.max_pages,
        max_chars=settings.max_parsed_chars,
        max_csv_rows=settings.max_csv_rows,
        max_csv_columns=settings.max_csv_columns,
    )


class IngestionPipeline:
    """Runs ``ingest`` jobs (one document version each) to completion or failure."""

    def __init__(
        self,
        catalog: Catalog,
        queue: JobQueue,
        runtime: ModelRuntime,
        indexes: SearchBackend,
        settings: IngestionSettings,
        *,
        parser_target: str | None = None,
        parser_sys_path: Sequence[str] = (),
    ) -> None:
        self._catalog = catalog
        self._queue = queue
        self._runtime = runtime
        self._indexes = indexes
        self._settings = settings
        self._limits = parse_limits(settings)
        self._parse_slots = asyncio.Semaphore(settings.parse_concurrency)
        self._sandboxes = SandboxPool(
            self._limits, sys_path=parser_sys_path,
            target=parser_target or DEFAULT_TARGET,
        )
        self._heartbeat_every = max(0.5, settings.lease_seconds / 3)

    async def run(self, job: Job, worker_id: str) -> None:
        """Process one claimed job; every outcome is recorded on the job and the document."""
        tenant_id = job.tenant_id
        document_id = str(job.payload.get("document_id", ""))
        version = int(job.payload.get("version", 0))
        state = _Run(job=job, worker_id=worker_id, timings={}, lost=asyncio.Event())
        async with self._heartbeat(state):
            try:
                await self._process(state, tenant_id, document_id, version)
            except Stop as stop:
                if stop.cancelled:
                    # The queue's ingest finaliser marks the document cancelled atomically.
                    await self._queue.mark_cancelled(job.id, worker_id)
                # A lost lease: the new owner records the outcome.
            except ParseError as exc:
                retryable = exc.code in _TRANSIENT_PARSE_CODES
                await self._fail(state, document_id, version, f"{exc.code}: {exc.message}",
                                 retryable=retryable)
            except InvalidInput as exc:
                await self._fail(state, document_id, version, f"{exc.code}: {exc.message}",
                                 retryable=False)
            except Busy:
                await release_busy(self._queue, job, worker_id)
            except (RagdError, OSError) as exc:
                await self._fail(state, document_id, version, f"{type(exc).__name__}: {exc}",
                                 retryable=True)
            except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not the worker
                logger.exception("ingestion failed unexpectedly", extra={"job_id": job.id})
                await self._fail(state, document_id, version,
                                 f"internal error ({type(exc).__name__})", retryable=True)

    async def close(self) -> None:
        """Stop the pre-started parser processes."""
        await self._sandboxes.close()

    async def _fail(
        self, state: _Run, document_id: str, version: int, error: str, *, retryable: bool
    ) -> None:
        job = state.job
        # A final failure (or a cancellation) updates the document in the same transaction,
        # through the queue's ingest finaliser; only a retry is recorded here.
        if not await self._queue.fail(job.id, state.worker_id, error, retryable=retryable):
            return
        after = await self._queue.get(job.tenant_id, job.id)
        if after is not None and after.status == "queued":
            await self._catalog.finish_version(
                job.tenant_id, document_id, version, "queued",
                f"attempt {after.attempts} failed, retrying: {error}",
            )

    async def _process(
        self, state: _Run, tenant_id: str, document_id: str, version: int
    ) -> None:
        job, worker_id = state.job, state.worker_id
        started = await self._catalog.start_version(tenant_id, document_id, version)
        if started is None:
            # Deleted or superseded before we started: nothing to index.
            if await self._queue.is_cancel_requested(job.id):
                raise Stop(cancelled=True)
            await self._queue.complete(job.id, worker_id, {"skipped": 1.0})
            return
        document, content, collection = started
        if document.active_version == version:
            # An earlier attempt committed this version and then could not record the job's
            # end (the database was busy, the worker died): only the bookkeeping is left.
            await self._indexes.publish(tenant_id)
            await self._queue.complete(job.id, worker_id, {"skipped": 1.0})
            return
        info = await self._runtime.embedder_details()
        check_embedder(
            (collection.embedder_name, collection.embedder_dimension),
            (info.name, info.dimension),
        )

        await self._stage(state, "parse", 0, 1)
        with _timed(state.timings, "parse"):
            async with self._parse_slots:
                parsed = await self._sandboxes.parse(
                    content.content, filename=content.filename,
                    declared_type=content.content_type,
                )

        await self._stage(state, "chunk", 0, 1)
        with _timed(state.timings, "chunk"):
            chunks = await self._chunk(parsed, info.max_tokens)
            chunks, parsed = cap_chunks(chunks, parsed, self._settings.max_chunks_per_document)
        total = len(chunks)

        await self._stage(state, "embed", 0, total)
        vectors: list[bytes] = []
        keywords: list[list[dict[str, Any]]] = []
        with _timed(state.timings, "embed"):
            batch = self._settings.embed_batch
            for start in range(0, total, batch):
                part = chunks[start : start + batch]
                texts = [chunk.embed_text for chunk in part]
                if self._settings.keywords_enabled:
                    # Keywords come from the same forward pass (or right after it): never a
                    # second stage that searchability waits for.
                    matrix, found, spent = await self._runtime.embed_with_keywords(
                        texts, [chunk.text for chunk in part],
                        top_n=self._settings.keywords_top_n,
                    )
                    state.timings["keywords"] = round(
                        state.timings.get("keywords", 0.0) + spent, 6
                    )
                    keywords.extend(
                        [
                            {"keyword": item.keyword, "score": round(float(item.score), 4)}
                            for item in items
                        ]
                        for items in found
                    )
                else:
                    matrix = await self._runtime.embed(texts)
                    keywords.extend([] for _ in part)
                vectors.extend(
                    np.ascontiguousarray(row, dtype=np.float32).tobytes() for row in matrix
                )
                await self._stage(state, "embed", min(start + batch, total), total)

        await self._stage(state, "index", 0, total, check_cancel=True)
        index_started = time.perf_counter()
        with _timed(state.timings, "index"):
            outcome = await self._catalog.commit_version(
                VersionCommit(
                    tenant_id=tenant_id, document_id=document.id, version=version,
                    job_id=job.id, worker_id=worker_id,
                    chunks=[
                        _new_chunk(document.id, version, chunk, keywords[i], vectors[i])
                        for i, chunk in enumerate(chunks)
                    ],
                    format=parsed.format, pages=parsed.pages,
                    keywords=_document_keywords(keywords),
                    timings=dict(state.timings),
                    warnings=parsed.warnings,
                    embedder_name=info.name, embedder_dimension=info.dimension,
                    # The job ends in the same transaction as the version it produced.
                    completes_job=True, index_started=index_started,
                    title=document_title(parsed),
                    automatic_title=content.filename or UNTITLED,
                )
            )
            if outcome is CommitOutcome.LEASE_LOST:
                raise Stop(cancelled=False)
            if outcome in (CommitOutcome.COMMITTED, CommitOutcome.ALREADY_COMMITTED):
                await self._indexes.publish(tenant_id)
        if outcome is CommitOutcome.COMMITTED:
            await self._queue.completed(tenant_id, job.id)
            return
        # ``keywords`` is part of ``embed``, not a stage of its own.
        state.timings["total"] = round(
            sum(state.timings.get(stage, 0.0) for stage in STAGES), 6
        )
        if outcome in (CommitOutcome.SUPERSEDED, CommitOutcome.GONE):
            state.timings["skipped"] = 1.0
        await self._queue.complete(
            job.id, worker_id, state.timings, stage=("index", total, total)
        )

    async def _chunk(self, parsed: ParsedDocument, max_tokens: int) -> list[Chunk]:
        tokenize = await self._runtime.token_spans()
        target = min(self._settings.chunk_target_tokens, max(16, max_tokens - _SPECIAL_TOKENS))
        overlap = min(self._settings.chunk_overlap_tokens, target // 2)
        return await asyncio.to_thread(
            chunk_document, parsed, tokenize=tokenize, target_tokens=target,
            overlap_tokens=overlap,
        )

    async def _stage(
        self, state: _Run, stage: str, done: int, total: int, *, check_cancel: bool = False
    ) -> None:
        """Stop if told to; report progress (a write, which also extends the lease) and look
        for a cancellation request at most every :data:`PROGRESS_SECONDS`: a small document
        runs all its stages in a fraction of a second, and each is a database round trip.
        The heartbeat keeps the lease (and notices cancellation) in between, so the shown
        stage may lag by up to that interval. ``check_cancel`` looks anyway (before the
        commit: a cancelled document must not become searchable)."""
        if state.lost.is_set():
            raise Stop(cancelled=await self._queue.is_cancel_requested(state.job.id))
        now = time.monotonic()
        due = now - state.reported_at >= PROGRESS_SECONDS
        if due:
            if not await self._queue.set_stage(
                state.job.id, state.worker_id, stage, done, total
            ):
                raise Stop(cancelled=False)
            state.reported_at = now
        if (due or check_cancel) and await self._queue.is_cancel_requested(state.job.id):
            raise Stop(cancelled=True)

    @contextlib.asynccontextmanager
    async def _heartbeat(self, state: _Run) -> AsyncIterator[None]:
        async def beat() -> None:
            while True:
                await asyncio.sleep(self._heartbeat_every)
                try:
                    alive = await self._queue.heartbeat(state.job.id, state.worker_id)
                except Exception:  # noqa: BLE001 - a missed beat is retried next period
                    logger.warning("heartbeat failed", exc_info=True)
                    continue
                if not alive:
                    state.lost.set()
                    return

        task = asyncio.create_task(beat(), name=f"heartbeat-{state.job.id}")
        try:
            yield
        finally:
            await cancel_and_wait(task)


class CollectionPurger:
    """Runs ``delete_collection`` jobs: removes documents in batches, then the collection."""

    def __init__(self, catalog: Catalog, queue: JobQueue, indexes: SearchBackend) -> None:
        self._catalog = catalog
        self._queue = queue
        self._indexes = indexes

    async def run(self, job: Job, worker_id: str) -> None:
        collection_id = str(job.payload.get("collection_id", ""))
        removed = 0
        try:
            while not await self._catalog.purge_collection(
                job.tenant_id, collection_id, batch=100
            ):
                removed += 100
                if not await self._queue.set_stage(job.id, worker_id, "delete", removed, 0):
                    return
            await self._indexes.publish(job.tenant_id)
        except Busy:
            await release_busy(self._queue, job, worker_id)
            return
        except (RagdError, OSError) as exc:
            await self._queue.fail(job.id, worker_id, f"{type(exc).__name__}: {exc}")
            return
        await self._queue.complete(job.id, worker_id)


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end, without swallowing a cancellation of the
    caller itself. (``suppress(CancelledError)`` around the wait also swallowed the caller's
    own cancellation when it arrived during that wait: a worker loop stopped just as a job
    ended kept running, and stopping its pool waited forever.)"""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def release_busy(queue: JobQueue, job: Job, worker_id: str) -> None:
    """The database stayed busy past the write budget: put the job back for a later turn
    without using up an attempt (a lock wait says nothing about the document)."""
    logger.warning("database busy; job put back", extra={"job_id": job.id})
    try:
        await queue.release(job.id, worker_id, delay=BUSY_RETRY)
    except Busy:
        # Still busy: the lease runs out and the job is claimed again (as a new attempt).
        logger.warning("database busy; job left to its lease", extra={"job_id": job.id})


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Any:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 6)


def _new_chunk(
    document_id: str, version: int, chunk: Chunk, keywords: list[dict[str, Any]],
    vector: bytes,
) -> NewChunk:
    return NewChunk(
        id=chunk_id(document_id, version, chunk.ordinal), ordinal=chunk.ordinal,
        text=chunk.text, heading_path=chunk.heading_path, page=chunk.page,
        page_end=chunk.page_end, token_count=chunk.token_count, start=chunk.start,
        end=chunk.end, keywords=tuple(keywords), vector=vector,
    )


def _document_keywords(per_chunk: list[list[dict[str, Any]]]) -> tuple[Mapping[str, Any], ...]:
    """The document's keywords: chunk keywords ranked by summed score."""
    scores: dict[str, float] = defaultdict(float)
    for items in per_chunk:
        for item in items:
            scores[str(item["keyword"])] += float(item["score"])
    ranked = sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))[:DOCUMENT_KEYWORDS]
    return tuple({"keyword": keyword, "score": round(score, 4)} for keyword, score in ranked)

