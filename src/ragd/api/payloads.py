"""Request and response bodies of the content routes: collections, documents, chunks, jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from ragd import hygiene
from ragd.api.fields import (
    Identifier,
    Input,
    Metadata,
    NameLine,
    NonBlank,
    at_least_one_change,
)
from ragd.errors import InvalidInput
from ragd.jobs.queue import Job, JobStatus
from ragd.stores.catalog import (
    Collection,
    CollectionStats,
    Document,
    DocumentStatus,
    StoredChunk,
)
from ragd.stores.metadata import MAX_METADATA_BYTES, check_metadata

CollectionName = Annotated[str, StringConstraints(min_length=1, max_length=200), *NameLine]
Description = Annotated[str, StringConstraints(max_length=2000)]
Title = Annotated[str, StringConstraints(min_length=1, max_length=500), *NameLine]

#: Ids in the examples of the OpenAPI document: the shape of real ones (UUIDs).
EXAMPLE_COLLECTION_ID = "0b7e4c52-3d1f-4f8e-9a51-6c2d8e1f4a37"
_METADATA_HELP = "Your own labels, to filter search and chat by (see filters there). "
_CONTENT_TYPE_HELP = (
    "How the text is read (plain, Markdown, reStructuredText, HTML or CSV); it is never "
    "sniffed."
)


def parse_metadata(raw: str | None) -> dict[str, Any] | None:
    """Metadata sent as a JSON string (multipart form field)."""
    if raw is None or not raw.strip():
        return None
    if len(raw) > 4 * MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes",
                           code="invalid_metadata")
    try:
        value = hygiene.loads(raw)
    except hygiene.JsonRejected as exc:
        raise InvalidInput(f"metadata must be a JSON object ({exc.reason})",
                           code="invalid_metadata") from None
    return check_metadata(value)


class ContentInput(Input):
    @field_validator("metadata", mode="before", check_fields=False)
    @classmethod
    def _metadata(cls, value: Any) -> Any:
        return None if value is None else check_metadata(value)


class CollectionIn(ContentInput):
    """A new collection (``POST /collections``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Support handbook", "description": "Policies and how-tos for the help desk",
         "metadata": {"team": "support"}},
        {"name": "Research papers"},
    ]})

    name: CollectionName = Field(description="A name to recognise the collection by; one line.")
    description: Description | None = Field(
        default=None, description="Free text about what the collection holds."
    )
    metadata: Metadata = Field(
        default_factory=dict,
        description=_METADATA_HELP + "A flat JSON object of at most 16 KiB.",
    )


class CollectionPatchIn(ContentInput):
    model_config = ConfigDict(json_schema_extra=at_least_one_change)

    name: CollectionName | None = None
    description: Description | None = None
    metadata: Metadata | None = None


#: The formats a JSON text upload may declare (``content_type``); never sniffed.
TextType = Literal["text/plain", "text/markdown", "text/x-rst", "text/html", "text/csv"]


