"""Storage contract for content: collections, documents, their versions and chunks.

``ragd.stores.sql_catalog.SqlCatalog`` implements it over SQLAlchemy. :class:`Catalog` is
the whole contract; :class:`Versions`, :class:`ChangeLog` and :class:`ChunkReader` are the
parts of it that the ingestion worker, the derived indexes and the search path use. The same
rules as the identity stores apply: every tenant-facing method takes ``tenant_id`` and a
foreign id is a miss (``None``), never an error that reveals the row exists; records are
immutable snapshots.

Exactly-once indexing rests on three properties of this contract:

* a document, its first version and its ingestion job are created in one transaction;
* a version's chunks appear (with their vectors) in the single transaction that makes the
  version active, removes the previous version's chunks and appends the matching
  ``index_changes`` rows; that transaction also checks that the calling worker still holds
  the job's lease and that the version is still the latest, so a worker presumed dead or a
  superseded version can never write;
* removing chunks (document or collection deletion) appends ``delete`` changes in the same
  transaction, so the derived indexes learn about every removal by replaying the log.

The derived indexes replay that log as :class:`Change` rows and read the chunks back as
:class:`IndexEntry` records, whose text is :func:`embed_text` (the one rule for what the
embedder and the lexical index see, shared with chunking).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from ragd.errors import InvalidInput
from ragd.jobs.queue import Job

DocumentStatus = Literal["queued", "processing", "ready", "failed", "cancelled"]
DOCUMENT_STATUSES: tuple[DocumentStatus, ...] = (
    "queued", "processing", "ready", "failed", "cancelled",
)
INGEST_JOB = "ingest"
DELETE_COLLECTION_JOB = "delete_collection"


@dataclass(frozen=True, slots=True)
class Collection:
    id: str
    tenant_id: str
    name: str
    description: str | None
    metadata: Mapping[str, Any]
    status: Literal["active", "deleting"]
    embedder_name: str | None
    embedder_dimension: int | None
    document_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    tenant_id: str
    collection_id: str
    title: str
    filename: str | None
    content_type: str
    format: str | None
    content_sha256: str
    size_bytes: int
    metadata: Mapping[str, Any]
    status: DocumentStatus
    error: str | None
    latest_version: int
    active_version: int | None
    job_id: str | None
    pages: int | None
    chunk_count: int
    token_count: int
    keywords: tuple[Mapping[str, Any], ...]
    warnings: tuple[str, ...]
    timings: Mapping[str, float]
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None

    @property
    def searchable(self) -> bool:
        """True once a version is ready; stays True while a newer version is processed."""
        return self.active_version is not None


@dataclass(frozen=True, slots=True)
class Upload:
    """One uploaded version: the original bytes and what the client said about them."""

    content: bytes
    content_sha256: str
    content_type: str
    filename: str | None
    title: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DocumentContent:
    document_id: str
    version: int
    filename: str | None
    content_type: str
    content_sha256: str
    content: bytes


@dataclass(frozen=True, slots=True)
class NewChunk:
    """A chunk ready to be stored (text, position, keywords and its float32 vector)."""

    id: str
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    page: int | None
    page_end: int | None
    token_count: int
    start: int
    end: int
    keywords: tuple[Mapping[str, Any], ...]
    vector: bytes | None


@dataclass(frozen=True, slots=True)
class StoredChunk:
    key: int
    id: str
    tenant_id: str
    collection_id: str
    document_id: str
    version: int
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    page: int | None
    page_end: int | None
    token_count: int
    start: int
    end: int
    keywords: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the index change log."""

    seq: int
    op: Literal["upsert", "delete"]
    chunk_key: int


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What the indexes hold for one chunk (a chunk row, projected)."""

    key: int
    document_id: str
    collection_id: str
    text: str  # the embed text: heading path + chunk text (:func:`embed_text`)
    vector: npt.NDArray[np.float32] | None  # ``(dimension,)``, L2-normalised; None: lexical-only
    #: The chunk continues its section: the chunk before it in its document's version has
    #: the same heading path (what :meth:`ChunkReader.continuing` answers from the rows).
    continues: bool = False


HEADING_SEPARATOR = " > "


def embed_text(heading_path: Sequence[str], text: str) -> str:
    """``text`` prefixed by its heading path (what the embedder and the lexical index see)."""
    headings = [heading for heading in heading_path if heading.strip()]
    if not headings:
        return text
    return f"{HEADING_SEPARATOR.join(headings)}\n\n{text}"


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Accepted:
    """Result of an upload: the document, the job that will ingest it (None when nothing
    needs doing), and whether the content was already there."""

    document: Document
    job: Job | None
    duplicate: bool


#: The title of a document uploaded with neither a title nor a file name.
UNTITLED = "untitled"


@dataclass(frozen=True, slots=True)
class VersionCommit:
    """What the index stage commits for one document version."""

    tenant_id: str
    document_id: str
    version: int
    job_id: str
    worker_id: str
    chunks: Sequence[NewChunk]
    format: str
    pages: int | None
    keywords: tuple[Mapping[str, Any], ...]
    timings: Mapping[str, float]
    warnings: tuple[str, ...]
    embedder_name: str | None
    embedder_dimension: int | None
    #: Also end the job as succeeded in the commit's transaction (one write transaction
    #: fewer per document), with ``timings`` plus ``index`` (the seconds since
    #: ``index_started``, a ``time.perf_counter()`` reading) and ``total``.
    completes_job: bool = False
    index_started: float | None = None
    #: The title the parsed document gives itself; it replaces the document's title when that
    #: is still ``automatic_title`` (the file name, or "untitled": the client gave none).
    title: str | None = None
    automatic_title: str | None = None


def check_embedder(
    recorded: tuple[str | None, int | None], configured: tuple[str | None, int | None]
) -> None:
    """Refuse to mix embedders in one collection: ``recorded`` is the collection's
    (name, dimension), None before its first ingestion."""
    if recorded == (None, None) or recorded == configured:
        return
    raise InvalidInput(
        f"collection was indexed with embedder {recorded[0]} (dimension {recorded[1]}); the "
        f"configured embedder is {configured[0]} (dimension {configured[1]}). Re-embed the "
        "collection or configure the original embedder.",
        code="embedder_mismatch",
    )


class CommitOutcome(StrEnum):
    COMMITTED = "committed"
    ALREADY_COMMITTED = "already_committed"  # a previous attempt committed this version
    SUPERSEDED = "superseded"  # a newer version was uploaded meanwhile
    GONE = "gone"  # the document was deleted meanwhile
    LEASE_LOST = "lease_lost"  # another worker owns the job now


@dataclass(frozen=True, slots=True)
class CollectionStats:
    """A collection's documents by status (every status, zeros included) and the chunks of
    their searchable versions (what search reads of the collection)."""

    documents: Mapping[DocumentStatus, int]
    chunks: int


@dataclass(frozen=True, slots=True)
class CollectionRemoval:
    """Outcome of deleting a collection: removed now, or handed to ``job``."""

    chunks: int
    job: Job | None


class Versions(Protocol):
    """The version-commit protocol that the ingestion worker drives, one transaction a step.

    :meth:`commit_version` is the single step that makes a version searchable: its chunks,
    the removal of the previous version's chunks and the matching change-log rows commit
    together, and only while the calling worker holds the job's lease (else ``LEASE_LOST``)
    and the version is still the document's latest (else ``SUPERSEDED``; ``GONE`` when the
    document or its collection was deleted; ``ALREADY_COMMITTED`` when an earlier attempt
    committed it). Nothing is written unless the outcome is ``COMMITTED``.
    """

    async def start_version(
        self, tenant_id: str, document_id: str, version: int
    ) -> tuple[Document, DocumentContent, Collection] | None:
        """Mark the version processing and return what the pipeline needs; None when the
        document is gone or the version is no longer the latest."""
        ...

    async def commit_version(self, commit: VersionCommit) -> CommitOutcome: ...

    async def finish_version(
        self, tenant_id: str, document_id: str, version: int, status: DocumentStatus,
        error: str | None,
    ) -> None:
        """Record a failed/cancelled/requeued version (only while it is the latest)."""
        ...

    async def job_document_status(
        self, tenant_id: str, job_id: str, when: Sequence[str], status: DocumentStatus,
        error: str | None,
    ) -> None:
        """Set the status of the document whose current job is ``job_id``, if its status is
        one of ``when`` (job cancelled while queued, job retried)."""
        ...


class ChangeLog(Protocol):
    """The index change log, as the derived indexes replay it.

    Every insert or removal of a chunk appends one :class:`Change` per chunk in the same
    transaction. Per tenant, ``seq`` grows in commit order: a consumer that reads
    :meth:`changes_after` its watermark and moves the watermark to the last ``seq`` it read
    never skips a committed change. One tenant's changes never appear in another's log.
    """

    async def changes_after(self, tenant_id: str, seq: int, *, limit: int) -> list[Change]:
        """Up to ``limit`` of the tenant's changes with ``seq`` above ``seq``, in order."""
        ...

    async def last_change(self, tenant_id: str) -> int:
        """The tenant's highest ``seq`` (0 before its first change)."""
        ...

    async def tenants_with_changes(self) -> list[str]: ...

    async def index_entries(self, tenant_id: str, keys: Sequence[int]) -> list[IndexEntry]:
        """Entries for the keys that still exist (a deleted chunk is simply absent)."""
        ...

    async def chunk_keys(self, tenant_id: str, *, after: int, limit: int) -> list[int]:
        """Keys of all stored chunks of the tenant in ascending order (for rebuild/verify)."""
        ...


