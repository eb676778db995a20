"""``/api/v1/documents``: upload, inspect, re-ingest and delete documents.

``POST`` and ``PUT`` take either ``multipart/form-data`` (``file``, plus ``collection_id``,
optional ``title`` and ``metadata`` as a JSON object) or ``application/json`` with raw text.
New content answers 202 with the ingestion job; content identical (same SHA-256) to a
document of the same collection answers 200 with ``duplicate: true`` and that document.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragd import hygiene
from ragd.api.deps import CatalogDep, CurrentPrincipal, IngestionDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.payloads import (
    ChunkOut,
    ChunkPage,
    DocumentAccepted,
    DocumentOut,
    DocumentPage,
    TextDocumentIn,
    TextReplaceIn,
    parse_metadata,
)
from ragd.api.routing import ApiRoute, parse_json
from ragd.errors import InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from ragd.hygiene import text_problem
from ragd.ingestion.parsers.base import FORMATS
from ragd.ingestion.service import MAX_FILENAME, MAX_TITLE, IngestionService
from ragd.stores.catalog import Accepted, DocumentStatus, Upload

router = APIRouter(
    prefix="/documents", tags=["documents"], responses=ERROR_RESPONSES, route_class=ApiRoute
)

M = TypeVar("M", bound=BaseModel)
DocumentId = Annotated[str, Path(min_length=1, max_length=64, openapi_examples={
    "document": {"summary": "A document id (from an upload's document_id)",
                 "value": "9c1e7f3a-2b4d-4e8f-a6c5-3d7b9e1f2a40"},
})]
_FORM_FIELDS = 8
def _upload_body(json_model: type[BaseModel], *, new: bool) -> dict[str, Any]:
    """The request body of ``POST`` (``new``) and ``PUT``: a multipart file or JSON text."""
    form: dict[str, Any] = {
        "type": "object",
        "required": ["file", "collection_id"] if new else ["file"],
        "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "The file: PDF, DOCX, PPTX, HTML, Markdown, "
                                    "reStructuredText, plain text or CSV. Its content "
                                    "decides its type (415 for any other)."},
            "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE,
                      "pattern": hygiene.NAME_PATTERN,
                      "description": "The document's title; absent: the file's name."
                                     if new else "A new title; absent: the title stays."},
            "metadata": {"type": "string", "pattern": hygiene.TEXT_PATTERN,
                         "description": "Your own labels, to filter search and chat by: "
                                        "a flat JSON object as text, at most 16 KiB"
                                        + ("." if new else "; absent: they stay."),
                         "examples": ['{"team": "support", "year": 2025}']},
        },
    }
    if new:
        form["properties"]["collection_id"] = {
            "type": "string", "minLength": 1, "maxLength": 64,
            "pattern": hygiene.LABEL_PATTERN,
            "description": "The collection to add the document to (the id "
                           "POST /collections gave).",
            "examples": ["0b7e4c52-3d1f-4f8e-9a51-6c2d8e1f4a37"],
        }
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": form},
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}},
    }}}


def _missing() -> NotFound:
    return NotFound("document not found", code="document_not_found")


def _answer(accepted: Accepted) -> JSONResponse:
    body = DocumentAccepted(
        document_id=accepted.document.id,
        job_id=accepted.job.id if accepted.job else accepted.document.job_id,
        status=accepted.document.status,
        duplicate=accepted.duplicate,
        document=DocumentOut.of(accepted.document),
    )
    code = status.HTTP_200_OK if accepted.job is None else status.HTTP_202_ACCEPTED
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _json_body(request: Request, model: type[M], limit: int) -> M:
    raw = await request.body()
    if len(raw) > limit:
        raise PayloadTooLarge(f"the text is longer than {limit} bytes")
    try:
        return model.model_validate(parse_json(raw))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def _form_upload(
    request: Request, ingestion: IngestionService, *, need_collection: bool
) -> tuple[Upload, str | None]:
    try:
        form = await request.form(max_files=1, max_fields=_FORM_FIELDS)
    except StarletteHTTPException as exc:
        if exc.status_code == 413:  # noqa: PLR2004 - payload too large
            raise  # the body limit cut the form off while it streamed in
        if _caused_by(exc, "header size"):
            # python-multipart caps each part header line at ~4 KiB.
            raise InvalidInput(
                "a multipart part header is longer than 4 KiB: is the file name too long? "
                f"(names are kept up to {MAX_FILENAME} characters)",
                code="multipart_header_too_large",
            ) from None
        raise InvalidInput(f"malformed multipart body: {exc.detail}",
                           code="bad_multipart") from None
    except Exception as exc:  # noqa: BLE001 - malformed multipart must be a 4xx, not a 500
        raise InvalidInput(f"malformed multipart body: {exc}", code="bad_multipart") from None
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise InvalidInput("the form needs a 'file' part", code="missing_file")
    fields: dict[str, str | None] = {}
    for name in ("collection_id", "title", "metadata"):
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"form field {name!r} must be text", code="invalid_field")
        if value is not None and (
            problem := text_problem(value, single_line=name != "metadata")
        ):
            raise InvalidInput(f"form field {name!r} {problem}", code="invalid_field")
        fields[name] = value
    unknown = set(form.keys()) - {"file", "collection_id", "title", "metadata"}
    if unknown:
        raise InvalidInput(
            f"unknown form fields ({len(unknown)}); the form takes file, collection_id, title "
            "and metadata", code="invalid_field",
        )
    collection_id = fields["collection_id"]
    if need_collection and not collection_id:
        raise InvalidInput("the form needs a 'collection_id' field", code="missing_collection")
    if collection_id is not None and len(collection_id) > 64:
        raise InvalidInput("collection_id is too long", code="invalid_field")
    metadata = parse_metadata(fields["metadata"])
    data = await file.read()
    await file.close()
    upload = await ingestion.prepare(
        data, filename=file.filename, declared_type=file.content_type,
        title=fields["title"], metadata=metadata,
    )
    return upload, collection_id


def _caused_by(exc: BaseException, words: str) -> bool:
    """Whether an exception in the chain behind ``exc`` says ``words``."""
    seen: BaseException | None = exc
    while seen is not None:
        if words in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _text_limit(ingestion: IngestionService) -> int:
    return ingestion.settings.max_text_chars * 4 + 64 * 1024


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentAccepted,
    responses={200: {"model": DocumentAccepted}, 413: {}, 415: {}},
    openapi_extra=_upload_body(TextDocumentIn, new=True),
)
async def create_document(
    request: Request, principal: CurrentPrincipal, ingestion: IngestionDep
) -> JSONResponse:
    """Add a document to a collection: a file (multipart) or text (JSON).

    Send either `multipart/form-data` with the `file`, its `collection_id` and optionally a
    `title` and `metadata` (a JSON object as text), or `application/json` with
    `collection_id`, `title`, `text`, its `content_type` and optionally `metadata`.

    The answer is 202 with the `document_id` and the `job_id` of its ingestion (parse,
    chunk, embed, index), which runs in the background. Content identical (same SHA-256)
    to a document of the same collection is not ingested again: 200 with
    `duplicate: true` and that document. Next: follow the job at
    `GET /api/v1/jobs/{job_id}` until it has `succeeded`; the document is then searchable.

    A file type ragd cannot read is a 415; an empty file or an archive bomb a 422; a file
    over the upload limit a 413."""
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        upload, collection_id = await _form_upload(request, ingestion, need_collection=True)
        assert collection_id is not None  # noqa: S101 - checked by _form_upload
    elif media_type == "application/json":
        body = await _json_body(request, TextDocumentIn, _text_limit(ingestion))
        upload = await _text_upload(ingestion, body, body.title)
        collection_id = body.collection_id
    else:
        raise UnsupportedMediaType(
            "send multipart/form-data (a file) or application/json (text)"
        )
    return _answer(await ingestion.add(principal.tenant_id, collection_id, upload))


async def _text_upload(
    ingestion: IngestionService, body: TextDocumentIn | TextReplaceIn, title: str | None
) -> Upload:
    text = body.text
    if len(text) > ingestion.settings.max_text_chars:
        raise PayloadTooLarge(
            f"the text is longer than {ingestion.settings.max_text_chars} characters"
        )
    if not text.strip():
        raise InvalidInput("the text is empty", code="empty_file")
    return await ingestion.prepare(
        text.encode("utf-8", "surrogatepass"), filename=None, declared_type=body.content_type,
        title=title, metadata=body.metadata,
        declared_format=next(f for f, mime in FORMATS.items() if mime == body.content_type),
    )


@router.get("")
async def list_documents(
    principal: CurrentPrincipal,
    catalog: CatalogDep,
    collection_id: Annotated[str | None, Query(max_length=64)] = None,
    status: DocumentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> DocumentPage:
    page = await catalog.list_documents(
        principal.tenant_id, collection_id=collection_id, status=status, limit=limit,
        cursor=cursor,
    )
    return DocumentPage(
        items=[DocumentOut.of(d) for d in page.items], next_cursor=page.next_cursor
    )


@router.get("/{document_id}")
async def get_document(
    document_id: DocumentId, principal: CurrentPrincipal, catalog: CatalogDep
) -> DocumentOut:
    """One document: its status, versions, size and what ingestion found.

    Send the `document_id` an upload answered with. The answer holds `status` (of the
    latest version: `queued`, `processing`, `ready`, `failed` or `cancelled`),
    `searchable` (true once a version is ready; it stays true while a newer one is
    processed), `error` when ingestion failed, and the figures ingestion recorded (pages,
    chunks, tokens, keywords, timings). Next: `POST /api/v1/search` or `POST /api/v1/chat`
    once it is searchable; `GET /api/v1/documents/{document_id}/chunks` lists its chunks."""
    document = await catalog.get_document(principal.tenant_id, document_id)
    if document is None:
        raise _missing()
    return DocumentOut.of(document)


@router.get("/{document_id}/chunks")
async def list_chunks(
    document_id: DocumentId,
    principal: CurrentPrincipal,
    catalog: CatalogDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^-?\d+$")] = None,
) -> ChunkPage:
    """Chunks of the searchable version, in document order."""
    if await catalog.get_document(principal.tenant_id, document_id) is None:
        raise _missing()
    after = int(cursor) if cursor is not None else -1
    chunks = await catalog.list_chunks(
        principal.tenant_id, document_id, after=after, limit=limit + 1
    )
    items = [ChunkOut.of(c) for c in chunks[:limit]]
    next_cursor = str(items[-1].ordinal) if len(chunks) > limit and items else None
    return ChunkPage(items=items, next_cursor=next_cursor)


@router.get("/{document_id}/content", response_class=Response, responses={200: {}})
async def get_content(
    document_id: DocumentId, principal: CurrentPrincipal, catalog: CatalogDep
) -> Response:
    """The original file of the latest version, with its content type."""
    content = await catalog.get_content(principal.tenant_id, document_id)
    if content is None:
        raise _missing()
    name = content.filename or f"{content.document_id}"
    disposition = f"attachment; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
    return Response(
        content=content.content,
        media_type=content.content_type,
        headers={
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox",
            "ETag": f'"{content.content_sha256}"',
        },
    )


@router.put(
    "/{document_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentAccepted,
    responses={200: {"model": DocumentAccepted}, 413: {}, 415: {}},
    openapi_extra=_upload_body(TextReplaceIn, new=False),
)
async def replace_document(
    document_id: DocumentId, request: Request, principal: CurrentPrincipal,
    ingestion: IngestionDep,
) -> JSONResponse:
    """Upload new content for a document. The current version stays searchable until the
    new one is ready, then its chunks are replaced in one step."""
    media_type = _media_type(request)
    if media_type == "multipart/form-data":
        upload, _ = await _form_upload(request, ingestion, need_collection=False)
    elif media_type == "application/json":
        body = await _json_body(request, TextReplaceIn, _text_limit(ingestion))
        upload = await _text_upload(ingestion, body, body.title)
    else:
        raise UnsupportedMediaType(
            "send multipart/form-data (a file) or application/json (text)"
        )
    return _answer(await ingestion.replace(principal.tenant_id, document_id, upload))


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    document_id: DocumentId, principal: CurrentPrincipal, ingestion: IngestionDep
) -> Response:
    """Delete the document, its versions and its chunks from every index."""
    await ingestion.delete_document(principal.tenant_id, document_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
