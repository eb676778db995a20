"""Ingestion of the eval corpora through a real ``ragd serve``: documents/s, time to
searchable, the share of raw ONNX speed the pipeline keeps, peak RSS (issue 14).

Per set (``python-faq``, ``debian-faq``: every passage of ``../shared/eval/<set>/corpus.jsonl``,
3,977 and 3,049) and keyword mode, one run:

1. a fresh ``ragd serve`` on the embedded default (SQLite + tantivy + usearch) in a fresh data
   dir, the prepared model cache shared with the other benches (``/tmp/ragd-model-cache``,
   prepared once before the runs), ragd's defaults otherwise (4 in-process ingestion workers,
   ``inference_threads`` 1, ``embed_batch`` 64), and ``RAGD_INGESTION__KEYWORDS_ENABLED=false``
   for the ``no_keywords`` run;
2. a tenant registered over HTTP, 4 one-line warm-up documents ingested and awaited (the
   embedder and the keywords model load there, outside every figure);
3. ``--clients`` (4) threads upload the passages as fast as they are answered, each one
   ``POST /api/v1/documents`` with JSON ``{"collection_id", "title", "text"}``: the title
   once, as its own field, the text as it stands (what a client does; ``ragd eval`` also
   repeats the title in the text), every ``clients``-th passage per thread;
4. then ``GET /api/v1/jobs`` every 0.5 s until nothing is queued or running; the figures come
   from the server's timestamps, not from that poll: time to searchable = first upload sent ->
   the last document's ``ready_at`` (the commit that makes a version searchable; the last
   job's ``finished_at`` is recorded too; send times and the server's stamps read one clock,
   on one machine); documents/s and chunks/s over it; the median and p95 of each document's
   upload sent -> ``ready_at``;
5. peak RSS of the server process plus its children (the parser sandboxes), sampled with
   psutil every 50 ms from the first upload to the end (``ingest.RssSampler``), and the CPU
   seconds of the server and its children (live and reaped) over the same window. The sum of
   RSS counts pages that a forked child shares with its parent in both, so the peak PSS of
   the same processes (every 1 s) is reported beside it;
6. with the server idle: every chunk's embed text read back through
   ``GET /api/v1/documents/{id}/chunks`` (heading path, blank line, text:
   ``ragd.stores.catalog.embed_text``, what the pipeline embeds) and embedded in this process
   by ragd's ``OnnxEmbedder.from_directory`` on the same prepared model with the server's
   default model settings (``inference_threads`` 1), in batches of ``embed_batch`` (64), by as
   many callers as the server runs embedder calls at once (``embedder_concurrency``: one per
   core, 2 here; one caller would use half the machine). Raw chunks/s; ingest chunks/s
   / raw chunks/s is the "time-to-searchable ratio" without keywords and the "total ratio"
   with them.

Then the small-documents run: ``--small-docs`` (500) texts of ~1,000 bytes (consecutive
windows of the sets' passages joined by blank lines, cut at a space; titled by the passage a
window starts in), uploaded the same way by the same clients to a fresh server with the
defaults (keywords on): documents/s.

Targets (printed next to the figures, never asserted): time-to-searchable ratio >= 0.85,
total ratio >= 0.7, documents/s >= 26 (judged with keywords on, the default), peak RSS <= 470
MB (judged on the largest peak of any run), small documents >= 20 documents/s. ``--repeat N``
repeats everything (keyword modes rotated); medians are reported (RSS: also the max).

The full measurement (on a quiet machine; at today's ~5 documents/s with keywords, about an
hour a repetition):

    .venv/bin/python bench/ingest_corpus.py --repeat 3 --json bench/results/ingest-corpus.json

A quick check (a strided sample of each corpus; a few minutes):

    .venv/bin/python bench/ingest_corpus.py --limit 200 --small-docs 100

The peer on the same corpora (``../shared/tools/README.md`` sets up ``../peer-venv``; txtai
9.x ``hybrid`` = dense MiniLM + BM25, the indexes ragd's hybrid search builds; one process, no
HTTP, torch on every core; its ``docs_per_s`` is corpus size / index build time with the model
load left out, its ``peak_rss_build_mb`` the peak of its one process up to the end of the
build, ``peak_rss_mb`` with the searches after it). From the repo root:

    ../peer-venv/bin/python ../shared/tools/peer_txtai.py --configs hybrid \\
        ../shared/eval/python-faq ../shared/eval/debian-faq

It embeds ``title + "\\n" + text`` per passage (ragd's chunks carry no title here) and takes
~5 minutes per set. Checked on a 200-passage cut (a copy of the set's folder with
``head -n 200 corpus.jsonl``): 21.8 docs/s, peak RSS 929 MB, 26 s in all.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
    from bench import ingest, search_latency
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]
    import ingest  # type: ignore[no-redef,unused-ignore]
    import search_latency  # type: ignore[no-redef,unused-ignore]

NAME = "ingest_corpus"
CORPORA: dict[str, Path] = {
    "python": ingest.EVAL_ROOT / "python-faq" / "corpus.jsonl",
    "debian": ingest.EVAL_ROOT / "debian-faq" / "corpus.jsonl",
}
MODEL_CACHE = search_latency.MODEL_CACHE
MODES = ("keywords", "no_keywords")
CLIENTS = 4
SMALL_DOCS = 500
SMALL_DOC_BYTES = 1000
QUICK_LIMIT = 100
QUICK_SMALL_DOCS = 100
WAIT_INTERVAL_S = 0.5
#: Longest wait for the ingestion to finish before the run is given up.
HANG_GUARD_S = 3 * 3600.0
#: PSS every this many RSS samples (1 s): reading smaps costs more than reading RSS.
PSS_EVERY = 20
SEARCHABLE_RATIO_MIN = 0.85
TOTAL_RATIO_MIN = 0.7
DOCS_PER_S_MIN = 26.0
PEAK_RSS_MAX_MB = 470.0
SMALL_DOCS_PER_S_MIN = 20.0


# -- the documents -------------------------------------------------------------------------------


def passages(name: str, limit: int | None = None) -> list[dict[str, str]]:
    """The set's corpus entries as ``{"title", "text"}``, an evenly strided ``limit`` of them."""
    lines = CORPORA[name].read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    documents = [{"title": row.get("title") or row["_id"], "text": row["text"]} for row in rows]
    return ingest._strided(documents, limit)


