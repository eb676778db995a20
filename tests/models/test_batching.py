"""Micro-batching through the real registry, with a deterministic fake embedder.

The fake stands in for the external model only: its vectors are derived from a hash of
(kind, text), so every caller can check it got exactly its own rows back. Nothing here waits
for time: the model is held at a gate while the test lines up what arrives meanwhile, and
batch windows end when the test moves the event loop's clock (``loop_clock``).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Sequence

import numpy as np
import pytest

from ragd.errors import Unavailable
from ragd.models.base import Embedder, EmbedderInfo, TextKind, Vectors
from ragd.models.batching import EmbeddingBatcher
from ragd.models.registry import ModelRegistry
from ragd.settings import ModelsSettings
from tests.loop_clock import LoopClock
from tests.waiting import HANG_TIMEOUT, eventually, settle, thread_event, wait_event

DIM = 8


def expected(text: str, kind: TextKind = "passage") -> Vectors:
    digest = hashlib.sha256(f"{kind}\x00{text}".encode()).digest()
    vector = np.frombuffer(digest[: DIM * 4], dtype=np.uint32).astype(np.float32) - 2**31
    return (vector / np.linalg.norm(vector)).astype(np.float32)


class HashEmbedder:
    """Deterministic embedder; records every call; fails on texts containing "boom".

    With a ``gate``, every call waits (in its worker thread) until the test opens it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[int, TextKind]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()  # set when a call reaches the model
        self._lock = threading.Lock()

    @property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo("hash", DIM, 512, True, "test")

    def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        with self._lock:
            self.calls.append((len(texts), kind))
        self.entered.set()
        if self.gate is not None:
            wait_event(self.gate, "the model's gate")
        if any("boom" in text for text in texts):
            raise RuntimeError("the model choked")
        if not texts:
            return np.empty((0, DIM), dtype=np.float32)
        return np.stack([expected(text, kind) for text in texts])

    def embed_many(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        return self.embed(texts, kind=kind)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(text))]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]

    def close(self) -> None:
        return None


@pytest.fixture
def model() -> HashEmbedder:
    return HashEmbedder()


@pytest.fixture
async def registry(model: HashEmbedder) -> AsyncIterator[ModelRegistry]:
    assert isinstance(model, Embedder)
    reg = ModelRegistry(ModelsSettings(pool_workers=2), rss=lambda: 0)
    reg.register("embedder", lambda: model, kind="embedder", idle_ttl=0)
    yield reg
    await reg.close()


async def queued(
    batcher: EmbeddingBatcher, texts: Sequence[str], kind: TextKind = "passage"
) -> list[asyncio.Task[Vectors]]:
    """One caller per text, each with its text already queued in the batcher."""
    arrived = 0

    async def caller(text: str) -> Vectors:
        nonlocal arrived
        arrived += 1  # embed() queues the text in this same step, before its first await
        return await batcher.embed([text], kind)

    tasks = [asyncio.create_task(caller(text)) for text in texts]
    await eventually(lambda: arrived == len(texts), what=f"{len(texts)} callers queued")
    return tasks


@pytest.fixture
async def batcher(registry: ModelRegistry) -> AsyncIterator[EmbeddingBatcher]:
    b = EmbeddingBatcher(registry, "embedder", window_ms=20, max_batch=64)
    yield b
    await b.close()


async def test_concurrent_single_text_callers_share_model_calls(
    batcher: EmbeddingBatcher, model: HashEmbedder
) -> None:
    texts = [f"question number {i}" for i in range(50)]
    results = await asyncio.gather(*(batcher.embed([text], "query") for text in texts))
    assert len(model.calls) <= 2
    assert sum(size for size, _ in model.calls) == 50
    for text, rows in zip(texts, results, strict=True):
        assert rows.shape == (1, DIM)
        np.testing.assert_array_equal(rows[0], expected(text, "query"))
    assert batcher.stats.texts == 50 and batcher.stats.batches == len(model.calls)


async def test_requests_arriving_during_the_window_join_the_batch(
    registry: ModelRegistry, model: HashEmbedder, loop_clock: LoopClock
) -> None:
    batcher = EmbeddingBatcher(registry, "embedder", window_ms=60_000, max_batch=64)
    first = await queued(batcher, ["a"])
    await settle()  # the dispatcher holds "a" for its window
    later = await queued(batcher, ["b", "c"])
    await settle()
    assert model.calls == []  # the window is still open: nothing has left
    loop_clock.advance(60)  # the window of "a" ends
    results = await asyncio.gather(*first, *later)
    assert model.calls == [(3, "passage")]
    for text, rows in zip("abc", results, strict=True):
        np.testing.assert_array_equal(rows[0], expected(text))
    await batcher.close()


async def test_a_full_batch_leaves_without_waiting_for_the_window(
    registry: ModelRegistry, model: HashEmbedder
) -> None:
    # A window of an hour: only reaching max_batch can send the batch before the hang guard.
    batcher = EmbeddingBatcher(registry, "embedder", window_ms=3_600_000, max_batch=4)
    async with asyncio.timeout(HANG_TIMEOUT):
        await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(4)))
    assert model.calls == [(4, "passage")]
    await batcher.close()


