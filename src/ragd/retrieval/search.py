"""Hybrid search over one tenant's partitions: BM25 + dense, fused, optionally reranked.

Tenant isolation is structural: the service only ever opens the caller's partitions and reads
chunk rows with the caller's ``tenant_id``. Collection and document restrictions are applied
inside the indexes (their ``Scope``). Metadata filters always run on the documents' metadata
after retrieval; a backend that also applies them in its legs (``filters_metadata``: the
PostgreSQL one, in SQL) gets them in the scope, and one that does not (the embedded one) is
asked for a deeper candidate list, so that filtering does not starve the result.

Nothing asked for is dropped quietly: a restriction naming a collection or document the
tenant does not have is :class:`~ragd.errors.NotFound` (the same error whether the id is
unknown or another tenant's, so it reveals nothing), and ``rerank: true`` without a
reranker is :class:`~ragd.errors.InvalidInput` rather than an unreranked answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ragd.errors import InvalidInput, NotFound
from ragd.index.base import Hit, Scope, SearchBackend
from ragd.models.runtime import ModelRuntime
from ragd.retrieval.filters import compile_filter
from ragd.retrieval.fusion import DEFAULT_METHOD, DEFAULT_PARAMS, Fused, fuse
from ragd.stores.catalog import Catalog, Document, StoredChunk

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "lexical")
#: Told the mode and the seconds of every search that answered (the latency histogram).
SearchObserver = Callable[[str, float], None]
#: Candidates taken from each ranker (the fusion sees at most this many from each).
CANDIDATES = 100
#: With metadata filters, look this many times deeper before filtering.
FILTER_DEPTH = 4
#: Taken off the score of a chunk that continues a section (the chunk before it in its
#: document has the same heading path), in the hybrid and dense modes. A section's opening
#: carries its topic (a FAQ entry's question, a chapter's first paragraph); its later chunks
#: answer details and, ranked on their own, push other documents' openings down. Chosen by
#: ``bench/doc_ranking.py`` (two-fold cross-validation on the dev sets, on corpus nDCG@10 and
#: answer-passage MRR@10 together; both folds pick 0.1): hybrid nDCG@10 0.741 -> 0.786 and
#: 0.521 -> 0.562, answer passages' MRR@10 0.763 -> 0.777 and 0.698 -> 0.720.
CONTINUATION_PENALTY = 0.1
#: Fused candidates given to the cross-encoder.
RERANK_CANDIDATES = 30
MAX_TOP_K = 100
MAX_QUERY_CHARS = 4000
_SPECIAL_TOKENS = 2
#: Queries up to this long are tokenised on the event loop (~50 us), longer ones in a thread.
INLINE_TOKENIZE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    top_k: int = 10
    mode: Mode = "hybrid"
    collection_ids: Sequence[str] | None = None
    document_ids: Sequence[str] | None = None
    filters: Any = None
    rerank: bool | None = None  # None: on when a reranker is configured; True: required
    explain: bool = False


@dataclass(frozen=True, slots=True)
class SearchHit:
    chunk: StoredChunk
    document: Document
    score: float
    explain: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class SearchResult:
    hits: list[SearchHit]
    timings_ms: dict[str, float]
    query_truncated: bool
    query_tokens: int | None
    fusion: str
    reranked: bool
    warnings: list[str] = field(default_factory=list)


class SearchService:
    """``search(tenant_id, request)``: the one retrieval path (API, chat, eval);
    ``on_search`` is told each answered search's mode and seconds."""

    def __init__(
        self,
        catalog: Catalog,
        indexes: SearchBackend,
        runtime: ModelRuntime,
        *,
        fusion: str = DEFAULT_METHOD,
        fusion_params: dict[str, Any] | None = None,
        on_search: SearchObserver | None = None,
        continuation_penalty: float = CONTINUATION_PENALTY,
    ) -> None:
        self._catalog = catalog
        self._continuation_penalty = continuation_penalty
        self._on_search = on_search
        self._indexes = indexes
        self._runtime = runtime
        self._fusion = fusion
        self._fusion_params = dict(DEFAULT_PARAMS if fusion_params is None else fusion_params)
        if fusion != DEFAULT_METHOD and fusion_params is None:
            self._fusion_params = {}

    async def following(self, tenant_id: str, chunk: StoredChunk, count: int) -> list[StoredChunk]:
        """The ``count`` chunks after ``chunk`` in its document (the active version; fewer at
        the document's end), so an answer can read a section on past a chunk's end."""
        found = await self._catalog.list_chunks(
            tenant_id, chunk.document_id, after=chunk.ordinal, limit=count
        )
        return [c for c in found if c.version == chunk.version]

    async def search(self, tenant_id: str, request: SearchRequest) -> SearchResult:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        query = request.query.strip()
        if not query:
            raise InvalidInput("the query is empty", code="empty_query")
        if len(query) > MAX_QUERY_CHARS:
            query = query[:MAX_QUERY_CHARS]
        if request.mode not in MODES:
            raise InvalidInput(f"unknown mode; valid: {', '.join(MODES)}", code="invalid_mode")
        if not 1 <= request.top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be between 1 and {MAX_TOP_K}", code="invalid_top_k")
        predicate = compile_filter(request.filters)
        if request.rerank and not self._runtime.reranker_configured:
            raise InvalidInput(
                "rerank is true but no reranker is configured: set RAGD_MODELS__RERANKER=onnx "
                "and RAGD_MODELS__RERANKER_PATH to a cross-encoder directory (tokenizer.json "
                "and model.onnx), or leave rerank out to rerank only when one is configured",
                code="reranker_not_configured",
            )
        await self._check_scope(tenant_id, request)
        scope = Scope(
            collection_ids=None if request.collection_ids is None else set(request.collection_ids),
            document_ids=None if request.document_ids is None else set(request.document_ids),
            metadata=request.filters if predicate is not None else None,
        )
        use_dense = request.mode in ("hybrid", "dense")
        use_lexical = request.mode in ("hybrid", "lexical")
        want_rerank = (
            self._runtime.reranker_configured if request.rerank is None else request.rerank
        )
        deeper = predicate is not None and not self._indexes.filters_metadata
        depth = CANDIDATES * (FILTER_DEPTH if deeper else 1)

        truncated, tokens = False, None

        async def lexical() -> list[Hit]:
            if not use_lexical:
                return []
            mark = time.perf_counter()
            found = await self._indexes.lexical_search(tenant_id, query, depth, scope)
            timings["lexical"] = _ms(mark)
            return found

        async def dense() -> list[Hit]:
            nonlocal truncated, tokens
            if not use_dense:
                return []
            mark = time.perf_counter()
            query_for_model, truncated, tokens = await self._fit(query)
            vector = await self._runtime.embed_query(query_for_model)
            timings["embed"] = _ms(mark)
            mark = time.perf_counter()
            found = await self._indexes.dense_search(tenant_id, vector, depth, scope)
            timings["dense"] = _ms(mark)
            return found

        # BM25 does not need the query vector: it runs while the query is embedded.
        lexical_hits, dense_hits = await asyncio.gather(lexical(), dense())
        mark = time.perf_counter()
        method = self._fusion if request.mode == "hybrid" else request.mode
        fused = _fuse(request.mode, self._fusion, self._fusion_params, lexical_hits, dense_hits)
        timings["fuse"] = _ms(mark)
        sections = request.mode != "lexical" and self._continuation_penalty > 0 and bool(fused)
        continuing: set[int] = set()
        if sections:
            # BM25 scores have no fixed scale, so the penalty applies where cosine sets it.
            mark = time.perf_counter()
            fused = fused[:depth]
            reach = _within_reach(fused, request, want_rerank, self._continuation_penalty)
            continuing = await self._indexes.continuing(tenant_id, [f.key for f in reach])
            fused = _demote(fused, continuing, self._continuation_penalty)
            timings["sections"] = _ms(mark)

        mark = time.perf_counter()
        wanted = max(request.top_k, RERANK_CANDIDATES if want_rerank else 0)
        candidates = await self._load(tenant_id, fused[:depth], predicate, wanted)
        timings["fetch"] = _ms(mark)

        reranked = False
        rerank_scores: dict[int, tuple[int, float]] = {}
        if want_rerank and candidates:
            mark = time.perf_counter()
            head = candidates[:RERANK_CANDIDATES]
            scores = await self._runtime.rerank(query, [c[1].text for c in head])
            if scores is not None:
                order = sorted(range(len(head)), key=lambda i: (-float(scores[i]), i))
                for position, i in enumerate(order, start=1):
                    rerank_scores[head[i][1].key] = (position, float(scores[i]))
                candidates = [head[i] for i in order] + candidates[RERANK_CANDIDATES:]
                reranked = True
            timings["rerank"] = _ms(mark)

        hits = []
        for position, (item, chunk, document) in enumerate(candidates[: request.top_k], 1):
            score = rerank_scores[chunk.key][1] if chunk.key in rerank_scores else item.score
            explain = None
            if request.explain:
                explain = _explain(item, method, position, rerank_scores.get(chunk.key),
                                   reranked, self._runtime.reranker_configured, want_rerank)
                if sections:
                    continues = chunk.key in continuing
                    explain["section"] = {
                        "continues": continues,
                        "penalty": self._continuation_penalty if continues else 0.0,
                    }
            hits.append(SearchHit(chunk=chunk, document=document, score=score, explain=explain))
        timings["total"] = _ms(started)
        if self._on_search is not None:
            self._on_search(request.mode, time.perf_counter() - started)
        return SearchResult(
            hits=hits, timings_ms=timings, query_truncated=truncated, query_tokens=tokens,
            fusion=method, reranked=reranked,
        )

    async def _check_scope(self, tenant_id: str, request: SearchRequest) -> None:
        """NotFound for the first id of the restriction that the tenant does not have."""
        collection_ids = list(request.collection_ids or ())
        document_ids = list(request.document_ids or ())
        if not collection_ids and not document_ids:
            return
        collections, documents = await self._catalog.existing_ids(
            tenant_id, collection_ids=collection_ids, document_ids=document_ids
        )
        # The position, never the id: error messages do not echo input.
        for index, collection_id in enumerate(collection_ids):
            if collection_id not in collections:
                raise NotFound(f"collection_ids[{index}]: collection not found",
                               code="collection_not_found")
        for index, document_id in enumerate(document_ids):
            if document_id not in documents:
                raise NotFound(f"document_ids[{index}]: document not found",
                               code="document_not_found")

    async def _fit(self, query: str) -> tuple[str, bool, int]:
        """The query cut to what the embedder reads, whether it was cut, and its tokens."""
        info = await self._runtime.embedder_details()
        tokenize = await self._runtime.token_spans()
        # A short query tokenises in microseconds: a thread hop would cost more than it saves.
        spans = (
            tokenize(query) if len(query) <= INLINE_TOKENIZE_CHARS
            else await asyncio.to_thread(tokenize, query)
        )
        limit = max(1, info.max_tokens - _SPECIAL_TOKENS)
        if len(spans) <= limit:
            return query, False, len(spans)
        return query[: spans[limit - 1][1]], True, len(spans)

    async def _load(
        self, tenant_id: str, fused: list[Fused], predicate: Any, wanted: int
    ) -> list[tuple[Fused, StoredChunk, Document]]:
        """Chunk rows and documents for the fused keys, in fused order, until ``wanted``
        survive: chunks that no longer exist (deleted meanwhile) and documents failing the
        filter are dropped. Rows are read in windows (loading all 100 candidates' rows for
        10 results was most of a search's time), one query per window."""
        out: list[tuple[Fused, StoredChunk, Document]] = []
        start = 0
        window = wanted + max(4, wanted // 2) if predicate is None else wanted * FILTER_DEPTH
        while start < len(fused) and len(out) < wanted:
            head = fused[start : start + window]
            start += len(head)
            rows = await self._catalog.searchable_chunks(tenant_id, [f.key for f in head])
            for item in head:
                row = rows.get(item.key)
                if row is None:
                    continue
                chunk, document = row
                if predicate is not None and not predicate(document.metadata):
                    continue
                out.append((item, chunk, document))
            window = max(window, wanted) * 2
        return out


#: Candidates beyond those a search shows that are kept within reach of its last place (some
#: may be dropped by the fetch: deleted meanwhile, or failing a metadata filter).
REACH_MARGIN = 10


def _within_reach(
    fused: list[Fused], request: SearchRequest, rerank: bool, penalty: float
) -> list[Fused]:
    """The candidates whose place the penalty can change: a penalty only lowers scores, so
    nothing more than ``penalty`` below the last place that can be shown (with a margin for
    candidates the fetch drops) can rise into view, and its section need not be read."""
    shown = max(request.top_k, RERANK_CANDIDATES if rerank else 0) * 2 + REACH_MARGIN
    if request.filters is not None or len(fused) <= shown:
        return fused
    floor = fused[shown - 1].score - penalty
    return [item for item in fused if item.score >= floor]


def _demote(fused: list[Fused], continuing: set[int], penalty: float) -> list[Fused]:
    """``fused`` with ``penalty`` taken off the keys in ``continuing``, best first (ties
    keep their order)."""
    adjusted = [item._replace(score=item.score - penalty) if item.key in continuing else item
                for item in fused]
    return sorted(adjusted, key=lambda item: -item.score)


def _fuse(
    mode: Mode, method: str, params: dict[str, Any], lexical: list[Hit], dense: list[Hit]
) -> list[Fused]:
    lex = [(hit.key, hit.score) for hit in lexical]
    den = [(hit.key, hit.score) for hit in dense]
    if mode == "hybrid":
        return fuse(method, lex, den, **params)
    # A single ranker: its own order and score, in the same record shape.
    if mode == "lexical":
        return [Fused(key, score, rank, score, None, None, "lexical")
                for rank, (key, score) in enumerate(lex, start=1)]
    return [Fused(key, score, None, None, rank, score, "dense")
            for rank, (key, score) in enumerate(den, start=1)]


def _explain(
    item: Fused, method: str, position: int, rerank: tuple[int, float] | None,
    reranked: bool, configured: bool, wanted: bool,
) -> dict[str, Any]:
    if reranked and rerank is not None:
        rerank_info: dict[str, Any] = {"rank": rerank[0], "score": rerank[1]}
        placed_by = "rerank"
    else:
        reason = (
            "no reranker is configured" if not configured
            else "not requested" if not wanted
            else "outside the reranked candidates"
        )
        rerank_info = {"skipped": reason}
        placed_by = "fusion" if method not in ("lexical", "dense") else method
    return {
        "lexical": None if item.lexical_rank is None
        else {"rank": item.lexical_rank, "score": item.lexical_score},
        "dense": None if item.dense_rank is None
        else {"rank": item.dense_rank, "score": item.dense_score},
        "fused": {"score": item.score, "method": method},
        "rerank": rerank_info,
        "found_by": item.source,
        "placed_by": placed_by,
        "position": position,
    }


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