def small_documents(
    source: Sequence[dict[str, str]], count: int, size: int = SMALL_DOC_BYTES
) -> list[dict[str, str]]:
    """``count`` texts of about ``size`` characters: consecutive windows of ``source``'s
    texts joined by blank lines, each cut at its last space; titled by the passage a window
    starts in. Fewer when ``source`` runs out."""
    stream = "\n\n".join(item["text"] for item in source)
    starts, offset = [], 0
    for item in source:
        starts.append(offset)
        offset += len(item["text"]) + 2
    documents: list[dict[str, str]] = []
    position = 0
    while len(documents) < count and position < len(stream):
        end = min(position + size, len(stream))
        if end < len(stream):
            space = stream.rfind(" ", position + size // 2, end)
            end = space if space > position else end
        text = stream[position:end].strip()
        if text:
            title = source[bisect.bisect_right(starts, position) - 1]["title"]
            documents.append({"title": title, "text": text})
        position = end
    return documents


# -- one run: a fresh server, the uploads, the figures ------------------------------------------


def _upload_all(base_url: str, headers: dict[str, str], collection_id: str,
                documents: Sequence[dict[str, str]], clients: int) -> dict[str, Any]:
    """``clients`` threads upload every ``clients``-th document each; when each was sent."""
    lock = threading.Lock()
    sent: dict[str, float] = {}
    statuses: dict[str, int] = {}
    rejected: list[str] = []
    started: list[float] = []

    def upload(offset: int) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=600) as client:
            for document in documents[offset::clients]:
                at = time.time()
                with lock:
                    started.append(at)
                try:
                    response = client.post("/api/v1/documents", json={
                        "collection_id": collection_id, **document})
                except httpx.HTTPError as exc:
                    with lock:
                        rejected.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                with lock:
                    key = str(response.status_code)
                    statuses[key] = statuses.get(key, 0) + 1
                    if response.status_code == 202:
                        sent[response.json()["document_id"]] = at
                    elif response.status_code != 200:  # 200: a duplicate, no work
                        rejected.append(f"{response.status_code} {response.text[:160]}")

    upload_s = common.run_clients(upload, clients)
    return {"sent": sent, "statuses": statuses, "rejected": rejected, "upload_s": upload_s,
            "t0": min(started, default=time.time())}