async def test_a_large_caller_is_split_into_chunks_in_order(
    batcher: EmbeddingBatcher, model: HashEmbedder
) -> None:
    texts = [f"passage {i}" for i in range(150)]
    rows = await batcher.embed(texts)
    assert rows.shape == (150, DIM)
    np.testing.assert_array_equal(rows, np.stack([expected(text) for text in texts]))
    assert all(size <= 64 for size, _ in model.calls)
    assert sum(size for size, _ in model.calls) == 150


async def test_mixed_kinds_are_never_batched_together(
    batcher: EmbeddingBatcher, model: HashEmbedder
) -> None:
    jobs = []
    for i in range(20):
        kind: TextKind = "query" if i % 2 else "passage"
        jobs.append((f"text {i}", kind))
    results = await asyncio.gather(*(batcher.embed([text], kind) for text, kind in jobs))
    assert sorted(kind for _, kind in model.calls) == ["passage", "query"]
    assert all(size == 10 for size, _ in model.calls)
    for (text, kind), rows in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(rows[0], expected(text, kind))


async def test_window_zero_still_coalesces_what_is_queued(
    registry: ModelRegistry, model: HashEmbedder
) -> None:
    batcher = EmbeddingBatcher(registry, "embedder", window_ms=0, max_batch=64)
    results = await asyncio.gather(*(batcher.embed([f"t{i}"]) for i in range(10)))
    assert model.calls == [(10, "passage")]
    np.testing.assert_array_equal(results[7][0], expected("t7"))
    await batcher.close()


async def test_batches_grow_while_the_model_is_busy(
    registry: ModelRegistry, model: HashEmbedder
) -> None:
    model.gate = threading.Event()
    batcher = EmbeddingBatcher(registry, "embedder", window_ms=0, max_batch=64)
    first = asyncio.create_task(batcher.embed(["t0"]))
    await thread_event(model.entered, "the first batch reached the model")
    # 39 callers arrive while the model (one slot) is busy with the first batch ...
    rest = await queued(batcher, [f"t{i}" for i in range(1, 40)])
    model.gate.set()
    results = await asyncio.gather(first, *rest)
    # ... and leave together as the next batch.
    assert model.calls == [(1, "passage"), (39, "passage")]
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows[0], expected(f"t{i}"))
    await batcher.close()


async def test_an_error_reaches_every_caller_of_the_failed_batch_only(
    batcher: EmbeddingBatcher, model: HashEmbedder
) -> None:
    texts = ["fine", "boom", "also fine"]
    results = await asyncio.gather(
        *(batcher.embed([text]) for text in texts), return_exceptions=True
    )
    assert len(model.calls) == 1
    assert all(isinstance(result, RuntimeError) for result in results)
    assert batcher.stats.failed_batches == 1
    # The next batch works.
    rows = await batcher.embed(["fine"])
    np.testing.assert_array_equal(rows[0], expected("fine"))


async def test_cancelling_a_caller_in_flight_does_not_break_the_others(
    batcher: EmbeddingBatcher, model: HashEmbedder
) -> None:
    model.gate = threading.Event()
    tasks = [asyncio.create_task(batcher.embed([f"t{i}"])) for i in range(5)]
    await thread_event(model.entered, "the batch reached the model")
    tasks[2].cancel()
    model.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    for i in (0, 1, 3, 4):
        rows = results[i]
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows[0], expected(f"t{i}"))


async def test_cancelling_a_queued_caller_drops_its_texts(
    registry: ModelRegistry, model: HashEmbedder
) -> None:
    # A window far longer than the test: only a full batch (4 live texts) can leave.
    batcher = EmbeddingBatcher(registry, "embedder", window_ms=60_000, max_batch=4)
    tasks = await queued(batcher, ["t0", "t1", "t2"])
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    tasks += await queued(batcher, ["t3", "t4"])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert model.calls == [(4, "passage")]
    for i in (1, 2, 3, 4):
        rows = results[i]
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows[0], expected(f"t{i}"))
    await batcher.close()


async def test_empty_input(batcher: EmbeddingBatcher) -> None:
    rows = await batcher.embed([])
    assert rows.shape == (0, DIM)


async def test_close_leaves_no_task_behind(registry: ModelRegistry, model: HashEmbedder) -> None:
    model.gate = threading.Event()
    batcher = EmbeddingBatcher(registry, "embedder", window_ms=1, max_batch=2)
    in_flight = asyncio.create_task(batcher.embed(["a", "b"]))
    await thread_event(model.entered, "the first batch reached the model")
    [waiting] = await queued(batcher, ["c"])
    closing = asyncio.create_task(batcher.close())
    # Closing fails what is queued at once, and waits for the batch in flight.
    with pytest.raises(Unavailable, match="closed"):
        await waiting
    assert not closing.done() and not in_flight.done()
    model.gate.set()
    await closing

    rows = await in_flight  # the batch in flight finished normally
    assert rows.shape == (2, DIM)
    with pytest.raises(Unavailable, match="closed"):
        await batcher.embed(["d"])
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert others == []
