"""Ingestion use cases behind the HTTP API and the CLI: accept content, manage its lifecycle.

Uploads are checked before anything is stored: size, type (from the bytes and the name;
unsupported or contradictory → :class:`~ragd.errors.UnsupportedMediaType` listing the
supported types), and emptiness. The document, its version and its job are then created in
one transaction, so an accepted upload is never lost and never has no job.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from ragd.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, UnsupportedMediaType
from ragd.hygiene import strip_controls, text_problem
from ragd.index.base import SearchBackend
from ragd.ingestion.limits import check_zip
from ragd.ingestion.parsers import FORMATS, ParseError, detect_format
from ragd.ingestion.pipeline import parse_limits
from ragd.jobs.queue import Job, JobQueue
from ragd.settings import IngestionSettings
from ragd.stores.catalog import (
    DELETE_COLLECTION_JOB,
    INGEST_JOB,
    Accepted,
    Catalog,
    CollectionRemoval,
    Upload,
)
from ragd.stores.metadata import check_metadata

MAX_TITLE = 500
MAX_FILENAME = 255


def _title(title: str | None) -> str | None:
    clean = (title or "").strip()[:MAX_TITLE]
    if problem := text_problem(clean, single_line=True):
        raise InvalidInput(f"title {problem}", code="invalid_title")
    return clean or None


class IngestionService:
    """What the documents, collections and jobs routes call."""

    def __init__(
        self,
        catalog: Catalog,
        queue: JobQueue,
        indexes: SearchBackend,
        settings: IngestionSettings,
        *,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.catalog = catalog
        self.queue = queue
        self.indexes = indexes
        self.settings = settings
        self._limits = parse_limits(settings)
        self._wake = wake

    def set_wake(self, wake: Callable[[], None]) -> None:
        """Called after every enqueue: this process's worker pool claims at once. (Pools in
        other processes hear of it on PostgreSQL through the ``NOTIFY`` that the enqueuing
        transaction sends, see ``jobs/queue.py``; on SQLite they poll.)"""
        self._wake = wake

    async def prepare(
        self, data: bytes, *, filename: str | None, declared_type: str | None,
        title: str | None, metadata: Mapping[str, Any] | None,
        declared_format: str | None = None,
    ) -> Upload:
        """Validate an upload and describe it: its type is ``declared_format`` (a key of
        ``FORMATS``: text sent as JSON declares its type, which is never sniffed), else
        detected from the content, the file name and ``declared_type``."""
        if len(data) > self.settings.max_upload_bytes:
            raise PayloadTooLarge(
                f"the file is larger than {self.settings.max_upload_mb:g} MB"
            )
        if metadata is not None:
            metadata = check_metadata(dict(metadata))
        if filename is not None:
            # A client's file name is kept, not refused: only its last path component, without
            # control characters (log forging, NULs no database stores), within 255 characters.
            filename = strip_controls(filename.replace("\\", "/").rsplit("/", 1)[-1])
            filename = filename.strip()[:MAX_FILENAME] or None
        try:
            if declared_format is not None:
                if not data:
                    raise ParseError("The file is empty.", code="empty")
                fmt = declared_format
            else:
                # Reading a ZIP directory costs memory per entry: it is bounded before
                # anything (type detection included) opens the archive in this process.
                fmt = await asyncio.to_thread(
                    detect_format, data, filename, declared_type,
                    check_archive=lambda archive: check_zip(archive, self._limits),
                )
        except ParseError as exc:
            if exc.code == "empty":
                raise InvalidInput("the file is empty", code="empty_file") from None
            if exc.code in ("archive_bomb", "archive_too_large"):
                raise InvalidInput(exc.message, code=exc.code) from None
            raise UnsupportedMediaType(exc.message) from None
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        return Upload(
            content=data, content_sha256=digest, content_type=FORMATS[fmt],
            filename=filename, title=_title(title),
            metadata=metadata,
        )

    async def add(self, tenant_id: str, collection_id: str, upload: Upload) -> Accepted:
        accepted = await self.catalog.add_document(
            tenant_id, collection_id, upload, max_attempts=self.settings.max_attempts
        )
        if accepted.job is not None:
            self._wake()
        return accepted

    async def replace(self, tenant_id: str, document_id: str, upload: Upload) -> Accepted:
        accepted = await self.catalog.replace_document(
            tenant_id, document_id, upload, max_attempts=self.settings.max_attempts
        )
        if accepted is None:
            raise NotFound("document not found", code="document_not_found")
        if accepted.job is not None:
            self._wake()
        return accepted

    async def delete_document(self, tenant_id: str, document_id: str) -> None:
        if not await self.catalog.delete_document(tenant_id, document_id):
            raise NotFound("document not found", code="document_not_found")
        await self.indexes.publish(tenant_id)

    async def delete_collection(self, tenant_id: str, collection_id: str) -> CollectionRemoval:
        removal = await self.catalog.delete_collection(
            tenant_id, collection_id, inline_chunks=self.settings.delete_inline_chunks,
            max_attempts=self.settings.max_attempts,
        )
        if removal is None:
            raise NotFound("collection not found", code="collection_not_found")
        if removal.job is None:
            await self.indexes.publish(tenant_id)
        else:
            self._wake()
        return removal

    async def cancel_job(self, tenant_id: str, job_id: str) -> Job:
        current = await self.queue.get(tenant_id, job_id)
        if current is None:
            raise NotFound("job not found", code="job_not_found")
        if current.kind == DELETE_COLLECTION_JOB:
            # The collection is already hidden; stopping half-way would strand it.
            raise Conflict("a collection deletion cannot be cancelled", code="job_not_cancellable")
        job = await self.queue.cancel(tenant_id, job_id)
        if job is None:
            raise NotFound("job not found", code="job_not_found")
        return job  # a queued ingest job's document was marked cancelled by the finaliser

    async def retry_job(self, tenant_id: str, job_id: str) -> Job:
        retried = await self.queue.retry(tenant_id, job_id)
        if retried is None:
            raise NotFound("job not found", code="job_not_found")
        if retried.kind == INGEST_JOB:
            await self.catalog.job_document_status(
                tenant_id, job_id, ("failed", "cancelled"), "queued", None
            )
        self._wake()
        return retried
