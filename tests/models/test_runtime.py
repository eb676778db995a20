"""The model runtime with the real embedder: lazy single-flight load, no work on the event
loop, unload and reload, query cache."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ragd.container import build_runtime
from ragd.models.keywords import KeywordExtractor
from ragd.models.runtime import ModelRuntime
from ragd.ops.metrics import Metrics
from tests.conftest import make_settings
from tests.waiting import eventually, wait_event


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def runtime(tmp_path: Path, metrics: Metrics) -> AsyncIterator[ModelRuntime]:
    built = build_runtime(make_settings(tmp_path), metrics)
    yield built
    await built.close()


async def test_nothing_loads_until_first_use_then_exactly_once(
    runtime: ModelRuntime, metrics: Metrics
) -> None:
    assert runtime.registry.state("embedder") == "not_loaded"
    texts = [f"question number {i} about debian packages" for i in range(20)]
    results = await asyncio.gather(*(runtime.embed([text]) for text in texts))
    stats = {s.name: s for s in runtime.registry.stats()}["embedder"]
    assert stats.state == "loaded"
    assert stats.failures == 0
    loads = metrics.registry.get_sample_value(
        "ragd_model_loads_total", {"model": "embedder", "outcome": "ok"}
    )
    assert loads == 1.0
    for result in results:
        assert result.shape == (1, 384)
        assert abs(float(np.linalg.norm(result[0])) - 1.0) < 1e-4


async def test_large_batch_does_not_block_the_event_loop(runtime: ModelRuntime) -> None:
    """The real model computes a large batch in worker threads while the loop runs on.

    Each model call, once it has computed its rows, waits until a coroutine on the event loop
    has seen it in progress: on the loop's own thread it would wait for itself, and the hang
    guard would fail the test. (How late the loop wakes up meanwhile is measured by
    ``bench/loop_lag.py``.)
    """
    await runtime.embed(["warm up"])  # load first: this test is about inference
    texts = [f"passage {i}: " + "the apt package manager resolves dependencies " * 12
             for i in range(256)]
    embedder = await runtime._embedder.get()
    original = embedder.embed
    in_model = threading.Event()
    loop_ran = threading.Event()
    calls: list[tuple[int, int]] = []  # (texts, thread) per model call

    def held(batch: list[str], kind: str = "passage") -> np.ndarray:  # type: ignore[type-arg]
        vectors = original(batch, kind=kind)  # type: ignore[arg-type]
        calls.append((len(batch), threading.get_ident()))
        in_model.set()
        wait_event(loop_ran, "a coroutine on the event loop during inference")
        return vectors

    async def on_the_loop() -> None:
        await eventually(in_model.is_set, what="inference started")
        loop_ran.set()

    embedder.embed = held  # type: ignore[method-assign,assignment]
    try:
        witness = asyncio.create_task(on_the_loop())
        vectors = await runtime.embed(texts)
        await witness
    finally:
        embedder.embed = original  # type: ignore[method-assign]
    assert vectors.shape == (256, 384)
    assert sum(size for size, _ in calls) == 256  # every text went through the real model
    assert threading.get_ident() not in {thread for _, thread in calls}


async def test_unload_frees_and_next_use_reloads(runtime: ModelRuntime) -> None:
    first = await runtime.embed(["reload me"])
    result = await runtime.registry.unload("embedder", "test")
    assert result.unloaded
    assert runtime.registry.state("embedder") == "not_loaded"
    second = await runtime.embed(["reload me"])
    assert runtime.registry.state("embedder") == "loaded"
    assert float(first[0] @ second[0]) > 0.9999


async def test_query_embeddings_are_cached(runtime: ModelRuntime) -> None:
    one = await runtime.embed_query("how do I upgrade debian")
    two = await runtime.embed_query("how do I upgrade debian")
    assert np.array_equal(one, two)
    stats = runtime.query_cache.stats()
    assert stats.hits == 1 and stats.misses == 1


async def test_sentence_vectors_are_batched_cached_and_close_to_exact(
    runtime: ModelRuntime,
) -> None:
    sentences = ["Basalt columns form as lava cools.", "Glaciers carve fjords.",
                 "Cranes unload ships at dawn."]
    first = await runtime.embed_sentences(sentences)
    exact = await runtime.embed(sentences)
    assert first.shape == (3, 384)
    # Batched on the per-batch-quantised graph: the same ranking signal, not the same digits.
    assert all(float(a @ b) > 0.9 for a, b in zip(first, exact, strict=True))
    before = runtime.phrase_cache.stats()
    again = await runtime.embed_sentences(sentences[::-1])
    after = runtime.phrase_cache.stats()
    assert np.array_equal(again, first[::-1])
    assert after.hits - before.hits == 3 and after.misses == before.misses
    assert (await runtime.embed_sentences([])).shape == (0, 384)


async def test_keyword_phrases_are_embedded_once_and_results_unchanged(
    runtime: ModelRuntime,
) -> None:
    first = "The apt package manager installs Debian packages and resolves dependencies."
    second = "Debian packages are installed by the apt package manager from mirrors."
    extractor = KeywordExtractor.from_settings(runtime.settings)
    uncached = await runtime.keywords(first, top_n=3)
    runtime.keyword_cache.clear()
    runtime.phrase_cache.clear()
    texts: list[list[str]] = []  # whole texts embedded one by one
    phrases: list[list[str]] = []  # candidate phrases embedded in batches
    embedder = await runtime._embedder.get()
    original, original_many = embedder.embed, embedder.embed_many

    def counting(batch: list[str], kind: str = "passage") -> np.ndarray:  # type: ignore[type-arg]
        texts.append(list(batch))
        return original(batch, kind=kind)  # type: ignore[arg-type]

    def counting_many(batch: list[str], kind: str = "passage") -> np.ndarray:  # type: ignore[type-arg]
        phrases.append(list(batch))
        return original_many(batch, kind=kind)  # type: ignore[arg-type]

    embedder.embed = counting  # type: ignore[method-assign,assignment]
    embedder.embed_many = counting_many  # type: ignore[method-assign,assignment]
    try:
        again = await runtime.keywords(first, top_n=3)
        await runtime.keywords(second, top_n=3)
        vector = (await runtime.embed([second]))[0]
        texts.clear()
        runtime.keyword_cache.clear()
        with_vector = await runtime.keywords(second, top_n=3, vector=vector)
    finally:
        embedder.embed = original  # type: ignore[method-assign]
        embedder.embed_many = original_many  # type: ignore[method-assign]
    # Same keywords and scores as before the phrase cache was emptied.
    assert [(k.keyword, round(k.score, 4)) for k in again] == [
        (k.keyword, round(k.score, 4)) for k in uncached
    ]
    # The second text shares phrases with the first: only its new phrases were embedded.
    new_phrases = set(extractor.candidates(second)) - set(extractor.candidates(first))
    assert set(phrases[1]) == new_phrases
    assert len(phrases[1]) < len(extractor.candidates(second))
    # Given the text's vector, the text itself is not embedded again.
    assert texts == [] and with_vector


async def test_ingestion_keywords_come_from_the_chunks_own_forward_pass(
    runtime: ModelRuntime,
) -> None:
    """One model call per chunk: the chunk's vector (exactly what ``embed`` gives) and its
    keywords, phrases of the chunk's text, ranked from the same forward pass."""
    heading = "Package management\n\n"
    text = ("The apt package manager installs Debian packages and resolves their "
            "dependencies from the configured mirrors.")
    embedder = await runtime._embedder.get()
    calls: list[list[str]] = []
    original, original_many = embedder.embed_tokens, embedder.embed_many  # type: ignore[attr-defined]

    def counting(batch: list[str], kind: str = "passage") -> list[object]:
        calls.append(list(batch))
        return original(batch, kind=kind)  # type: ignore[no-any-return]

    def refused(batch: list[str], kind: str = "passage") -> np.ndarray:  # type: ignore[type-arg]
        raise AssertionError("keyword candidates were embedded on their own")

    embedder.embed_tokens = counting  # type: ignore[attr-defined]
    embedder.embed_many = refused  # type: ignore[method-assign,assignment]
    try:
        vectors, keywords, spent = await runtime.embed_with_keywords(
            [heading + text, "tiny"], [text, "tiny"], top_n=4
        )
    finally:
        embedder.embed_tokens = original  # type: ignore[attr-defined]
        embedder.embed_many = original_many  # type: ignore[method-assign]
    assert calls == [[heading + text, "tiny"]]
    np.testing.assert_allclose(vectors, await runtime.embed([heading + text, "tiny"]),
                               rtol=0, atol=1e-6)
    assert 1 <= len(keywords[0]) <= 4 and spent >= 0
    lowered = text.lower()
    for keyword in keywords[0]:
        assert keyword.keyword in lowered  # a phrase of the text, never of the heading
        assert -1.0 <= keyword.score <= 1.0
    assert "management" not in {k.keyword for k in keywords[0]}
    assert [k.keyword for k in keywords[1]] == ["tiny"]


def test_the_embedder_runs_one_call_per_free_core() -> None:
    from ragd.models.runtime import embedder_concurrency
    from ragd.settings import ModelsSettings

    assert embedder_concurrency(ModelsSettings(), cores=2) == 2
    assert embedder_concurrency(ModelsSettings(), cores=1) == 1
    assert embedder_concurrency(ModelsSettings(pool_workers=8), cores=4) == 4
    assert embedder_concurrency(ModelsSettings(inference_threads=2), cores=4) == 2
    assert embedder_concurrency(ModelsSettings(inference_threads=0), cores=8) == 1
