"""The evaluation harness behind ``ragd eval``: real ingestion, real search, standard metrics.

A BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv) is ingested into a throwaway
tenant through the real pipeline (parse in the sandbox, chunk, embed, index), every query
goes through :class:`~ragd.retrieval.search.SearchService`, chunk hits are folded into
documents (a document ranks at its best chunk), and nDCG@10, Recall@10/@100 and MRR@10 are
computed by :mod:`ragd.retrieval.metrics`. ``from_source`` ingests the original files in
``source/`` instead and counts a hit when a retrieved chunk holds at least half of the gold
answer's words.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragd.container import Services, build_workers
from ragd.ops.percentile import percentile
from ragd.retrieval.beir import Dataset
from ragd.retrieval.metrics import evaluate
from ragd.retrieval.search import Mode, SearchRequest
from ragd.stores.catalog import Upload

ANSWER_SHARE = 0.5
HIT_KS = (1, 5, 10)
DEPTH = 100
_WORD = re.compile(r"\w+")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ScratchDatabase:
    """A database made for one eval run on a PostgreSQL server (``server``: the URL it was
    created through; ``url``: the new database's). Never printed: a URL may hold a password."""

    name: str
    url: str = field(repr=False)
    server: str = field(repr=False)


async def create_database(server: str) -> ScratchDatabase:
    """A new, empty database on the PostgreSQL server of the URL ``server`` (ValueError for
    a URL of another backend)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from ragd.db.backends import POSTGRESQL, backend_name

    if backend_name(server) != POSTGRESQL:
        raise ValueError("--database-url must be a postgresql+asyncpg:// URL")
    name = f"ragd_eval_{secrets.token_hex(6)}"
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    return ScratchDatabase(name=name, url=url, server=server)


async def drop_database(database: ScratchDatabase) -> None:
    """Drop a database made by :func:`create_database` (closing its leftover sessions)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database.server, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@dataclass
class ModeReport:
    mode: str
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    queries: int


@dataclass
class EvalReport:
    dataset: str
    documents: int
    chunks: int
    ingest_seconds: float
    failed: list[str] = field(default_factory=list)
    modes: list[ModeReport] = field(default_factory=list)
    from_source: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "from_source": self.from_source,
            "documents": self.documents, "chunks": self.chunks,
            "ingest_seconds": round(self.ingest_seconds, 2), "failed": self.failed,
            "modes": [
                {"mode": m.mode, "queries": m.queries, "metrics": m.metrics,
                 "latency_ms": m.latency_ms}
                for m in self.modes
            ],
        }


def words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


def answer_hit(chunk_text: str, answer: str, share: float = ANSWER_SHARE) -> bool:
    """Whether the chunk holds at least ``share`` of the answer's distinct words."""
    wanted = words(answer)
    return bool(wanted) and len(wanted & words(chunk_text)) >= share * len(wanted)


