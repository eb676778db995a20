"""Micro-batching of concurrent embedding requests.

An embedder computes 64 texts in one call much faster than 64 calls of one text. Under load,
requests arrive one query at a time from many handlers; :class:`EmbeddingBatcher` holds them
for a few milliseconds, sends what gathered (grouped by kind, at most ``max_batch`` texts) as
one model call through the registry, and gives each caller its own rows back.

While the model is busy with a batch, new requests queue and form the next one, so batches
grow with the load: at most as many batches are in flight as the model's concurrency limit
in the registry allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ragd.errors import Unavailable
from ragd.models.base import Embedder, TextKind, Vectors
from ragd.models.registry import ModelRegistry

__all__ = ["BatcherStats", "EmbeddingBatcher"]

logger = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Request:
    texts: list[str]
    kind: TextKind
    future: asyncio.Future[Vectors]
    enqueued_at: float


@dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    texts: int = 0
    largest_batch: int = 0
    failed_batches: int = 0

    @property
    def mean_batch(self) -> float | None:
        return self.texts / self.batches if self.batches else None


@dataclass(eq=False)
class _Pending:
    requests: deque[_Request] = field(default_factory=deque)
    texts: int = 0


class EmbeddingBatcher:
    """Coalesces concurrent :meth:`embed` calls into batched calls of one registry model.

    ``window_ms`` is how long the first request of a batch waits for company (0 = no waiting,
    but what is already queued still goes together); a batch leaves as soon as it reaches
    ``max_batch`` texts. A caller with more than ``max_batch`` texts is split into chunks.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        model_name: str,
        *,
        window_ms: float,
        max_batch: int,
        max_in_flight: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if window_ms < 0:
            raise ValueError("window_ms must be >= 0")
        self._registry = registry
        self._name = model_name
        self._window = window_ms / 1000.0
        self._max_batch = max_batch
        # More batches in flight than the model runs at once would only queue in the
        # registry as many small batches instead of forming bigger ones here.
        self._slots = asyncio.Semaphore(max_in_flight or registry.concurrency(model_name))
        self._pending: dict[TextKind, _Pending] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._closed = False
        self.stats = BatcherStats()

    @property
    def model_name(self) -> str:
        return self._name

    async def embed(self, texts: Sequence[str], kind: TextKind = "passage") -> Vectors:
        """Embed ``texts`` (rows in the same order), batched with concurrent callers."""
        if self._closed:
            raise Unavailable("the embedding batcher is closed")
        if not texts:
            model: Embedder = await self._registry.get(self._name)
            return np.empty((0, model.info.dimension), dtype=np.float32)
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, len(texts), self._max_batch):
            chunk = list(texts[start : start + self._max_batch])
            future: asyncio.Future[Vectors] = loop.create_future()
            self._enqueue(_Request(chunk, kind, future, loop.time()))
            futures.append(future)
        self._ensure_dispatcher()
        try:
            parts = await asyncio.gather(*futures)
        except BaseException:
            # Our chunks still queued are skipped; a batch already sent ignores them.
            for future in futures:
                future.cancel()
            raise
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _enqueue(self, request: _Request) -> None:
        pending = self._pending.setdefault(request.kind, _Pending())
        was_idle = not any(p.requests for p in self._pending.values())
        pending.requests.append(request)
        pending.texts += len(request.texts)
        # The dispatcher sleeps until the window of the oldest request ends; wake it early
        # only when there is something new to decide: the first request, or a full batch.
        if was_idle or pending.texts >= self._max_batch:
            self._wake.set()

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(
                self._dispatch(), name=f"ragd-batcher-{self._name}"
            )

    def _next_kind(self) -> TextKind | None:
        """The kind whose oldest waiting request is the oldest of all."""
        best: TextKind | None = None
        oldest = 0.0
        for kind, pending in self._pending.items():
            while pending.requests and pending.requests[0].future.done():
                pending.texts -= len(pending.requests.popleft().texts)  # cancelled callers
            if pending.requests and (best is None or pending.requests[0].enqueued_at < oldest):
                best, oldest = kind, pending.requests[0].enqueued_at
        return best

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                kind = self._next_kind()
                if kind is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                pending = self._pending[kind]
                due = pending.requests[0].enqueued_at + self._window - loop.time()
                if pending.texts < self._max_batch and due > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due):
                            await self._wake.wait()
                    continue
                await self._slots.acquire()
                # Waiting for a slot lets more requests join; take the oldest kind again.
                kind = self._next_kind()
                batch = self._take(kind) if kind is not None else []
                if not batch:
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._run_batch(batch[0].kind, batch))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave callers hanging
            logger.exception("embedding batcher failed", extra={"model": self._name})
            self._fail_pending(exc)

    def _take(self, kind: TextKind) -> list[_Request]:
        pending = self._pending[kind]
        batch: list[_Request] = []
        size = 0
        while pending.requests:
            request = pending.requests[0]
            if request.future.done():
                pending.requests.popleft()
                pending.texts -= len(request.texts)
                continue
            if size + len(request.texts) > self._max_batch:
                break
            pending.requests.popleft()
            pending.texts -= len(request.texts)
            batch.append(request)
            size += len(request.texts)
        return batch

    async def _run_batch(self, kind: TextKind, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]

        def call(model: Embedder) -> Vectors:
            return model.embed(texts, kind=kind)

        try:
            vectors = await self._registry.run(self._name, call)
            if vectors.shape[0] != len(texts):
                raise RuntimeError(
                    f"embedder returned {vectors.shape[0]} rows for {len(texts)} texts"
                )
        except Exception as exc:  # noqa: BLE001 - delivered to every caller of the batch
            self.stats.failed_batches += 1
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for request in batch:
                request.future.cancel()
            raise
        finally:
            self._slots.release()
        self.stats.batches += 1
        self.stats.texts += len(texts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        if len(batch) == 1:
            if not batch[0].future.done():
                batch[0].future.set_result(vectors)
            return
        offset = 0
        for request in batch:
            end = offset + len(request.texts)
            if not request.future.done():
                # A copy: a view would keep the whole batch alive in a caller's cache.
                request.future.set_result(vectors[offset:end].copy())
            offset = end

    def _fail_pending(self, exc: BaseException) -> None:
        for pending in self._pending.values():
            while pending.requests:
                request = pending.requests.popleft()
                if not request.future.done():
                    request.future.set_exception(exc)
            pending.texts = 0

    async def close(self) -> None:
        """Refuse new requests, fail the queued ones, and wait for batches in flight."""
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        self._fail_pending(Unavailable("the embedding batcher is closed"))
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
