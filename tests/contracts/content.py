"""Small documents for the contract tests: uploads, chunks with random unit vectors, and the
worker's side of the version-commit protocol (claim the job, commit the version)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragd.jobs.queue import Job, JobQueue
from ragd.stores.catalog import (
    INGEST_JOB,
    Catalog,
    CommitOutcome,
    Document,
    NewChunk,
    Upload,
    VersionCommit,
)

DIMENSION = 8
EMBEDDER = "contract-embedder"
WORKER = "worker-1"


async def new_collection(catalog: Catalog, tenant_id: str, name: str = "Docs") -> str:
    """A new, empty collection of the tenant; its id."""
    return (await catalog.create_collection(tenant_id, name, description=None, metadata={})).id


def upload(text: str, *, title: str | None = None, filename: str = "notes.txt") -> Upload:
    content = text.encode()
    return Upload(
        content=content, content_sha256=hashlib.sha256(content).hexdigest(),
        content_type="text/plain", filename=filename, title=title,
    )


def unit_vector(seed: int, dimension: int = DIMENSION) -> npt.NDArray[np.float32]:
    vector = np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


def chunks(
    document_id: str, version: int, texts: Sequence[str], *, seed: int = 0,
    headings: Sequence[str] = (),
) -> list[NewChunk]:
    """One chunk per text, each with a random unit vector (``seed`` + ordinal)."""
    out = []
    start = 0
    for ordinal, text in enumerate(texts):
        digest = hashlib.blake2b(f"{document_id}:{version}:{ordinal}".encode(), digest_size=16)
        out.append(NewChunk(
            id=digest.hexdigest(), ordinal=ordinal, text=text, heading_path=tuple(headings),
            page=None, page_end=None, token_count=len(text.split()), start=start,
            end=start + len(text), keywords=(),
            vector=unit_vector(seed + ordinal).tobytes(),
        ))
        start += len(text) + 1
    return out


def version_commit(
    job: Job, document_id: str, version: int, new_chunks: Sequence[NewChunk], *,
    worker: str = WORKER, embedder: str = EMBEDDER, dimension: int = DIMENSION,
) -> VersionCommit:
    return VersionCommit(
        tenant_id=job.tenant_id, document_id=document_id, version=version, job_id=job.id,
        worker_id=worker, chunks=new_chunks, format="text", pages=None, keywords=(),
        timings={"parse": 0.01}, warnings=(), embedder_name=embedder,
        embedder_dimension=dimension,
    )


async def claim(queue: JobQueue, job_id: str, worker: str = WORKER) -> Job:
    """Claim the job ``job_id`` (the oldest due ingestion job must be that one)."""
    job = await queue.claim(worker, [INGEST_JOB])
    assert job is not None and job.id == job_id, job
    return job


@dataclass(frozen=True, slots=True)
class Ingested:
    document: Document
    keys: tuple[int, ...]


async def ingest(
    catalog: Catalog, queue: JobQueue, tenant_id: str, collection_id: str,
    texts: Sequence[str], *, seed: int = 0, name: str | None = None,
) -> Ingested:
    """Upload a document whose chunks are ``texts`` and commit it as a worker would; its
    keys are the chunk keys it got, in ordinal order."""
    accepted = await catalog.add_document(
        tenant_id, collection_id, upload("\n".join(texts), title=name), max_attempts=3
    )
    assert accepted.job is not None
    document_id = accepted.document.id
    job = await claim(queue, accepted.job.id)
    new_chunks = chunks(document_id, 1, texts, seed=seed)
    outcome = await catalog.commit_version(version_commit(job, document_id, 1, new_chunks))
    assert outcome is CommitOutcome.COMMITTED
    assert await queue.complete(job.id, WORKER)
    stored = await catalog.list_chunks(tenant_id, document_id, limit=500)
    document = await catalog.get_document(tenant_id, document_id)
    assert document is not None
    return Ingested(document, tuple(chunk.key for chunk in stored))