class TextDocumentIn(ContentInput):
    """A document sent as text in JSON (``POST /documents``; files go as multipart)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"collection_id": EXAMPLE_COLLECTION_ID, "title": "Returns policy",
         "text": "# Returns\n\nItems can be returned within 30 days of delivery. Bring the "
                 "receipt; refunds go to the original payment method within 5 working days.",
         "content_type": "text/markdown", "metadata": {"team": "support", "year": 2025}},
    ]})

    collection_id: Identifier = Field(
        description="The collection to add the document to (the id POST /collections gave)."
    )
    title: Title = Field(description="The document's title, shown with search hits and citations.")
    text: Annotated[str, NonBlank] = Field(
        min_length=1,
        description="The document's content; not blank. The longest accepted is this "
        "server's ingestion.max_text_chars (the schema's maxLength).",
    )
    content_type: TextType = Field(default="text/plain", description=_CONTENT_TYPE_HELP)
    metadata: Metadata | None = Field(
        default=None, description=_METADATA_HELP + "Null or absent: none."
    )


class TextReplaceIn(ContentInput):
    """New content for a document, sent as text in JSON (``PUT /documents/{id}``)."""

    title: Title | None = Field(
        default=None, description="A new title; null or absent: the title stays."
    )
    text: Annotated[str, NonBlank] = Field(
        min_length=1, description="The document's new content; not blank."
    )
    content_type: TextType = Field(default="text/plain", description=_CONTENT_TYPE_HELP)
    metadata: Metadata | None = Field(
        default=None, description=_METADATA_HELP + "Null or absent: the metadata stays."
    )


class CollectionOut(BaseModel):
    id: str = Field(
        description="The collection's id: the collection_id of uploads, search and chat."
    )
    name: str = Field(description="The collection's name.")
    description: str | None = Field(description="What the collection holds, if given.")
    metadata: dict[str, Any] = Field(description="The collection's own labels.")
    document_count: int = Field(description="Documents in the collection, in any status.")
    embedder: str | None = Field(
        description="The embedding model its vectors were made with, recorded when its first "
        "document was indexed; null until then."
    )
    embedder_dimension: int | None = Field(description="That model's vector size.")
    created_at: datetime = Field(description="When the collection was created (UTC).")
    updated_at: datetime = Field(description="When it last changed (UTC).")

    @classmethod
    def of(cls, c: Collection) -> CollectionOut:
        return cls(
            id=c.id, name=c.name, description=c.description, metadata=dict(c.metadata),
            document_count=c.document_count, embedder=c.embedder_name,
            embedder_dimension=c.embedder_dimension, created_at=c.created_at,
            updated_at=c.updated_at,
        )


class DocumentCounts(BaseModel):
    """Documents by status."""

    queued: int
    processing: int
    ready: int
    failed: int
    cancelled: int


class CollectionDetailOut(CollectionOut):
    """One collection with its figures (``GET /collections/{id}``)."""

    documents_by_status: DocumentCounts
    chunk_count: int = Field(
        description="Chunks of its documents' searchable versions (what search reads)."
    )

    @classmethod
    def with_stats(cls, c: Collection, stats: CollectionStats) -> CollectionDetailOut:
        return cls(
            **CollectionOut.of(c).model_dump(),
            documents_by_status=DocumentCounts(**dict(stats.documents)),
            chunk_count=stats.chunks,
        )


class CollectionPage(BaseModel):
    items: list[CollectionOut]
    next_cursor: str | None


class DocumentOut(BaseModel):
    id: str = Field(description="The document's id.")
    collection_id: str = Field(description="The collection it belongs to.")
    title: str = Field(description="Its title (given, or the file name).")
    filename: str | None = Field(description="The uploaded file's name; null for text.")
    content_type: str = Field(description="The media type of the stored original.")
    format: str | None = Field(description="The format it was parsed as (pdf, docx, markdown...).")
    status: DocumentStatus = Field(
        description="Of the latest version: queued, processing, then ready (or failed or "
        "cancelled)."
    )
    searchable: bool = Field(
        description="True once a version is ready; stays true while a newer version is "
        "processed."
    )
    error: str | None = Field(description="Why the latest version failed, if it did.")
    content_sha256: str = Field(description="SHA-256 of the original bytes (hex).")
    size_bytes: int = Field(description="Size of the original in bytes.")
    version: int = Field(description="The latest version's number (1 for a new document).")
    active_version: int | None = Field(
        description="The version search reads; null until one is ready."
    )
    job_id: str | None = Field(description="The ingestion job of the latest version.")
    pages: int | None = Field(description="Pages, for formats that have them.")
    chunk_count: int = Field(description="Chunks of the searchable version.")
    token_count: int = Field(description="Tokens of the searchable version.")
    keywords: list[dict[str, Any]] = Field(description="Key phrases found in the document.")
    warnings: list[str] = Field(description="What parsing noticed but did not refuse.")
    metadata: dict[str, Any] = Field(description="The labels given at upload.")
    timings: dict[str, float] = Field(description="Seconds spent per ingestion stage.")
    created_at: datetime = Field(description="When the document was first uploaded (UTC).")
    updated_at: datetime = Field(description="When it last changed (UTC).")
    ready_at: datetime | None = Field(description="When a version last became ready (UTC).")

    @classmethod
    def of(cls, d: Document) -> DocumentOut:
        return cls(
            id=d.id, collection_id=d.collection_id, title=d.title, filename=d.filename,
            content_type=d.content_type, format=d.format, status=d.status,
            searchable=d.searchable, error=d.error, content_sha256=d.content_sha256,
            size_bytes=d.size_bytes, version=d.latest_version, active_version=d.active_version,
            job_id=d.job_id, pages=d.pages, chunk_count=d.chunk_count,
            token_count=d.token_count, keywords=[dict(k) for k in d.keywords],
            warnings=list(d.warnings),
            metadata=dict(d.metadata), timings=dict(d.timings), created_at=d.created_at,
            updated_at=d.updated_at, ready_at=d.ready_at,
        )


class DocumentAccepted(BaseModel):
    """Answer to an upload: 202 with the job, or 200 with ``duplicate: true``."""

    document_id: str = Field(description="The document's id (GET /documents/{document_id}).")
    job_id: str | None = Field(
        description="The ingestion job: follow it at GET /jobs/{job_id} until it succeeds."
    )
    status: DocumentStatus = Field(description="The document's status now (queued when new).")
    duplicate: bool = Field(
        description="True: the collection already holds these exact bytes; nothing new was "
        "queued and this is that document."
    )
    document: DocumentOut = Field(description="The document as stored.")


class DocumentPage(BaseModel):
    items: list[DocumentOut]
    next_cursor: str | None


class ChunkOut(BaseModel):
    id: str
    document_id: str
    collection_id: str
    version: int
    ordinal: int
    text: str
    heading_path: list[str]
    page: int | None
    page_end: int | None
    token_count: int
    start: int
    end: int
    keywords: list[dict[str, Any]]

    @classmethod
    def of(cls, c: StoredChunk) -> ChunkOut:
        return cls(
            id=c.id, document_id=c.document_id, collection_id=c.collection_id,
            version=c.version, ordinal=c.ordinal, text=c.text,
            heading_path=list(c.heading_path), page=c.page, page_end=c.page_end,
            token_count=c.token_count, start=c.start, end=c.end,
            keywords=[dict(k) for k in c.keywords],
        )


class ChunkPage(BaseModel):
    items: list[ChunkOut]
    next_cursor: str | None


class Progress(BaseModel):
    """How far the current stage is (``done`` of ``total`` units, e.g. chunks embedded)."""

    done: int = Field(description="Units of the current stage done.")
    total: int = Field(description="Units of the current stage in all (0: not known yet).")


class JobOut(BaseModel):
    id: str = Field(description="The job's id.")
    kind: str = Field(description="What the job does: ingest (a document version) or "
                      "delete_collection.")
    status: JobStatus = Field(
        description="queued, running, then succeeded, failed or cancelled. An ingest job "
        "that succeeded left its document searchable."
    )
    stage: str | None = Field(
        description="The stage running: parse, chunk, embed, index (delete for deletions)."
    )
    progress: Progress = Field(description="How far the stage is.")
    attempts: int = Field(description="Attempts started so far.")
    max_attempts: int = Field(description="Attempts allowed before the job fails.")
    error: str | None = Field(description="Why the job failed, if it did.")
    cancel_requested: bool = Field(
        description="A cancel was asked for and the running job has not stopped yet."
    )
    document_id: str | None = Field(description="The document an ingest job works on.")
    collection_id: str | None = Field(description="The collection the job works on.")
    timings: dict[str, float] = Field(description="Seconds spent per stage.")
    run_after: datetime = Field(description="Not started before this time (UTC; retries wait).")
    created_at: datetime = Field(description="When the job was queued (UTC).")
    updated_at: datetime = Field(description="When the job last changed (UTC).")
    finished_at: datetime | None = Field(description="When the job ended (UTC), if it has.")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        payload = dict(job.payload)
        return cls(
            id=job.id, kind=job.kind, status=job.status, stage=job.stage,
            progress=Progress(done=job.progress_done, total=job.progress_total),
            attempts=job.attempts, max_attempts=job.max_attempts, error=job.error,
            cancel_requested=job.cancel_requested,
            document_id=_optional_str(payload.get("document_id")),
            collection_id=_optional_str(payload.get("collection_id")),
            timings={k: float(v) for k, v in dict(job.timings).items()},
            run_after=job.run_after, created_at=job.created_at, updated_at=job.updated_at,
            finished_at=job.finished_at,
        )


class JobDetail(JobOut):
    """One job as ``GET /jobs/{id}`` answers it: while it is queued, ``queue_position`` is how
    many of the tenant's queued jobs are ahead of it (0: it is next); null otherwise."""

    queue_position: int | None = Field(
        description="While queued: the tenant's queued jobs ahead of this one (0: next). "
        "Null otherwise."
    )

    @classmethod
    def at(cls, job: Job, position: int | None) -> JobDetail:
        """The job, with its position when it is queued."""
        return cls(
            **JobOut.of(job).model_dump(),
            queue_position=position if job.status == "queued" else None,
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class CollectionDeleted(BaseModel):
    """202 answer when a large collection is deleted by a background job."""

    status: Literal["deleting"]
    job: JobOut


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
