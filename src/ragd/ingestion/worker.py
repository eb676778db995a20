"""The worker pool: N loops that claim jobs from the durable queue and run their handler.

It runs inside ``ragd serve`` (``ingestion.workers`` loops) and as ``ragd worker``
processes against the same database. Each loop has its own worker id for its whole lifetime
(host, pid, random suffix), which the queue uses to fence stale workers.

An idle loop claims again when it is woken, or every ``poll_interval`` seconds otherwise:
woken in-process by the service that enqueued (:meth:`WorkerPool.wake`), and on PostgreSQL
by the ``NOTIFY`` every committed job sends (:meth:`WorkerPool.listen`), so a job enqueued
on any host starts at once. Polling stays as the fallback for a lost notification.

A pool started by a client for its own work (``ragd ingest --local``) is given ``only``: each
claim is restricted to the job ids it returns, so the pool runs that client's jobs and leaves
the shared queue's backlog (other tenants', other runs') to the servers and workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import timedelta

from ragd.db.listen import Listener
from ragd.jobs.queue import JOBS_CHANNEL, Job, JobQueue

logger = logging.getLogger(__name__)

Handler = Callable[[Job, str], Awaitable[None]]


def new_worker_id(index: int) -> str:
    """A worker id never reused by another incarnation (fits the queue's 64 characters)."""
    host = socket.gethostname()[:24]
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}-{index}"


class WorkerPool:
    """Claims and runs jobs of the handled kinds with ``concurrency`` loops."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int,
        poll_interval: float = 1.0,
        only: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """``only``: when given, every claim takes only a job whose id it returns at that
        moment (at most :data:`~ragd.jobs.queue.MAX_CLAIM_IDS`; an empty answer claims
        nothing). Call :meth:`wake` after adding an id, so it is claimed at once."""
        self._queue = queue
        self._only = only
        self._handlers = dict(handlers)
        self._concurrency = concurrency
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self.processed = 0
        self.busy = 0
        #: Loops waiting for work (between an empty claim and the next wake-up or poll).
        self.idle = 0

    def wake(self) -> None:
        """A job was enqueued: claim now instead of at the next poll."""
        self._wake.set()

    def listen(self, listener: Listener) -> None:
        """Wake on every job of a handled kind that any process commits (PostgreSQL
        ``NOTIFY`` on :data:`~ragd.jobs.queue.JOBS_CHANNEL`), and after the listener
        reconnects (notifications sent meanwhile were lost)."""
        listener.subscribe(JOBS_CHANNEL, self._announced)
        listener.on_reconnect(self.wake)

    def _announced(self, kind: str) -> None:
        if not kind or kind in self._handlers:
            self.wake()

    def add_cleanup(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run ``cleanup`` after the loops stopped (e.g. a handler's child processes)."""
        self._cleanups.append(cleanup)

    def start(self) -> None:
        for index in range(self._concurrency):
            self._tasks.append(
                asyncio.create_task(self._loop(new_worker_id(index)), name=f"ragd-worker-{index}")
            )

    async def stop(self) -> None:
        """Cancel the loops. A job cut short is reclaimed after its lease expires."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for cleanup in self._cleanups:
            try:
                await cleanup()
            except Exception:  # noqa: BLE001 - every cleanup runs
                logger.exception("worker pool cleanup failed")

    async def run_until_stopped(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (``ragd worker``)."""
        self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _claim(self, worker_id: str, kinds: list[str]) -> Job | None:
        """Claim, and never be stopped halfway through the claim's transaction: a loop
        cancelled there (at shutdown) cut its statements short, and the connection's reset
        then failed with a logged traceback. Cancelled meanwhile, the claim completes first;
        a job it took is put back at once (the attempt not used up), then the loop ends."""
        claim = asyncio.ensure_future(self._queue.claim(
            worker_id, kinds, job_ids=None if self._only is None else self._only()
        ))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            try:
                job = await claim
                if job is not None:
                    await self._queue.release(job.id, worker_id, delay=timedelta(0))
            except Exception:  # noqa: BLE001 - stopping anyway; its lease runs out
                logger.warning("putting back a job claimed while stopping failed",
                               exc_info=True)
            raise

    async def _loop(self, worker_id: str) -> None:
        kinds = list(self._handlers)
        logger.info("worker started", extra={"worker_id": worker_id})
        while True:
            # Cleared before the claim, not after it: a wake-up for a job committed while
            # the claim runs (too late for its snapshot) must not be lost.
            self._wake.clear()
            try:
                job = await self._claim(worker_id, kinds)
            except Exception:  # noqa: BLE001 - a locked or unavailable DB: retry later
                logger.warning("claiming a job failed", exc_info=True)
                job = None
            if job is None:
                self.idle += 1
                try:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await self._wake.wait()
                finally:
                    self.idle -= 1
                continue
            self.busy += 1
            try:
                logger.info(
                    "job started",
                    extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempts},
                )
                await self._handlers[job.kind](job, worker_id)
                self.processed += 1
            except Exception:  # noqa: BLE001 - handlers record failures; never kill the loop
                logger.exception("job handler crashed", extra={"job_id": job.id})
            finally:
                self.busy -= 1