def _embed_texts(client: httpx.Client, headers: dict[str, str],
                 documents: Sequence[dict[str, Any]]) -> list[str]:
    """Every chunk's embed text, read back through the API."""
    from ragd.stores.catalog import embed_text

    texts: list[str] = []
    for document in documents:
        if document["chunk_count"]:
            chunks = ingest._items_sync(
                client, f"/api/v1/documents/{document['id']}/chunks", headers, {})
            texts.extend(embed_text(chunk["heading_path"], chunk["text"]) for chunk in chunks)
    return texts


def load_embedder(cache_dir: Path) -> Any:
    """ragd's ONNX embedder on the prepared model in ``cache_dir``, with the server's
    default model settings (pooling, limits, ``inference_threads``)."""
    from ragd.models import minilm
    from ragd.models.onnx_embedder import OnnxEmbedder
    from ragd.settings import ModelsSettings

    models = ModelsSettings()
    return OnnxEmbedder.from_directory(
        minilm.prepared_dir(cache_dir, quantize=models.quantize), models)


def raw_throughput(embedder: Any, texts: Sequence[str], *, batch: int,
                   callers: int) -> dict[str, Any]:
    """``texts`` embedded in batches of ``batch``, ``callers`` threads taking the next batch."""
    batches = iter([texts[start:start + batch] for start in range(0, len(texts), batch)])
    lock = threading.Lock()

    def caller(_: int) -> None:
        while True:
            with lock:
                texts_ = next(batches, None)
            if texts_ is None:
                return
            embedder.embed(texts_)

    seconds = common.run_clients(caller, callers)
    return {"chunks": len(texts), "seconds": round(seconds, 3),
            "chunks_per_s": round(len(texts) / seconds, 2) if seconds else None,
            "batch": batch, "callers": callers}


def ingest_run(documents: Sequence[dict[str, str]], *, keywords: bool, root: Path,
               cache_dir: Path, clients: int = CLIENTS, embedder: Any = None) -> dict[str, Any]:
    """One run (see the module docstring); ``embedder`` set = the raw ONNX step too."""
    from ragd.models.runtime import embedder_concurrency
    from ragd.settings import IngestionSettings, ModelsSettings

    defaults = IngestionSettings()
    env = ingest.serve_env(cache_dir)
    if not keywords:
        env["RAGD_INGESTION__KEYWORDS_ENABLED"] = "false"
    root.mkdir(parents=True, exist_ok=True)
    with common.running_server(root / "data", root / "serve.log", env,
                               stop_timeout=60) as server, \
            httpx.Client(base_url=server.base_url, timeout=600) as client:
        headers, (warm, bench) = ingest.register(client, ("warm-up", "bench"))
        ingest.warm_up(client, headers, warm, 2 * defaults.workers)
        cpu_before = ingest._cpu_of([server.pid])
        load_before = os.getloadavg()[0]
        with ingest.RssSampler(pid=server.pid, pss_every=PSS_EVERY) as sampler:
            uploads = _upload_all(server.base_url, headers, bench, documents, clients)
            deadline = time.monotonic() + HANG_GUARD_S
            while ingest._pending(client, headers):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ingestion not done after {HANG_GUARD_S} s")
                time.sleep(WAIT_INTERVAL_S)
            seen_done_s = time.time() - uploads["t0"]
        cpu_s = ingest._cpu_of([server.pid]) - cpu_before
        load_after = os.getloadavg()[0]
        stored = ingest._items_sync(client, "/api/v1/documents", headers,
                                    {"collection_id": bench})
        ids = {document["id"] for document in stored}
        jobs = [job for job in ingest._items_sync(client, "/api/v1/jobs", headers, {})
                if job["kind"] == "ingest" and job.get("document_id") in ids]
        raw = None
        if embedder is not None:
            texts = _embed_texts(client, headers, stored)
            raw = raw_throughput(embedder, texts, batch=defaults.embed_batch,
                                 callers=embedder_concurrency(ModelsSettings()))
    return _figures(uploads, stored, jobs, sampler, cpu_s, seen_done_s, raw, keywords,
                    [round(load_before, 2), round(load_after, 2)])