class ChunkReader(Protocol):
    """What the search path reads: the chunks behind its hits and the ids of its scope."""

    async def chunks_by_keys(self, tenant_id: str, keys: Sequence[int]) -> list[StoredChunk]:
        ...

    async def searchable_chunks(
        self, tenant_id: str, keys: Sequence[int]
    ) -> dict[int, tuple[StoredChunk, Document]]:
        """The tenant's chunks among ``keys`` that belong to their document's active version,
        each with its document, in one read (the search path's fetch). Chunks of deleted
        documents, of collections being deleted and of superseded versions are absent."""
        ...

    async def continuing(self, tenant_id: str, keys: Sequence[int]) -> set[int]:
        """The tenant's chunks among ``keys`` that continue a section: the chunk before them
        in their document's version has the same heading path (a section's later chunks,
        or any chunk but the first of a document without headings). One read."""
        ...

    async def existing_ids(
        self, tenant_id: str, *, collection_ids: Sequence[str] = (),
        document_ids: Sequence[str] = (),
    ) -> tuple[set[str], set[str]]:
        """Which of ``collection_ids`` are the tenant's active collections and which of
        ``document_ids`` its documents in active collections, in one read (a search checks
        its scope with it). Unknown and foreign ids are equally absent."""
        ...


class Catalog(Versions, ChangeLog, ChunkReader, Protocol):
    """Collections, documents, versions, chunks and the index change log: everything a
    backend of the catalog implements (the narrower Protocols it extends are what the
    ingestion worker, the derived indexes and the search path each need)."""

    # -- collections -----------------------------------------------------------------------

    async def create_collection(
        self, tenant_id: str, name: str, *, description: str | None,
        metadata: Mapping[str, Any],
    ) -> Collection:
        """:class:`~ragd.errors.Conflict` (``collection_exists``) when the name is taken
        (case-insensitively) in the tenant; :class:`~ragd.errors.InvalidInput` when the
        metadata breaks :func:`ragd.stores.metadata.check_metadata` (also on update)."""
        ...

    async def list_collections(
        self, tenant_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Collection]: ...

    async def get_collection(self, tenant_id: str, collection_id: str) -> Collection | None: ...

    async def find_collection(self, tenant_id: str, name: str) -> Collection | None: ...

    async def collection_stats(
        self, tenant_id: str, collection_id: str
    ) -> CollectionStats | None:
        """The collection's documents by status and its searchable chunks, in one aggregate
        read; None when it is not one of the tenant's collections (or is being deleted)."""
        ...

    async def update_collection(
        self, tenant_id: str, collection_id: str, *, name: str | None = None,
        description: str | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Collection | None: ...

    async def delete_collection(
        self, tenant_id: str, collection_id: str, *, inline_chunks: int, max_attempts: int
    ) -> CollectionRemoval | None:
        """Delete at once when it holds at most ``inline_chunks`` chunks; otherwise mark it
        deleting (hidden at once) and enqueue a job that calls :meth:`purge_collection`."""
        ...

    async def purge_collection(self, tenant_id: str, collection_id: str, *, batch: int) -> bool:
        """Remove up to ``batch`` documents of a deleting collection; True when it is gone."""
        ...

    # -- documents -------------------------------------------------------------------------

    async def add_document(
        self, tenant_id: str, collection_id: str, upload: Upload, *, max_attempts: int
    ) -> Accepted:
        """Create the document, its version 1 and its ingestion job; or return the document
        with the same content in that collection (``duplicate``), unless that one failed or
        was cancelled: then it is queued again with a new job (``duplicate`` false)."""
        ...

    async def replace_document(
        self, tenant_id: str, document_id: str, upload: Upload, *, max_attempts: int
    ) -> Accepted | None:
        """Add a new version and its job (the active version stays searchable until the new
        one is ready); identical content is a no-op (``duplicate``). :class:`Conflict`
        (``duplicate_content``) when another document of the collection has this content."""
        ...

    async def list_documents(
        self, tenant_id: str, *, collection_id: str | None = None,
        status: DocumentStatus | None = None, limit: int = 50, cursor: str | None = None,
    ) -> Page[Document]: ...

    async def get_document(self, tenant_id: str, document_id: str) -> Document | None: ...

    async def get_content(
        self, tenant_id: str, document_id: str, version: int | None = None
    ) -> DocumentContent | None:
        """The original bytes of ``version`` (default: the latest upload)."""
        ...

    async def list_chunks(
        self, tenant_id: str, document_id: str, *, after: int = -1, limit: int = 50
    ) -> list[StoredChunk]:
        """Chunks of the active version in order, starting after ordinal ``after``."""
        ...

    async def delete_document(self, tenant_id: str, document_id: str) -> bool: ...