async def ingest_all(
    services: Services, tenant_id: str, collection_id: str,
    uploads: Sequence[tuple[str, Upload]], *, concurrency: int, progress: Progress,
) -> tuple[dict[str, str], list[str]]:
    """Upload everything, run workers until every job ended; returns document id → label
    and the labels that failed."""
    by_document: dict[str, str] = {}
    jobs: dict[str, str] = {}
    for label, upload in uploads:
        accepted = await services.ingestion.add(tenant_id, collection_id, upload)
        by_document[accepted.document.id] = label
        if accepted.job is not None:
            jobs[accepted.job.id] = label
    pool = build_workers(services, concurrency)
    pool.start()
    failed: list[str] = []
    try:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            # Two cheap queries per poll, however many jobs there are.
            queued = await services.queue.list(tenant_id, status="queued", limit=1)
            running = await services.queue.list(tenant_id, status="running", limit=1)
            if not queued.items and not running.items:
                break
            if time.monotonic() - last > 10:
                progress(f"{pool.processed}/{len(jobs)} jobs done")
                last = time.monotonic()
    finally:
        await pool.stop()
    for status in ("failed", "cancelled"):
        cursor = None
        while True:
            page = await services.queue.list(tenant_id, status=status, limit=500, cursor=cursor)
            failed.extend(f"{jobs.get(job.id, job.id)}: {job.error}" for job in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    await services.indexes.sync(tenant_id)
    return by_document, failed


async def run_queries(
    services: Services, tenant_id: str, queries: dict[str, str], mode: Mode, *,
    rerank: bool | None, depth: int = DEPTH,
) -> tuple[dict[str, list[Any]], list[float]]:
    """Every query through the search path; returns the hits per query and latencies."""
    results: dict[str, list[Any]] = {}
    latencies: list[float] = []
    for query_id, text in queries.items():
        started = time.perf_counter()
        result = await services.search.search(
            tenant_id, SearchRequest(query=text, top_k=depth, mode=mode, rerank=rerank)
        )
        latencies.append((time.perf_counter() - started) * 1000)
        results[query_id] = result.hits
    return results, latencies


def document_run(
    hits: dict[str, list[Any]], labels: dict[str, str]
) -> dict[str, list[str]]:
    """Chunk hits folded into corpus ids, each at its best chunk's position."""
    run: dict[str, list[str]] = {}
    for query_id, found in hits.items():
        seen: dict[str, None] = {}
        for hit in found:
            label = labels.get(hit.chunk.document_id)
            if label is not None:
                seen.setdefault(label, None)
        run[query_id] = list(seen)
    return run


def latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0}
    return {"p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2)}


def corpus_uploads(dataset: Dataset) -> list[tuple[str, Upload]]:
    """One text document per corpus entry, as a client uploads it: the entry's text as the
    body and its title as the document's title (given once, not also written into the body),
    so ``ragd eval`` measures what users of the API get."""
    uploads = []
    for doc_id, passage in dataset.corpus.items():
        body = passage.text if passage.text.strip() else passage.title or doc_id
        data = body.encode("utf-8")
        uploads.append((doc_id, Upload(
            content=data, content_sha256=hashlib.sha256(data).hexdigest(),
            content_type="text/plain", filename=None, title=passage.title or doc_id,
            metadata={"beir_id": doc_id},
        )))
    return uploads


def mode_metrics(
    dataset: Dataset, run: dict[str, list[str]], k: int
) -> dict[str, float]:
    scores = evaluate(run, dataset.qrels, ks=sorted({k, 10, 100}))
    keep = {f"ndcg@{k}", f"recall@{k}", "recall@100", f"mrr@{k}"}
    return {name: round(value, 4) for name, value in scores.items() if name in keep}


def source_metrics(
    dataset: Dataset, hits: dict[str, list[Any]]
) -> dict[str, float]:
    """hit@1/@5/@10 and MRR@10 where a hit is a chunk holding half the answer's words."""
    totals = {f"hit@{k}": 0.0 for k in HIT_KS} | {"mrr@10": 0.0}
    judged = [qid for qid in dataset.queries if qid in dataset.answers]
    for query_id in judged:
        answer = dataset.answers[query_id]
        ranks = [i for i, hit in enumerate(hits.get(query_id, [])[:10], start=1)
                 if answer_hit(hit.chunk.text, answer)]
        first = ranks[0] if ranks else None
        for k in HIT_KS:
            totals[f"hit@{k}"] += 1.0 if first is not None and first <= k else 0.0
        totals["mrr@10"] += 1.0 / first if first is not None else 0.0
    count = max(1, len(judged))
    return {name: round(value / count, 4) for name, value in totals.items()}


def source_files(source: Path) -> list[Path]:
    """The files under ``source/`` that MANIFEST.tsv lists (else every file)."""
    manifest = source / "MANIFEST.tsv"
    if manifest.exists():
        rows = manifest.read_text(encoding="utf-8").splitlines()[1:]
        paths = [source / row.split("\t", 1)[0] for row in rows if row.strip()]
        return [path for path in paths if path.is_file()]
    return sorted(path for path in source.rglob("*") if path.is_file())