def _figures(uploads: dict[str, Any], stored: list[dict[str, Any]], jobs: list[dict[str, Any]],
             sampler: Any, cpu_s: float, seen_done_s: float, raw: dict[str, Any] | None,
             keywords: bool, load_avg: list[float]) -> dict[str, Any]:
    t0 = uploads["t0"]
    ready = {document["id"]: ingest._when(document.get("ready_at")) for document in stored
             if document["status"] == "ready"}
    last_ready = max((at for at in ready.values() if at is not None), default=None)
    last_job = max((at for at in (ingest._when(job.get("finished_at")) for job in jobs)
                    if at is not None), default=None)
    searchable_s = (last_ready - t0) if last_ready is not None else seen_done_s
    latencies = [at - uploads["sent"][doc_id] for doc_id, at in ready.items()
                 if at is not None and doc_id in uploads["sent"]]
    chunks = sum(int(document["chunk_count"]) for document in stored)
    accepted = len(uploads["sent"])
    figures: dict[str, Any] = {
        "keywords": keywords,
        "uploaded": sum(uploads["statuses"].values()), "uploads": uploads["statuses"],
        "rejected": uploads["rejected"][:10], "documents": accepted,
        "ready": len(ready), "not_ready": accepted - len(ready),
        "job_errors": sorted({str(job["error"]) for job in jobs if job.get("error")})[:10],
        "chunks": chunks,
        "bytes": sum(int(document["size_bytes"]) for document in stored),
        "upload_s": round(uploads["upload_s"], 3),
        "time_to_searchable_s": round(searchable_s, 3),
        "last_job_finished_s": round(last_job - t0, 3) if last_job is not None else None,
        "wall_poll_s": round(seen_done_s, 3),
        "docs_per_s": round(accepted / searchable_s, 3),
        "chunks_per_s": round(chunks / searchable_s, 2),
        "upload_to_ready": common.latency_summary(latencies),
        "cpu_s": round(cpu_s, 2), "cpu_cores_busy": round(cpu_s / searchable_s, 3),
        "rss": sampler.report(), "raw": raw, "load_avg_1m": load_avg,
    }
    if raw and raw["chunks_per_s"]:
        figures["ingest_over_raw"] = round(figures["chunks_per_s"] / raw["chunks_per_s"], 4)
    return figures


# -- the runs, medians, the tables ---------------------------------------------------------------


def _aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    if not samples:
        return {"runs": 0}
    first = samples[0]

    def median(key: str, *path: str) -> float | None:
        values = []
        for sample in samples:
            value: Any = sample.get(key)
            for step in path:
                value = (value or {}).get(step)
            values.append(value)
        return ingest._median(values, 4)

    chunks = median("chunks")
    return {
        "runs": len(samples), "documents": first["documents"],
        "chunks": int(chunks) if chunks is not None and float(chunks).is_integer() else chunks,
        "bytes": first["bytes"],
        **{key: median(key) for key in ("time_to_searchable_s", "docs_per_s", "chunks_per_s",
                                        "cpu_s", "cpu_cores_busy", "ingest_over_raw")},
        "upload_to_ready_p50_ms": median("upload_to_ready", "p50_ms"),
        "upload_to_ready_p95_ms": median("upload_to_ready", "p95_ms"),
        "raw_chunks_per_s": median("raw", "chunks_per_s"),
        "peak_rss_mb": median("rss", "peak_total_mb"),
        "peak_rss_self_mb": median("rss", "peak_self_mb"),
        "peak_rss_children_mb": median("rss", "peak_children_mb"),
        "peak_rss_max_mb": max(sample["rss"]["peak_total_mb"] for sample in samples),
        "peak_pss_mb": median("rss", "peak_pss_mb"),
        "time_to_searchable_s_all": [sample["time_to_searchable_s"] for sample in samples],
        "not_ready_max": max(sample["not_ready"] for sample in samples),
        "rejected_max": max(len(sample["rejected"]) for sample in samples),
        "job_errors": sorted({error for s in samples for error in s["job_errors"]})[:10],
    }


