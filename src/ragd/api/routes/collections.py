"""``/api/v1/collections``: named sets of documents inside the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import JSONResponse

from ragd.api.deps import CatalogDep, CurrentPrincipal, IngestionDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.payloads import (
    CollectionDeleted,
    CollectionDetailOut,
    CollectionIn,
    CollectionOut,
    CollectionPage,
    CollectionPatchIn,
    JobOut,
)
from ragd.api.routing import ApiRoute
from ragd.errors import InvalidInput, NotFound

router = APIRouter(
    prefix="/collections", tags=["collections"], responses=ERROR_RESPONSES, route_class=ApiRoute
)

CollectionId = Annotated[str, Path(min_length=1, max_length=64)]


def _missing() -> NotFound:
    return NotFound("collection not found", code="collection_not_found")


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_collection(
    body: CollectionIn, principal: CurrentPrincipal, catalog: CatalogDep
) -> CollectionOut:
    """Create a collection: a named set of documents that search and chat can be limited to.

    Send a `name`, and optionally a `description` and `metadata` (your own labels). The
    answer (201) is the collection; its `id` is the `collection_id` of uploads. Next: upload
    a document into it with `POST /api/v1/documents`."""
    collection = await catalog.create_collection(
        principal.tenant_id, body.name, description=body.description, metadata=body.metadata
    )
    return CollectionOut.of(collection)


@router.get("")
async def list_collections(
    principal: CurrentPrincipal,
    catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> CollectionPage:
    page = await catalog.list_collections(principal.tenant_id, limit=limit, cursor=cursor)
    return CollectionPage(
        items=[CollectionOut.of(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/{collection_id}")
async def get_collection(
    collection_id: CollectionId, principal: CurrentPrincipal, catalog: CatalogDep
) -> CollectionDetailOut:
    """The collection with its documents by status and its searchable chunks."""
    collection = await catalog.get_collection(principal.tenant_id, collection_id)
    stats = await catalog.collection_stats(principal.tenant_id, collection_id)
    if collection is None or stats is None:
        raise _missing()
    return CollectionDetailOut.with_stats(collection, stats)


@router.patch("/{collection_id}")
async def update_collection(
    collection_id: CollectionId, body: CollectionPatchIn, principal: CurrentPrincipal,
    catalog: CatalogDep,
) -> CollectionOut:
    if body.name is None and body.description is None and body.metadata is None:
        raise InvalidInput(
            "nothing to change: give name, description and/or metadata", code="empty_patch"
        )
    collection = await catalog.update_collection(
        principal.tenant_id, collection_id, name=body.name, description=body.description,
        metadata=body.metadata,
    )
    if collection is None:
        raise _missing()
    return CollectionOut.of(collection)


@router.delete(
    "/{collection_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={202: {"model": CollectionDeleted}},
)
async def delete_collection(
    collection_id: CollectionId, principal: CurrentPrincipal, ingestion: IngestionDep
) -> Response:
    """Delete the collection, its documents and their index entries. A large collection is
    hidden at once and removed by a background job (202 with the job)."""
    removal = await ingestion.delete_collection(principal.tenant_id, collection_id)
    if removal.job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    body = CollectionDeleted(status="deleting", job=JobOut.of(removal.job))
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)
