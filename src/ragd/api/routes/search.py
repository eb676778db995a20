"""``POST /api/v1/search``: hybrid retrieval over the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ragd.api.deps import CurrentPrincipal, SearchDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Filters, Identifier, Input, NonBlank, WholeNumber
from ragd.api.payloads import EXAMPLE_COLLECTION_ID
from ragd.api.routing import ApiRoute
from ragd.retrieval.search import MAX_QUERY_CHARS, MAX_TOP_K, SearchRequest

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES, route_class=ApiRoute)


class SearchIn(Input):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"query": "How long do customers have to return an item?",
         "collection_ids": [EXAMPLE_COLLECTION_ID], "filters": {"team": "support"}, "top_k": 5},
        {"query": "refund original payment method", "mode": "lexical", "explain": True},
    ]})

    query: Annotated[str, NonBlank] = Field(
        min_length=1, max_length=4 * MAX_QUERY_CHARS,
        description=f"What to look for, in your own words; not blank. Past {MAX_QUERY_CHARS} "
        "characters, or the embedding model's token limit, it is cut (query_truncated).",
    )
    collection_ids: list[Identifier] | None = Field(
        default=None, max_length=100,
        description="Search only these collections. Null or absent: all of the tenant's.",
    )
    document_ids: list[Identifier] | None = Field(
        default=None, max_length=1000,
        description="Search only these documents. Null or absent: no such restriction.",
    )
    filters: Filters | None = Field(
        default=None,
        description="Conditions on the documents' metadata, e.g. {\"team\": \"support\"} or "
        "{\"year\": {\"gte\": 2024}}.",
    )
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), WholeNumber] = Field(
        default=10, description="How many results to return at most."
    )
    mode: Literal["hybrid", "dense", "lexical"] = Field(
        default="hybrid",
        description="hybrid: keywords (BM25) and meaning (embeddings), fused; dense: meaning "
        "only; lexical: keywords only.",
    )
    rerank: bool | None = Field(
        default=None,
        description="Reorder the best candidates with the cross-encoder reranker. Null or "
        "absent: when one is configured.",
    )
    explain: bool = Field(
        default=False,
        description="Add to each hit what each stage scored and which stage placed it.",
    )


class SearchHitOut(BaseModel):
    chunk_id: str = Field(description="The matching chunk (a passage of a document).")
    document_id: str = Field(description="The document it comes from.")
    collection_id: str = Field(description="That document's collection.")
    title: str = Field(description="The document's title.")
    heading_path: list[str] = Field(description="The headings the passage sits under.")
    page: int | None = Field(description="The page it starts on, for paged formats.")
    page_end: int | None = Field(description="The page it ends on.")
    text: str = Field(description="The passage.")
    score: float = Field(description="Its score; higher is better (comparable within one "
                         "response only).")
    keywords: list[dict[str, Any]] = Field(description="Key phrases of the passage.")
    metadata: dict[str, Any] = Field(description="The document's metadata.")
    explain: dict[str, Any] | None = Field(
        default=None, description="With explain: true, how the hit was scored and placed."
    )


class SearchOut(BaseModel):
    results: list[SearchHitOut] = Field(description="The hits, best first.")
    timings_ms: dict[str, float] = Field(description="Milliseconds spent per stage.")
    mode: str = Field(description="The mode used.")
    fusion: str = Field(description="How the hybrid rankings were fused.")
    reranked: bool = Field(description="Whether the reranker reordered the results.")
    query_truncated: bool = Field(description="Whether the query was cut to fit.")
    query_tokens: int | None = Field(description="Tokens of the query the embedding model read.")


@router.post("/search")
async def search(body: SearchIn, principal: CurrentPrincipal, service: SearchDep) -> SearchOut:
    """Find the passages of your documents that best match a query.

    Send a `query`, and optionally `collection_ids`, `document_ids` and metadata `filters` to
    narrow it, `top_k` (how many hits, 10 by default) and `mode`: `hybrid` (default; BM25
    keywords and dense embeddings, fused), `dense` or `lexical`. `rerank` reorders the best
    candidates with the reranker when one is configured; `explain: true` says, per hit, what
    each stage scored and which stage placed it.

    The answer holds `results`, best first: each a chunk with its text, score, document,
    title, headings and page, and the document's metadata. A document is found once a
    version of it is ready (its ingestion job succeeded). Next: `POST /api/v1/chat` to have a
    question answered from these passages, with citations.

    A collection or document id the tenant does not have is a 404 (another tenant's too);
    `rerank: true` without a configured reranker is a 422."""
    result = await service.search(
        principal.tenant_id,
        SearchRequest(
            query=body.query, top_k=body.top_k, mode=body.mode,
            collection_ids=body.collection_ids, document_ids=body.document_ids,
            filters=body.filters, rerank=body.rerank, explain=body.explain,
        ),
    )
    return SearchOut(
        results=[
            SearchHitOut(
                chunk_id=hit.chunk.id, document_id=hit.chunk.document_id,
                collection_id=hit.chunk.collection_id, title=hit.document.title,
                heading_path=list(hit.chunk.heading_path), page=hit.chunk.page,
                page_end=hit.chunk.page_end, text=hit.chunk.text, score=hit.score,
                keywords=[dict(k) for k in hit.chunk.keywords],
                metadata=dict(hit.document.metadata), explain=hit.explain,
            )
            for hit in result.hits
        ],
        timings_ms=result.timings_ms, mode=body.mode, fusion=result.fusion,
        reranked=result.reranked, query_truncated=result.query_truncated,
        query_tokens=result.query_tokens,
    )