def run(quick: bool = False, *, sets: Sequence[str] = tuple(CORPORA), repeat: int = 1,
        limit: int | None = None, small_docs: int | None = None, clients: int = CLIENTS,
        keywords_off: bool = True, cache_dir: Path = MODEL_CACHE) -> dict[str, Any]:
    if quick:
        limit = limit or QUICK_LIMIT
        small_docs = QUICK_SMALL_DOCS if small_docs is None else small_docs
    small_docs = SMALL_DOCS if small_docs is None else small_docs
    modes = list(MODES) if keywords_off else ["keywords"]
    corpora = {name: passages(name, limit) for name in sets}
    small = small_documents([p for name in sets for p in passages(name)], small_docs)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "bench": NAME, "environment": common.environment(),
        "config": {
            "sets": {name: str(CORPORA[name]) for name in sets}, "repeat": repeat,
            "limit_passages": limit, "modes": modes, "clients": clients,
            "small_docs": len(small), "small_doc_bytes": SMALL_DOC_BYTES,
            "model_cache": str(cache_dir),
            "server": "ragd serve, embedded default, ragd's defaults; "
                      "RAGD_INGESTION__KEYWORDS_ENABLED=false for no_keywords",
            "raw": "OnnxEmbedder.from_directory(prepared model, ModelsSettings()) in the bench "
                   "process, batches of ingestion.embed_batch, ingestion.workers callers",
        },
        "targets": {"time_to_searchable_ratio_min": SEARCHABLE_RATIO_MIN,
                    "total_ratio_min": TOTAL_RATIO_MIN, "docs_per_s_min": DOCS_PER_S_MIN,
                    "peak_rss_max_mb": PEAK_RSS_MAX_MB,
                    "small_docs_per_s_min": SMALL_DOCS_PER_S_MIN, "judged_on": "median"},
    }
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {mode: [] for mode in modes} for name in sets}
    small_samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ragd-bench-ingest-corpus-") as tmp:
        root = Path(tmp)
        _log("preparing the model")
        cache_dir.mkdir(parents=True, exist_ok=True)
        result["prepare"] = ingest._child("prepare", {"cache_dir": str(cache_dir)}, root)
        embedder = load_embedder(cache_dir)
        number = 0
        for rep in range(repeat):
            order = modes[rep % len(modes):] + modes[:rep % len(modes)]
            for name in sets:
                for mode in order:
                    number += 1
                    _log(f"rep {rep + 1}/{repeat} {name} {mode}: "
                         f"{len(corpora[name])} passages")
                    sample = ingest_run(corpora[name], keywords=mode == "keywords",
                                        root=root / f"run{number}", cache_dir=cache_dir,
                                        clients=clients, embedder=embedder)
                    sample["rep"] = rep + 1
                    samples[name][mode].append(sample)
                    _log(f"  {sample['documents']} documents, {sample['chunks']} chunks "
                         f"searchable in {sample['time_to_searchable_s']} s; raw "
                         f"{(sample['raw'] or {}).get('chunks_per_s')} chunks/s")
            if small:
                number += 1
                _log(f"rep {rep + 1}/{repeat} small documents: {len(small)}")
                sample = ingest_run(small, keywords=True, root=root / f"run{number}",
                                    cache_dir=cache_dir, clients=clients)
                sample["rep"] = rep + 1
                small_samples.append(sample)
                _log(f"  {sample['docs_per_s']} documents/s")
    result["sets"] = {name: {mode: _aggregate(items) for mode, items in by_mode.items()}
                      for name, by_mode in samples.items()}
    result["small"] = _aggregate(small_samples)
    result["samples"] = {"sets": samples, "small": small_samples}
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result["summary"] = summary_rows(result)
    return result


