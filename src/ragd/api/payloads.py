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
    name: CollectionName
    description: Description | None = None
    metadata: Metadata = Field(default_factory=dict)


class CollectionPatchIn(ContentInput):
    model_config = ConfigDict(json_schema_extra=at_least_one_change)

    name: CollectionName | None = None
    description: Description | None = None
    metadata: Metadata | None = None


#: The formats a JSON text upload may declare (``content_type``); never sniffed.
TextType = Literal["text/plain", "text/markdown", "text/x-rst", "text/html", "text/csv"]


class TextDocumentIn(ContentInput):
    collection_id: Identifier
    title: Title
    text: Annotated[str, NonBlank] = Field(min_length=1)
    content_type: TextType = Field(
        default="text/plain", description="How the text is read; it is never sniffed."
    )
    metadata: Metadata | None = None


class TextReplaceIn(ContentInput):
    title: Title | None = None
    text: Annotated[str, NonBlank] = Field(min_length=1)
    content_type: TextType = Field(
        default="text/plain", description="How the text is read; it is never sniffed."
    )
    metadata: Metadata | None = None


class CollectionOut(BaseModel):
    id: str
    name: str
    description: str | None
    metadata: dict[str, Any]
    document_count: int
    embedder: str | None
    embedder_dimension: int | None
    created_at: datetime
    updated_at: datetime

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
    id: str
    collection_id: str
    title: str
    filename: str | None
    content_type: str
    format: str | None
    status: DocumentStatus
    searchable: bool
    error: str | None
    content_sha256: str
    size_bytes: int
    version: int
    active_version: int | None
    job_id: str | None
    pages: int | None
    chunk_count: int
    token_count: int
    keywords: list[dict[str, Any]]
    warnings: list[str]
    metadata: dict[str, Any]
    timings: dict[str, float]
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None

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

    document_id: str
    job_id: str | None
    status: DocumentStatus
    duplicate: bool
    document: DocumentOut


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
    done: int
    total: int


class JobOut(BaseModel):
    id: str
    kind: str
    status: JobStatus
    stage: str | None
    progress: Progress
    attempts: int
    max_attempts: int
    error: str | None
    cancel_requested: bool
    document_id: str | None
    collection_id: str | None
    timings: dict[str, float]
    run_after: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

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

    queue_position: int | None

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
