"""The model runtime facade: what services use to embed, rerank and extract keywords.

It owns the registry entries (embedder, keywords, optional reranker), the micro-batcher and
the caches, and registers them with the memory manager. Nothing loads here: the first call
that needs a model loads it (in a worker thread).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ragd.models.base import (
    Embedder,
    EmbedderInfo,
    Reranker,
    TextKind,
    TokenEmbedder,
    Vectors,
)
from ragd.models.batching import EmbeddingBatcher
from ragd.models.keywords import Keyword, KeywordExtractor
from ragd.models.registry import ModelHandle, ModelRegistry
from ragd.ops.cache import ByteLRUCache
from ragd.ops.memory import MemoryManager
from ragd.settings import ModelsSettings

logger = logging.getLogger(__name__)

EMBEDDER = "embedder"
RERANKER = "reranker"
KEYWORDS = "keywords"
MIB = 2**20


def embedder_concurrency(settings: ModelsSettings, cores: int | None = None) -> int:
    """Embedder calls that run at once: one per core its intra-op threads leave free (with
    the default single thread, one per core up to the inference pool's size), so ingestion
    uses every core; one when each call already uses every core (``inference_threads=0``)."""
    if settings.inference_threads == 0:
        return 1
    available = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, min(settings.pool_workers, available // settings.inference_threads))


class ModelRuntime:
    """Embedding (batched, query-cached), keyword extraction and reranking."""

    def __init__(
        self,
        settings: ModelsSettings,
        registry: ModelRegistry,
        *,
        embedder_loader: Callable[[], Embedder],
        embedder_name: str,
        reranker_loader: Callable[[], Reranker] | None,
        query_cache_mb: float,
        keyword_cache_mb: float,
        cache_ttl_seconds: float,
        phrase_cache_mb: float = 16.0,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.embedder_name = embedder_name
        self.embedder_info: EmbedderInfo | None = None

        def load_embedder() -> Embedder:
            embedder = embedder_loader()
            self.embedder_info = embedder.info
            return embedder

        ttl = settings.idle_ttl_seconds
        self._embedder: ModelHandle[Embedder] = registry.register(
            EMBEDDER, load_embedder, kind="embedder", idle_ttl=ttl,
            concurrency=embedder_concurrency(settings),
        )
        self._keywords: ModelHandle[KeywordExtractor] = registry.register(
            KEYWORDS, lambda: KeywordExtractor.from_settings(settings), kind="keywords",
            idle_ttl=ttl,
        )
        self._reranker: ModelHandle[Reranker] | None = None
        if reranker_loader is not None:
            self._reranker = registry.register(
                RERANKER, reranker_loader, kind="reranker", idle_ttl=ttl
            )
        self.batcher = EmbeddingBatcher(
            registry, EMBEDDER, window_ms=settings.batch_window_ms, max_batch=settings.max_batch
        )
        self.query_cache: ByteLRUCache[str, Vectors] = ByteLRUCache(
            "query_embeddings", int(query_cache_mb * MIB), ttl=cache_ttl_seconds
        )
        # Candidate phrases recur across the chunks of a document (and across documents):
        # their vectors are cached so keyword extraction embeds each phrase once.
        self.phrase_cache: ByteLRUCache[str, Vectors] = ByteLRUCache(
            "keyword_phrases", int(phrase_cache_mb * MIB), ttl=cache_ttl_seconds
        )
        self.keyword_cache: ByteLRUCache[str, list[Keyword]] = ByteLRUCache(
            "keywords", int(keyword_cache_mb * MIB), ttl=cache_ttl_seconds,
            size=lambda items: 64 + sum(96 + len(item.keyword) for item in items),
        )

    @property
    def reranker_configured(self) -> bool:
        return self._reranker is not None

    def attach(self, memory: MemoryManager) -> None:
        """Let the memory manager unload these models and trim these caches."""
        memory.register_registry(self.registry)
        memory.register_cache(self.query_cache)
        memory.register_cache(self.keyword_cache)
        memory.register_cache(self.phrase_cache)

    async def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Embed texts through the micro-batcher (concurrent callers share batches)."""
        return await self.batcher.embed(list(texts), kind)

    async def embed_query(self, text: str) -> Vectors:
        """One query vector, ``(dimension,)``, served from the query cache when possible."""
        key = f"{self.embedder_name}\x00{text}"
        cached = self.query_cache.get(key)
        if cached is not None:
            return cached
        # Straight to the model, not through the batcher: a search's latency is what users
        # feel, a batch window would add to it, and the default int8 graph embeds one text
        # per call anyway. The registry still bounds how many calls run at once.
        vectors: Vectors = await self._embedder.run(
            lambda model: model.embed([text], kind="query")
        )
        vector: Vectors = vectors[0]
        self.query_cache.put(key, vector)
        return vector

    async def token_spans(self) -> Callable[[str], list[tuple[int, int]]]:
        """The loaded embedder's tokenizer as ``text -> [(start, end)]`` (for chunking)."""
        embedder = await self._embedder.get()
        return embedder.token_spans

    async def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the embedder reads of each text as a passage (prefix and special tokens
        included, at most its ``max_tokens``), counted in the registry's pool: tokenising
        is proportional to the input, so it never runs on the event loop."""
        items = list(texts)

        def count(model: Embedder) -> list[int]:
            limit = model.info.max_tokens
            return [min(tokens, limit) for tokens in model.count_tokens(items)]

        return await self._embedder.run(count)

    async def embedder_details(self) -> EmbedderInfo:
        """The embedder's name, dimension and token limit (loads it if needed)."""
        embedder = await self._embedder.get()
        return embedder.info

    async def keywords(
        self, text: str, *, top_n: int | None = None, vector: Vectors | None = None
    ) -> list[Keyword]:
        """KeyBERT keywords of ``text``, embedded with the one loaded embedder.

        ``vector`` is the text's embedding when the caller already has it (ingestion embeds
        every chunk anyway): candidates are then ranked against it instead of embedding the
        text again.
        """
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"{self.embedder_name}:{top_n}:{vector is not None}:{digest}"
        cached = self.keyword_cache.get(key)
        if cached is not None:
            return cached
        extractor = await self._keywords.get()

        def extract(embedder: Embedder) -> list[Keyword]:
            return extractor.extract(
                text, lambda batch: self._embed_phrases(embedder, batch, vector), top_n=top_n
            )

        result = await self._embedder.run(extract)
        self.keyword_cache.put(key, result)
        return result

    async def embed_with_keywords(
        self, texts: Sequence[str], keyword_texts: Sequence[str], *, top_n: int | None = None
    ) -> tuple[Vectors, list[list[Keyword]], float]:
        """Embed passages and take keywords of each from the same forward pass.

        ``keyword_texts[i]`` is the part of ``texts[i]`` that keywords come from, at its end
        (a chunk's text after its heading path). With an embedder that outputs token vectors
        the model runs once per text (:meth:`KeywordExtractor.extract_from_tokens`); with any
        other, the texts go through the batcher and each gets :meth:`keywords`. Returns the
        vectors, the keywords and the seconds spent on keywords alone.
        """
        items, parts = list(texts), list(keyword_texts)
        if len(items) != len(parts):
            raise ValueError("one keyword text per text")
        extractor = await self._keywords.get()
        embedder = await self._embedder.get()
        if not (isinstance(embedder, TokenEmbedder) and embedder.token_vectors):
            vectors = await self.embed(items)
            started = time.perf_counter()
            found = [
                await self.keywords(part, top_n=top_n, vector=vectors[index])
                for index, part in enumerate(parts)
            ]
            return vectors, found, time.perf_counter() - started

        def run(model: Embedder) -> tuple[Vectors, list[list[Keyword]], float]:
            assert isinstance(model, TokenEmbedder)  # noqa: S101 - checked above
            forward = model.embed_tokens(items, kind="passage")
            started = time.perf_counter()
            keywords = [
                extractor.extract_from_tokens(
                    part, passes, offset=len(text) - len(part), top_n=top_n
                )
                for text, part, passes in zip(items, parts, forward, strict=True)
            ]
            spent = time.perf_counter() - started
            if not forward:
                return np.empty((0, model.info.dimension), dtype=np.float32), keywords, spent
            return np.stack([passes.vector for passes in forward]), keywords, spent

        return await self._embedder.run(run)

    async def embed_sentences(self, texts: Sequence[str]) -> Vectors:
        """Vectors of short passages that are only *ranked* (the extractive provider's
        candidate sentences): from the phrase cache, the rest in one batched call. Batching
        costs the last digits on per-batch-quantised graphs and is ~20x faster than one text
        per call; chunks recur across questions, so their sentences are mostly cached."""
        items = list(texts)
        if not items:
            info = await self.embedder_details()
            return np.empty((0, info.dimension), dtype=np.float32)
        return await self._embedder.run(
            lambda model: np.stack(self._cached_many(model, items, f"{self.embedder_name}\x01"))
        )

    def _embed_phrases(
        self, embedder: Embedder, texts: list[str], vector: Vectors | None
    ) -> Vectors:
        """Embed ``[document, *phrases]``: the document unless its ``vector`` is given, the
        phrases from the phrase cache or in batches."""
        document = (
            embedder.embed(texts[:1], kind="passage")[0]
            if vector is None
            else np.asarray(vector, dtype=np.float32)
        )
        phrases = self._cached_many(embedder, texts[1:], f"{self.embedder_name}\x00")
        return np.stack([document, *phrases])

    def _cached_many(self, embedder: Embedder, texts: list[str], prefix: str) -> list[Vectors]:
        """One vector per text: from the phrase cache (keys ``prefix + text``), the missing
        ones in batches (``embed_many``: texts only ranked against each other, where batching
        short texts is much faster on per-batch-quantised graphs) and then cached."""
        rows: list[Vectors | None] = [self.phrase_cache.get(prefix + text) for text in texts]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            fresh = embedder.embed_many([texts[i] for i in missing], kind="passage")
            for position, i in enumerate(missing):
                rows[i] = fresh[position]
                self.phrase_cache.put(prefix + texts[i], fresh[position])
        return [row for row in rows if row is not None]

    async def rerank(self, query: str, passages: Sequence[str]) -> np.ndarray[Any, Any] | None:
        """Cross-encoder scores in input order, or None when no reranker is configured."""
        if self._reranker is None:
            return None
        items = list(passages)
        scores: np.ndarray[Any, Any] = await self._reranker.run(
            lambda model: model.score(query, items)
        )
        return scores

    async def close(self) -> None:
        await self.batcher.close()
        await self.registry.close()