def _log(message: str) -> None:
    print(f"[{NAME}] {message}", file=sys.stderr, flush=True)


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, by_mode in result["sets"].items():
        on, off = by_mode.get("keywords") or {}, by_mode.get("no_keywords") or {}
        if on.get("runs"):
            rows.append(common.row(
                f"{name}: documents/s (keywords on)", on["docs_per_s"], "docs/s",
                target=f">= {DOCS_PER_S_MIN:g}",
                status=common.verdict(on["docs_per_s"], DOCS_PER_S_MIN, lower_is_better=False),
                note=f"{on['documents']} documents, {on['chunks']:.0f} chunks searchable in "
                     f"{on['time_to_searchable_s']} s; {on['chunks_per_s']} chunks/s; "
                     f"upload->ready p50 {_seconds(on['upload_to_ready_p50_ms'])} s"))
            rows.append(common.row(
                f"{name}: total ratio (keywords on)", on["ingest_over_raw"], "",
                target=f">= {TOTAL_RATIO_MIN:g}",
                status=common.verdict(on["ingest_over_raw"], TOTAL_RATIO_MIN,
                                      lower_is_better=False),
                note=f"raw ONNX {on['raw_chunks_per_s']} chunks/s"))
        if off.get("runs"):
            rows.append(common.row(
                f"{name}: time-to-searchable ratio (keywords off)", off["ingest_over_raw"], "",
                target=f">= {SEARCHABLE_RATIO_MIN:g}",
                status=common.verdict(off["ingest_over_raw"], SEARCHABLE_RATIO_MIN,
                                      lower_is_better=False),
                note=f"{off['chunks_per_s']} vs raw ONNX {off['raw_chunks_per_s']} chunks/s; "
                     f"{off['docs_per_s']} documents/s"))
        parts = [part for part in (on, off) if part.get("runs")]
        if parts:
            peak = max(part["peak_rss_max_mb"] for part in parts)
            rows.append(common.row(
                f"{name}: peak RSS, server + sandboxes", peak, "MB",
                target=f"<= {PEAK_RSS_MAX_MB:g}", status=common.verdict(peak, PEAK_RSS_MAX_MB),
                note="the largest of every run; medians RSS / PSS: " + ", ".join(
                    f"{mode} {part['peak_rss_mb']} / {part['peak_pss_mb']}"
                    for mode, part in by_mode.items() if part.get("runs"))))
        not_ready = sum(part["not_ready_max"] + part["rejected_max"] for part in parts)
        if not_ready:
            rows.append(common.row(f"{name}: documents not ready / rejected", not_ready, "",
                                   note="; ".join(parts[0]["job_errors"][:3])))
    small = result["small"]
    if small.get("runs"):
        rows.append(common.row(
            "small documents (~1 KB): documents/s", small["docs_per_s"], "docs/s",
            target=f">= {SMALL_DOCS_PER_S_MIN:g}",
            status=common.verdict(small["docs_per_s"], SMALL_DOCS_PER_S_MIN,
                                  lower_is_better=False),
            note=f"{small['documents']} documents, {small['chunks']:.0f} chunks, keywords on; "
                 f"peak RSS {small['peak_rss_max_mb']} MB"))
    return rows


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 2)


def render(result: dict[str, Any]) -> str:
    headers = ["set", "keywords", "docs", "chunks", "searchable s", "docs/s", "chunks/s",
               "upload->ready p50 s", "raw ONNX chunks/s", "ingest / raw", "peak RSS MB",
               "sandboxes MB", "peak PSS MB", "CPU s"]
    parts = [(name, mode, part) for name, by_mode in result["sets"].items()
             for mode, part in by_mode.items()]
    parts.append(("small (~1 KB)", "keywords", result["small"]))
    lines = [[name, "on" if mode == "keywords" else "off", part["documents"], part["chunks"],
              part["time_to_searchable_s"], part["docs_per_s"], part["chunks_per_s"],
              _seconds(part["upload_to_ready_p50_ms"]), part["raw_chunks_per_s"],
              part["ingest_over_raw"], part["peak_rss_mb"], part["peak_rss_children_mb"],
              part["peak_pss_mb"], part["cpu_s"]]
             for name, mode, part in parts if part.get("runs")]
    config = result["config"]
    return (f"{NAME}: {config['repeat']} repeat(s), medians; {config['clients']} clients; "
            f"{result['environment']['cpu_count']} CPU(s); {result['elapsed_s']} s\n\n"
            f"{common.markdown_table(headers, lines)}\n\n"
            f"{common.summary_table(result['summary'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="set_name", choices=[*CORPORA, "all"], default="all")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions, medians reported")
    parser.add_argument("--limit", type=int, default=None,
                        help="an evenly strided N passages per corpus (default: all)")
    parser.add_argument("--small-docs", type=int, default=None,
                        help=f"documents of the small-documents run (default {SMALL_DOCS}; "
                             "0 skips it)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="uploading threads")
    parser.add_argument("--no-keywords-off", dest="keywords_off", action="store_false",
                        help="skip the runs with RAGD_INGESTION__KEYWORDS_ENABLED=false")
    parser.add_argument("--model-cache", type=Path, default=MODEL_CACHE,
                        help=f"the prepared model cache shared by the runs (default "
                             f"{MODEL_CACHE})")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_LIMIT} passages a set, {QUICK_SMALL_DOCS} small documents")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, metavar="PATH",
                        help="also write the JSON result to PATH")
    args = parser.parse_args(argv)
    sets = list(CORPORA) if args.set_name == "all" else [args.set_name]
    result = run(args.quick, sets=sets, repeat=max(1, args.repeat), limit=args.limit or None,
                 small_docs=args.small_docs, clients=max(1, args.clients),
                 keywords_off=args.keywords_off, cache_dir=args.model_cache)
    common.write_json(args.json_out, result)
    common.emit(result, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
