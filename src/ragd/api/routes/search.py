"""``POST /api/v1/search``: hybrid retrieval over the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ragd.api.deps import CurrentPrincipal, SearchDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Filters, Identifier, Input, NonBlank, WholeNumber
from ragd.api.routing import ApiRoute
from ragd.retrieval.search import MAX_QUERY_CHARS, MAX_TOP_K, SearchRequest

router = APIRouter(tags=["search"], responses=ERROR_RESPONSES, route_class=ApiRoute)


class SearchIn(Input):
    query: Annotated[str, NonBlank] = Field(min_length=1, max_length=4 * MAX_QUERY_CHARS)
    collection_ids: list[Identifier] | None = Field(default=None, max_length=100)
    document_ids: list[Identifier] | None = Field(default=None, max_length=1000)
    filters: Filters | None = None
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K), WholeNumber] = 10
    mode: Literal["hybrid", "dense", "lexical"] = "hybrid"
    rerank: bool | None = None
    explain: bool = False


class SearchHitOut(BaseModel):
    chunk_id: str
    document_id: str
    collection_id: str
    title: str
    heading_path: list[str]
    page: int | None
    page_end: int | None
    text: str
    score: float
    keywords: list[dict[str, Any]]
    metadata: dict[str, Any]
    explain: dict[str, Any] | None = None


class SearchOut(BaseModel):
    results: list[SearchHitOut]
    timings_ms: dict[str, float]
    mode: str
    fusion: str
    reranked: bool
    query_truncated: bool
    query_tokens: int | None


@router.post("/search")
async def search(body: SearchIn, principal: CurrentPrincipal, service: SearchDep) -> SearchOut:
    """Hybrid (BM25 + dense, fused), dense-only or lexical-only search, optionally reranked,
    restricted to collections, documents and metadata filters; ``explain`` says, per hit,
    what each stage scored and which stage placed it.

    A collection or document id the tenant does not have is a 404, the same for another
    tenant's id; ``rerank: true`` without a configured reranker is a 422."""
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
