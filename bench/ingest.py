"""Ingestion throughput: upload the eval source sets through the HTTP API, time the pipeline.

Each measured run happens in a fresh child interpreter (this file with ``--child ingest``) on
a fresh data dir, with the model cache dir prepared once beforehand by the parent (timed and
reported, never inside a run). The child builds the real app (``create_app``) and runs its
lifespan, so the in-process worker pool runs with ragd's defaults (``ingestion.workers`` = 2,
``parse_concurrency`` = 2, ``embed_batch`` = 64). It then:

1. loads the embedder (``runtime.embed`` + ``runtime.keywords`` on a warm-up text; reported
   as ``model_load_s``, outside every other figure), registers a tenant over HTTP and creates
   a collection;
2. uploads every file listed in the set's ``source/MANIFEST.tsv`` (one client, one upload at
   a time, ``POST /api/v1/documents`` multipart, the content type guessed from the name)
   while the workers already run; polls ``GET /api/v1/jobs?status=queued|running`` every
   50 ms until nothing is left;
3. wall time = first upload sent -> last job ``finished_at`` (the poll that saw the end
   bounds it too); files/s, chunks/s, MB/s of source bytes;
4. per-stage time = the sum over jobs of the job's ``timings`` (``parse``, ``chunk``,
   ``embed``, ``index``; recorded by ``ragd.ingestion.pipeline``; ``keywords`` is the part of
   ``embed`` spent ranking keywords from the forward pass, so it is not a stage of its own);
   with two workers the sum exceeds the wall time. "embedding share" = "model share" = embed
   / sum of stages;
5. peak RSS: a thread samples ``psutil`` every 50 ms from the first upload to the last job:
   this process, and its children (the parser sandboxes; a child caught between fork and
   exec still shows this process's shared pages and is skipped) separately, compared with
   ``memory.soft_limit_mb``; plus CPU seconds of the process and of its reaped children;
6. raw throughput, after the ingestion of every run, same process and loaded model: every
   chunk's embed text (heading path + text, read back through
   ``GET /api/v1/documents/{id}/chunks``) embedded with ``services.runtime.embed`` in
   batches of 64, one caller; ingestion chunks/s over raw
   chunks/s is the fraction of pure embedding speed the whole pipeline keeps.

A second run per set uses ``ingestion.keywords_enabled=false`` (``--no-keywords-run`` skips
it). ``--repeat N`` repeats everything (order rotated), medians are reported.

    .venv/bin/python bench/ingest.py [--set python|debian|all] [--repeat 3]
                                     [--no-keywords-run] [--limit N] [--json out.json]

Scale-out (``--backend postgresql``, or ``--database-url`` for a server someone else runs):
the same uploads through real processes instead, in two set-ups per set and repetition (order
rotated), keywords on:

* ``embedded``: one ``ragd serve`` on SQLite with its 2 in-process ingestion workers (the
  default);
* ``postgresql``: one ``ragd serve`` without ingestion workers and ``--worker-processes``
  (2) ``ragd worker --concurrency 1`` processes, each with its own data dir, on a fresh
  PostgreSQL database: as many job loops as the embedded default, in separate processes.

Each run first ingests ``2 x loops`` one-line warm-up documents (so the model loads are not
in the figures, as far as the claims spread them), then uploads the strided files one at a
time and waits until no job is queued or running; wall time = first upload -> last job's
``finished_at``; documents/s, chunks/s, CPU cores busy (every process and its children) and
RSS per process at the end; medians over ``--repeat``.

    .venv/bin/python bench/ingest.py --backend postgresql [--worker-processes 2]
                                     [--set ...] [--repeat 3] [--limit N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mimetypes
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "ingest"
EVAL_ROOT = Path(os.environ.get("RAGD_BENCH_EVAL", "/work/shared/eval"))
if not EVAL_ROOT.is_dir():  # the repo's sibling layout (../shared/eval)
    EVAL_ROOT = common.REPO_ROOT.parent / "shared" / "eval"
SETS: dict[str, Path] = {
    "python": EVAL_ROOT / "python-faq" / "source",
    "debian": EVAL_ROOT / "debian-faq" / "source",
}
STAGES = ("parse", "chunk", "embed", "keywords", "index")
#: The stages that add up to a job's time (``keywords`` is spent within ``embed``).
SUMMED = ("parse", "chunk", "embed", "index")
DEFAULT_REPEAT = 3
QUICK_REPEAT = 1
#: --quick (and run.py --quick): an evenly strided sample per set; every file takes ~1 h a
#: repetition on 2 cores (~10k chunks a set, keyword extraction ~0.15 s a chunk).
QUICK_LIMIT = 40
DEFAULT_LIMIT = 60
RAW_BATCH = 64
SAMPLE_INTERVAL_S = 0.05
POLL_INTERVAL_S = 0.05
EMBED_SHARE_TARGET = 0.8
CHILD_TIMEOUT_S = 3600.0
MIB = 2**20
PASSWORD = "violet-harbour-trumpet-42"


# -- the corpus ---------------------------------------------------------------------------------


def manifest(source: Path) -> list[dict[str, str]]:
    """The rows of ``source/MANIFEST.tsv`` (path, role, ...), in file order."""
    lines = (source / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]
    missing = [row["path"] for row in rows if not (source / row["path"]).is_file()]
    if missing:
        raise RuntimeError(f"{len(missing)} manifest files missing under {source}: {missing[:3]}")
    return rows


def _strided(rows: Sequence[dict[str, str]], limit: int | None) -> list[dict[str, str]]:
    if not limit or limit >= len(rows):
        return list(rows)
    return [rows[(index * len(rows)) // limit] for index in range(limit)]


# -- the child: one ingestion run -----------------------------------------------------------------


class RssSampler:
    """Samples RSS of a process (this one unless ``pid``) and, separately, of its
    descendants every ``interval``; with ``pss_every`` = n, also the PSS of all of them
    every n-th sample (slower to read; counts pages a fork shares with its parent once,
    where the sum of RSS counts them in every process)."""

    def __init__(self, interval: float = SAMPLE_INTERVAL_S, *, pid: int | None = None,
                 pss_every: int = 0) -> None:
        self.interval = interval
        self.pss_every = pss_every
        self.peak_pss = 0
        self.proc = psutil.Process(pid)
        self.peak_self = 0
        self.peak_children = 0
        self.peak_total = 0
        self.max_children_alive = 0
        self.samples = 0
        self.by_child: dict[int, list[Any]] = {}  # pid -> [command, peak rss]
        #: A child between fork and exec still shows its parent's cmdline and (shared,
        #: copy-on-write) RSS: it is skipped, or every spawn would look like a 400 MB sandbox.
        self.own_cmdline = self.proc.cmdline()
        self.pre_exec_skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        own = self.proc.memory_info().rss
        children = 0
        counted = [self.proc]
        with contextlib.suppress(psutil.Error):
            for child in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    cmdline = child.cmdline()
                    if cmdline == self.own_cmdline:
                        self.pre_exec_skipped += 1
                        continue
                    rss = child.memory_info().rss
                    children += rss
                    counted.append(child)
                    seen = self.by_child.setdefault(child.pid, [" ".join(cmdline[:5])[:120], 0])
                    seen[1] = max(seen[1], rss)
        self.peak_self = max(self.peak_self, own)
        self.peak_children = max(self.peak_children, children)
        self.peak_total = max(self.peak_total, own + children)
        self.max_children_alive = max(self.max_children_alive, len(counted) - 1)
        if self.pss_every and self.samples % self.pss_every == 0:
            pss = 0
            for proc in counted:
                with contextlib.suppress(psutil.Error):
                    pss += proc.memory_full_info().pss
            self.peak_pss = max(self.peak_pss, pss)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, Any]:
        return {
            "peak_self_mb": common.bytes_to_mb(self.peak_self),
            "peak_children_mb": common.bytes_to_mb(self.peak_children),
            "peak_total_mb": common.bytes_to_mb(self.peak_total),
            "peak_pss_mb": common.bytes_to_mb(self.peak_pss) if self.pss_every else None,
            "max_children_alive": self.max_children_alive,
            "samples": self.samples,
            "children_seen": len(self.by_child),
            "pre_exec_samples_skipped": self.pre_exec_skipped,
            "largest_children": [
                {"command": command, "peak_mb": common.bytes_to_mb(rss)}
                for command, rss in sorted(self.by_child.values(), key=lambda item: -item[1])[:3]
            ],
        }


def _cpu() -> dict[str, float]:
    times = psutil.Process().cpu_times()
    return {"self": times.user + times.system,
            "children": times.children_user + times.children_system}


async def _pages(client: Any, path: str, headers: dict[str, str],
                 params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": 200, **(params or {})}
        if cursor:
            query["cursor"] = cursor
        response = await client.get(path, params=query, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        page = response.json()
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def _when(value: str | None) -> float | None:
    return None if not value else datetime.fromisoformat(value).timestamp()


async def _ingest(args: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from ragd.app import create_app
    from ragd.settings import load_settings
    from ragd.stores.catalog import embed_text

    source = Path(args["source"])
    rows = _strided(manifest(source), args.get("limit"))
    files = [(row, (source / row["path"]).read_bytes()) for row in rows]
    settings = load_settings(
        None, data_dir=Path(args["data_dir"]), jwt_secret=common.bench_secret(),
        bootstrap_admin=False, models={"cache_dir": Path(args["cache_dir"])},
        ingestion={"keywords_enabled": bool(args["keywords"])},
        auth={"access_token_ttl_seconds": 24 * 3600},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        started = time.perf_counter()
        await services.runtime.embed(["warm-up: load the embedder"])
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        await services.runtime.keywords("Warm-up: how do I reverse a list in Python in place?")
        keywords_warmup_s = time.perf_counter() - started
        transport = httpx.ASGITransport(app=app, client=(common.LOOPBACK, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.bench",
                                     timeout=600) as client:
            response = await client.post("/api/v1/auth/register", json={
                "email": "bench@ingest.example.org", "password": PASSWORD,
                "tenant_name": "bench-ingest"})
            if response.status_code != 201:
                raise RuntimeError(f"register: {response.status_code} {response.text[:300]}")
            headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
            response = await client.post("/api/v1/collections", json={"name": "bench"},
                                         headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"collection: {response.status_code} {response.text[:300]}")
            collection_id = response.json()["id"]

            uploads: dict[str, int] = {}
            job_ids: list[str] = []
            rejected: list[str] = []
            cpu_before = _cpu()
            load_before = os.getloadavg()[0]
            with RssSampler() as sampler:
                t0_wall = time.time()
                t0 = time.perf_counter()
                for row, data in files:
                    name = Path(row["path"]).name
                    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
                    response = await client.post(
                        "/api/v1/documents", files={"file": (name, data, ctype)},
                        data={"collection_id": collection_id}, headers=headers)
                    uploads[str(response.status_code)] = uploads.get(
                        str(response.status_code), 0) + 1
                    if response.status_code == 202:
                        job_ids.append(response.json()["job_id"])
                    elif response.status_code != 200:
                        rejected.append(f"{row['path']}: {response.status_code} "
                                        f"{response.text[:160]}")
                upload_s = time.perf_counter() - t0
                polls = 0
                while True:
                    polls += 1
                    pending = 0
                    for status in ("queued", "running"):
                        response = await client.get(
                            "/api/v1/jobs", params={"status": status, "limit": 1},
                            headers=headers)
                        pending += len(response.json()["items"])
                    if not pending:
                        break
                    await asyncio.sleep(POLL_INTERVAL_S)
                seen_done_s = time.perf_counter() - t0
            cpu_after = _cpu()
            load_after = os.getloadavg()[0]

            jobs = [job for job in await _pages(client, "/api/v1/jobs", headers)
                    if job["kind"] == "ingest"]
            documents = await _pages(client, "/api/v1/documents", headers,
                                     {"collection_id": collection_id})
            finished = [_when(job.get("finished_at")) for job in jobs]
            last = max((value for value in finished if value is not None), default=None)
            wall_s = (last - t0_wall) if last is not None else seen_done_s

            texts: list[str] = []
            for document in documents:
                if document["chunk_count"]:
                    for chunk in await _pages(
                        client, f"/api/v1/documents/{document['id']}/chunks", headers
                    ):
                        texts.append(embed_text(chunk["heading_path"], chunk["text"]))

        raw: dict[str, Any] | None = None
        if args.get("raw") and texts:
            started = time.perf_counter()
            for start in range(0, len(texts), RAW_BATCH):
                await services.runtime.embed(texts[start:start + RAW_BATCH])
            seconds = time.perf_counter() - started
            raw = {"chunks": len(texts), "seconds": round(seconds, 3),
                   "chunks_per_s": round(len(texts) / seconds, 2), "batch": RAW_BATCH}
        soft_mb = settings.memory.soft_limit_mb
        inference_threads = settings.models.inference_threads

    stage_sums = {stage: 0.0 for stage in STAGES}
    job_totals = 0.0
    for job in jobs:
        for stage in STAGES:
            stage_sums[stage] += float(job["timings"].get(stage, 0.0))
        job_totals += float(job["timings"].get("total", 0.0))
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
    formats: dict[str, int] = {}
    for document in documents:
        key = str(document.get("format"))
        formats[key] = formats.get(key, 0) + 1
    chunks = sum(int(document["chunk_count"]) for document in documents)
    tokens = sum(int(document["token_count"]) for document in documents)
    nbytes = sum(len(data) for _, data in files)
    per_doc = sorted(
        ({"path": document.get("filename"), "chunks": document["chunk_count"],
          **{k: round(float(v), 3) for k, v in document["timings"].items()}}
         for document in documents),
        # Documents record the stages before the index commit (no index/total there).
        key=lambda item: -sum(float(item.get(stage, 0.0)) for stage in STAGES),
    )
    by_id = {document["id"]: document for document in documents}
    timeline = sorted(
        ([_when(job.get("finished_at")) or 0.0, by_id.get(str(job.get("document_id")), {}).get(
            "chunk_count", 0), *(round(float(job["timings"].get(s, 0.0)), 4) for s in STAGES)]
         for job in jobs),
        key=lambda item: item[0],
    )
    return {
        "files": len(files),
        "bytes": nbytes,
        "roles": _count(row.get("role", "?") for row, _ in files),
        "uploads": uploads,
        "rejected": rejected[:20],
        "jobs": len(jobs),
        "job_statuses": statuses,
        "job_errors": sorted({str(job["error"]) for job in jobs if job.get("error")})[:20],
        "retried_jobs": sum(1 for job in jobs if int(job.get("attempts", 1)) > 1),
        "documents": len(documents),
        "formats": formats,
        "chunks": chunks,
        "chunks_read_back": len(texts),
        "tokens": tokens,
        "model_load_s": round(load_s, 3),
        "keywords_warmup_s": round(keywords_warmup_s, 3),
        "upload_s": round(upload_s, 3),
        "wall_s": round(wall_s, 3),
        "wall_poll_s": round(seen_done_s, 3),
        "polls": polls,
        "stage_sums_s": {k: round(v, 3) for k, v in stage_sums.items()},
        "job_totals_s": round(job_totals, 3),
        "cpu_s": {k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_before},
        "rss": {**sampler.report(), "soft_limit_mb": soft_mb},
        "raw": raw,
        "slowest_documents": per_doc[:5],
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "jobs_by_finish": {"columns": ["chunks", *STAGES],
                           "rows": [item[1:] for item in timeline]},
        "workers": settings.ingestion.workers,
        "inference_threads": inference_threads,
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def child_ingest(args: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_ingest(args))


def child_prepare(args: dict[str, Any]) -> dict[str, Any]:
    from ragd.models import minilm

    started = time.perf_counter()
    prepared = minilm.prepare(Path(args["cache_dir"]))
    return {"seconds": round(time.perf_counter() - started, 3), "reused": prepared.reused,
            "variant": prepared.variant}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ingest": child_ingest,
    "prepare": child_prepare,
}


# -- the parent -----------------------------------------------------------------------------------


def _child(name: str, args: dict[str, Any], cwd: Path) -> dict[str, Any]:
    command = [common.ragd_python(), str(Path(__file__).resolve()), "--child", name,
               json.dumps(args, default=str)]
    started = time.perf_counter()
    env = common.server_env({"RAGD_LOG_LEVEL": "WARNING"})
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=CHILD_TIMEOUT_S, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"child {name} failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["child_wall_s"] = round(time.perf_counter() - started, 3)
    return result


def _derive(sample: dict[str, Any]) -> dict[str, Any]:
    """Rates and shares of one run."""
    stages = sample["stage_sums_s"]
    total = sum(stages[stage] for stage in SUMMED) or 1e-9
    wall = sample["wall_s"] or 1e-9
    derived = {
        "files_per_s": sample["files"] / wall,
        "chunks_per_s": sample["chunks"] / wall,
        "mb_per_s": sample["bytes"] / MIB / wall,
        "stage_total_s": total,
        "embedding_share": stages["embed"] / total,
        "model_share": stages["embed"] / total,
        "worker_busy": sample["job_totals_s"] / (wall * max(1, sample["workers"])),
        "cpu_cores_busy": (sample["cpu_s"]["self"] + sample["cpu_s"]["children"]) / wall,
    }
    for stage in STAGES:
        derived[f"share_{stage}"] = stages[stage] / total
    if sample.get("raw"):
        derived["raw_chunks_per_s"] = sample["raw"]["chunks_per_s"]
        derived["ingest_over_raw"] = derived["chunks_per_s"] / sample["raw"]["chunks_per_s"]
    return derived


def _median(values: Sequence[float | None], digits: int = 4) -> float | None:
    clean = [value for value in values if value is not None]
    return round(statistics.median(clean), digits) if clean else None


def _aggregate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    if not samples:
        return {"runs": 0}
    first = samples[0]
    derived = [_derive(sample) for sample in samples]
    keys = sorted({key for item in derived for key in item})
    out: dict[str, Any] = {
        "runs": len(samples),
        "files": first["files"], "bytes": first["bytes"], "roles": first["roles"],
        "formats": first["formats"],
        "chunks": _median([s["chunks"] for s in samples], 1),
        "tokens": _median([s["tokens"] for s in samples], 1),
        "wall_s": _median([s["wall_s"] for s in samples], 3),
        "wall_s_all": [s["wall_s"] for s in samples],
        "upload_s": _median([s["upload_s"] for s in samples], 3),
        "model_load_s": _median([s["model_load_s"] for s in samples], 3),
        "stage_sums_s": {stage: _median([s["stage_sums_s"][stage] for s in samples], 3)
                         for stage in STAGES},
        "job_totals_s": _median([s["job_totals_s"] for s in samples], 3),
        "cpu_s": {k: _median([s["cpu_s"][k] for s in samples], 2) for k in ("self", "children")},
        "rss": {k: _median([s["rss"][k] for s in samples], 1)
                for k in ("peak_self_mb", "peak_children_mb", "peak_total_mb",
                          "max_children_alive")},
        "rss_peak_total_max_mb": max(s["rss"]["peak_total_mb"] for s in samples),
        "largest_children": max(samples, key=lambda s: s["rss"]["peak_children_mb"] or 0)[
            "rss"].get("largest_children"),
        "soft_limit_mb": first["rss"]["soft_limit_mb"],
        "job_statuses": first["job_statuses"],
        "failed_jobs_max": max(s["job_statuses"].get("failed", 0) for s in samples),
        "job_errors": sorted({e for s in samples for e in s["job_errors"]})[:20],
        "rejected_uploads_max": max(len(s["rejected"]) for s in samples),
        "uploads": first["uploads"],
        "load_avg_1m": [s["load_avg_1m"] for s in samples],
    }
    for key in keys:
        out[key] = _median([item.get(key) for item in derived], 4)
    raws = [s["raw"] for s in samples if s.get("raw")]
    if raws:
        out["raw"] = {"chunks": raws[0]["chunks"],
                      "seconds": _median([r["seconds"] for r in raws], 3),
                      "chunks_per_s": _median([r["chunks_per_s"] for r in raws], 2)}
    return out


def run(
    quick: bool = False,
    *,
    sets: Sequence[str] = ("python", "debian"),
    repeat: int | None = None,
    keywords_run: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:
    repeat = max(1, min(repeat if repeat is not None else
                        (QUICK_REPEAT if quick else DEFAULT_REPEAT), 20))
    if limit is None:
        # Every file of both trees takes about an hour a repetition here: a strided sample
        # unless asked (--limit 0 = every file).
        limit = QUICK_LIMIT if quick else DEFAULT_LIMIT
    if limit == 0:
        limit = None
    modes = ["keywords", "no_keywords"] if keywords_run else ["keywords"]
    started = time.perf_counter()
    result: dict[str, Any] = {
        "bench": NAME,
        "config": {
            "sets": {name: str(SETS[name]) for name in sets},
            "repeat": repeat, "modes": modes, "limit_files": limit,
            "path": "in-process app (create_app + lifespan) over httpx.ASGITransport; "
                    "uploads one at a time, multipart",
            "settings": "ragd defaults (ingestion.workers=2, parse_concurrency=2, "
                        "embed_batch=64, memory.soft_limit_mb=1536) except models.cache_dir="
                        "<tmp>/models-cache (prepared once), a fresh data dir per run, "
                        "access token TTL 24 h, and keywords_enabled=false for no_keywords",
            "raw": f"services.runtime.embed(embed texts), batches of {RAW_BATCH}, one caller, "
                   "after the ingestion, in the same process (every run)",
            "rss_sample_interval_s": SAMPLE_INTERVAL_S,
        },
        "environment": common.environment(),
        "targets": {"embedding_share_min": EMBED_SHARE_TARGET, "judged_on": "median"},
    }
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {mode: [] for mode in modes} for name in sets}
    with tempfile.TemporaryDirectory(prefix="ragd-bench-ingest-") as tmp:
        root = Path(tmp)
        cache_dir = root / "models-cache"
        print("[ingest] preparing the model", file=sys.stderr, flush=True)
        result["prepare"] = _child("prepare", {"cache_dir": str(cache_dir)}, root)
        number = 0
        for rep in range(repeat):
            order = modes[rep % len(modes):] + modes[:rep % len(modes)]  # rotate
            for name in sets:
                for mode in order:
                    number += 1
                    print(f"[ingest] rep {rep + 1}/{repeat} {name} {mode}",
                          file=sys.stderr, flush=True)
                    sample = _child("ingest", {
                        "source": str(SETS[name]), "data_dir": str(root / f"run{number}" / "data"),
                        "cache_dir": str(cache_dir), "keywords": mode == "keywords",
                        "raw": True, "limit": limit}, root)
                    sample["rep"] = rep + 1
                    samples[name][mode].append(sample)
                    print(f"[ingest]   {sample['files']} files, {sample['chunks']} chunks in "
                          f"{sample['wall_s']} s", file=sys.stderr, flush=True)
    result["sets"] = {name: {mode: _aggregate(items) for mode, items in by_mode.items()}
                      for name, by_mode in samples.items()}
    result["samples"] = samples
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result["summary"] = summary_rows(result)
    return result


# -- scale-out: real processes, the embedded default vs ragd worker processes on PostgreSQL --------

SCALEOUT_CONFIGS = ("embedded", "postgresql")


def _cpu_of(pids: Sequence[int]) -> float:
    """CPU seconds of the processes, their live children and their reaped ones."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
    return total


def _pending(client: Any, headers: dict[str, str]) -> int:
    pending = 0
    for status in ("queued", "running"):
        response = client.get("/api/v1/jobs", params={"status": status, "limit": 1},
                              headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"jobs: {response.status_code} {response.text[:300]}")
        pending += len(response.json()["items"])
    return pending


def serve_env(cache_dir: Path) -> dict[str, str]:
    """The variables of a bench's ``ragd serve`` / ``ragd worker`` (over
    :func:`common.server_env`): the shared prepared model cache, no admin bootstrap, quiet
    logs, tokens that outlive a long run."""
    return {"RAGD_BOOTSTRAP_ADMIN": "false", "RAGD_MODELS__CACHE_DIR": str(cache_dir),
            "RAGD_LOG_LEVEL": "WARNING", "RAGD_AUTH__ACCESS_TOKEN_TTL_SECONDS": str(24 * 3600)}


def register(client: Any, collections: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Register the bench tenant over ``client`` (an ``httpx.Client`` on a server) and create
    ``collections``: the auth headers and the collections' ids, in order."""
    response = client.post("/api/v1/auth/register", json={
        "email": "bench@ingest.example.org", "password": PASSWORD,
        "tenant_name": "bench-ingest"})
    if response.status_code != 201:
        raise RuntimeError(f"register: {response.status_code} {response.text[:300]}")
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    ids = []
    for name in collections:
        response = client.post("/api/v1/collections", json={"name": name}, headers=headers)
        if response.status_code != 201:
            raise RuntimeError(f"collection: {response.status_code} {response.text[:300]}")
        ids.append(str(response.json()["id"]))
    return headers, ids


def warm_up(client: Any, headers: dict[str, str], collection_id: str, documents: int) -> None:
    """Ingest ``documents`` one-line texts and wait for them: every job loop has loaded its
    models (embedder, keywords) and the figures after this leave the loads out."""
    for number in range(documents):
        client.post("/api/v1/documents", headers=headers, json={
            "collection_id": collection_id, "title": f"warm-up {number}",
            "text": f"Warm-up document {number}: how do I reverse a list in place?"})
    while _pending(client, headers):
        time.sleep(POLL_INTERVAL_S)


def _scaleout_sample(config: str, source: Path, limit: int | None, root: Path, cache_dir: Path,
                     pg: Any, worker_processes: int) -> dict[str, Any]:
    import httpx

    rows = _strided(manifest(source), limit)
    files = [(row, (source / row["path"]).read_bytes()) for row in rows]
    env = serve_env(cache_dir)
    url = None
    if config == "postgresql":
        url = common.fresh_database(pg, "ingest")
        env["RAGD_DATABASE__URL"] = url
    workers = worker_processes if url else 0
    loops = worker_processes if url else 2
    try:
        with common.running_cluster(root, env, replicas=1, workers=workers,
                                    worker_concurrency=1, stop_timeout=60) as cluster, \
                httpx.Client(base_url=cluster.base_urls[0], timeout=600) as client:
            headers, collections = register(client, ("warm-up", "bench"))
            warm_up(client, headers, collections[0], 2 * loops)
            pids = [process.pid for process in [*cluster.replicas, *cluster.workers]]
            cpu_before = _cpu_of(pids)
            load_before = os.getloadavg()[0]
            t0_wall = time.time()
            t0 = time.perf_counter()
            statuses: dict[str, int] = {}
            for row, data in files:
                name = Path(row["path"]).name
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
                response = client.post(
                    "/api/v1/documents", files={"file": (name, data, ctype)},
                    data={"collection_id": collections[1]}, headers=headers)
                statuses[str(response.status_code)] = statuses.get(
                    str(response.status_code), 0) + 1
            upload_s = time.perf_counter() - t0
            while _pending(client, headers):
                time.sleep(POLL_INTERVAL_S)
            seen_done_s = time.perf_counter() - t0
            cpu_s = _cpu_of(pids) - cpu_before
            load_after = os.getloadavg()[0]
            rss = cluster.rss_mb()
            documents = _items_sync(client, "/api/v1/documents", headers,
                                    {"collection_id": collections[1]})
            ids = {document["id"] for document in documents}
            jobs = [job for job in _items_sync(client, "/api/v1/jobs", headers, {})
                    if job["kind"] == "ingest" and job.get("document_id") in ids]
    finally:
        if pg is not None and url:
            common.drop_database(pg, url)
    finished = [_when(job.get("finished_at")) for job in jobs]
    last = max((value for value in finished if value is not None), default=None)
    wall_s = (last - t0_wall) if last is not None else seen_done_s
    job_statuses = _count(job["status"] for job in jobs)
    stage_sums = {stage: round(sum(float(job["timings"].get(stage, 0.0)) for job in jobs), 3)
                  for stage in STAGES}
    chunks = sum(int(document["chunk_count"]) for document in documents)
    return {
        "config": config, "job_loops": loops, "worker_processes": workers,
        "files": len(files), "bytes": sum(len(data) for _, data in files),
        "uploads": statuses, "documents": len(documents), "chunks": chunks,
        "ready": sum(document["status"] == "ready" for document in documents),
        "job_statuses": job_statuses,
        "job_errors": sorted({str(job["error"]) for job in jobs if job.get("error")})[:10],
        "upload_s": round(upload_s, 3), "wall_s": round(wall_s, 3),
        "wall_poll_s": round(seen_done_s, 3),
        "documents_per_s": round(len(documents) / wall_s, 3),
        "chunks_per_s": round(chunks / wall_s, 2),
        "cpu_cores_busy": round(cpu_s / wall_s, 2),
        "stage_sums_s": stage_sums, "rss_mb_end": rss,
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
    }


def _items_sync(client: Any, path: str, headers: dict[str, str],
                params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=query, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        page = response.json()
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def run_scaleout(quick: bool = False, *, sets: Sequence[str] = ("python", "debian"),
                 repeat: int | None = None, limit: int | None = None,
                 database_url: str | None = None, worker_processes: int = 2) -> dict[str, Any]:
    """The embedded default vs ``ragd worker`` processes on PostgreSQL, through real
    processes (see the module docstring)."""
    repeat = max(1, min(repeat if repeat is not None else
                        (QUICK_REPEAT if quick else DEFAULT_REPEAT), 20))
    if limit is None:
        limit = QUICK_LIMIT if quick else DEFAULT_LIMIT
    started = time.perf_counter()
    result: dict[str, Any] = {
        "bench": NAME, "mode": "scaleout", "environment": common.environment(),
        "config": {"sets": {name: str(SETS[name]) for name in sets}, "repeat": repeat,
                   "limit_files": limit or None, "worker_processes": worker_processes,
                   "database": common.redact_url(database_url) or
                   "embedded PostgreSQL (tests/postgres.py; fsync off)"},
    }
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {config: [] for config in SCALEOUT_CONFIGS} for name in sets}
    with tempfile.TemporaryDirectory(prefix="ragd-bench-ingest-") as tmp, \
            common.postgres_server("postgresql", database_url) as pg:
        root = Path(tmp)
        cache_dir = root / "models-cache"
        print("[ingest] preparing the model", file=sys.stderr, flush=True)
        result["prepare"] = _child("prepare", {"cache_dir": str(cache_dir)}, root)
        number = 0
        for rep in range(repeat):
            order = SCALEOUT_CONFIGS[rep % 2:] + SCALEOUT_CONFIGS[:rep % 2]
            for name in sets:
                for config in order:
                    number += 1
                    print(f"[ingest] rep {rep + 1}/{repeat} {name} {config}",
                          file=sys.stderr, flush=True)
                    sample = _scaleout_sample(config, SETS[name], limit or None,
                                              root / f"run{number}", cache_dir, pg,
                                              worker_processes)
                    sample["rep"] = rep + 1
                    samples[name][config].append(sample)
                    print(f"[ingest]   {sample['documents']} documents, {sample['chunks']} "
                          f"chunks in {sample['wall_s']} s", file=sys.stderr, flush=True)
    result["sets"] = {
        name: {config: {
            "runs": len(items),
            "files": items[0]["files"], "job_loops": items[0]["job_loops"],
            "worker_processes": items[0]["worker_processes"],
            **{key: _median([item[key] for item in items], 3) for key in (
                "chunks", "wall_s", "documents_per_s", "chunks_per_s", "cpu_cores_busy")},
            "wall_s_all": [item["wall_s"] for item in items],
            "not_ready_max": max(item["documents"] - item["ready"] for item in items),
            "job_errors": sorted({e for item in items for e in item["job_errors"]})[:10],
        } for config, items in by_config.items() if items}
        for name, by_config in samples.items()}
    result["samples"] = samples
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result["summary"] = scaleout_rows(result)
    return result


def scaleout_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, by_config in result["sets"].items():
        embedded = by_config.get("embedded")
        for config, part in by_config.items():
            label = ("embedded (SQLite, 2 in-process workers)" if config == "embedded" else
                     f"PostgreSQL, {part['worker_processes']} ragd worker processes")
            ratio = ""
            if embedded and config != "embedded" and embedded["chunks_per_s"]:
                ratio = f"; x{part['chunks_per_s'] / embedded['chunks_per_s']:.2f} vs embedded"
            rows.append(common.row(
                f"{name}: {label}", part["documents_per_s"], "docs/s",
                note=f"{part['chunks_per_s']} chunks/s; {part['files']} files, "
                     f"{part['chunks']:.0f} chunks, wall {part['wall_s']} s{ratio}; "
                     f"{part['cpu_cores_busy']} cores busy; not ready "
                     f"{part['not_ready_max']}"))
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, by_mode in result["sets"].items():
        part = by_mode.get("keywords", {})
        if not part.get("runs"):
            continue
        size = f"{part['files']} files, {part['bytes'] / MIB:.1f} MB, {part['chunks']:.0f} chunks"
        rows.append(common.row(
            f"{name}: ingestion throughput", part["chunks_per_s"], "chunks/s",
            note=f"{size}; wall {part['wall_s']} s; {part['files_per_s']:.2f} files/s, "
                 f"{part['mb_per_s']:.3f} MB/s"))
        rows.append(common.row(
            f"{name}: embedding share (embed / stages)", round(100 * part["embedding_share"], 1),
            "%", target=f">= {100 * EMBED_SHARE_TARGET:.0f}",
            status=common.verdict(part["embedding_share"], EMBED_SHARE_TARGET,
                                  lower_is_better=False),
            note=f"parse {_pct(part['share_parse'])}, chunk {_pct(part['share_chunk'])}, "
                 f"keywords (in embed) {_pct(part['share_keywords'])}, "
                 f"index {_pct(part['share_index'])}"))
        if part.get("raw"):
            off_raw = (by_mode.get("no_keywords") or {}).get("ingest_over_raw")
            rows.append(common.row(
                f"{name}: ingestion / raw embed chunks/s", part.get("ingest_over_raw"), "",
                note=f"raw runtime.embed {part['raw']['chunks_per_s']} chunks/s "
                     f"(batches of {RAW_BATCH}, same process); without keywords: "
                     f"{off_raw if off_raw is not None else '-'}"))
        rss = part["rss"]
        rows.append(common.row(
            f"{name}: peak RSS during ingestion (process + sandboxes)", rss["peak_total_mb"],
            "MB", target=f"<= {part['soft_limit_mb']:.0f}",
            status=common.verdict(part["rss_peak_total_max_mb"], part["soft_limit_mb"]),
            note=f"process {rss['peak_self_mb']} MB, sandboxes {rss['peak_children_mb']} MB "
                 f"(max {rss['max_children_alive']:.0f} alive); max over runs "
                 f"{part['rss_peak_total_max_mb']} MB"))
        off = by_mode.get("no_keywords")
        if off and off.get("runs"):
            rows.append(common.row(
                f"{name}: throughput without keywords", off["chunks_per_s"], "chunks/s",
                note=f"wall {off['wall_s']} s, x{off['chunks_per_s'] / part['chunks_per_s']:.2f}"
                     f" vs with keywords; embedding share {_pct(off['embedding_share'])}"))
        failed = part["failed_jobs_max"]
        if failed or part["rejected_uploads_max"]:
            rows.append(common.row(f"{name}: failed jobs / rejected uploads",
                                   f"{failed} / {part['rejected_uploads_max']}", "",
                                   note="; ".join(part["job_errors"][:3])))
    prep = result.get("prepare", {})
    rows.append(common.row("model preparation (outside the runs)", prep.get("seconds"), "s",
                           note=f"{prep.get('variant')}, reused={prep.get('reused')}"))
    return rows


def render(result: dict[str, Any]) -> str:
    if result.get("mode") == "scaleout":
        return render_scaleout(result)
    headers = ["set", "mode", "files", "MB", "chunks", "wall s", "files/s", "chunks/s", "MB/s",
               "parse s", "chunk s", "kw s", "embed s", "index s", "embed %", "model %",
               "raw ch/s", "ing/raw", "RSS MB", "sandbox MB", "load s", "loadavg"]
    lines = []
    for name, by_mode in result["sets"].items():
        for mode, part in by_mode.items():
            if not part.get("runs"):
                continue
            stages = part["stage_sums_s"]
            lines.append([
                name, mode, part["files"], round(part["bytes"] / MIB, 2), part["chunks"],
                part["wall_s"], part["files_per_s"], part["chunks_per_s"], part["mb_per_s"],
                *(stages[stage] for stage in STAGES),
                _pct(part["embedding_share"]), _pct(part["model_share"]),
                (part.get("raw") or {}).get("chunks_per_s"), part.get("ingest_over_raw"),
                part["rss"]["peak_self_mb"], part["rss"]["peak_children_mb"],
                part["model_load_s"],
                "/".join(f"{a:.1f}-{b:.1f}" for a, b in part["load_avg_1m"]),
            ])
    table = common.format_table(headers, lines)
    shares = common.format_table(
        ["set", "mode", *(f"{s} %" for s in STAGES), "stages s", "job totals s",
         "workers busy", "CPU cores busy", "CPU s self", "CPU s sandboxes"],
        [[name, mode, *(_pct(part[f"share_{s}"]) for s in STAGES), part["stage_total_s"],
          part["job_totals_s"], part["worker_busy"], part["cpu_cores_busy"],
          part["cpu_s"]["self"], part["cpu_s"]["children"]]
         for name, by_mode in result["sets"].items() for mode, part in by_mode.items()
         if part.get("runs")],
    )
    env = result["environment"]
    return (
        f"ingest: {result['config']['repeat']} repeat(s), medians; {env['cpu_count']} CPU(s), "
        f"{result['elapsed_s']} s\n\n{table}\n\nstage shares (sum over jobs; 2 workers):\n"
        f"{shares}\n\n{common.summary_table(result['summary'])}"
    )


def render_scaleout(result: dict[str, Any]) -> str:
    headers = ["set", "set-up", "job loops", "files", "chunks", "wall s", "docs/s", "chunks/s",
               "cores busy", "walls"]
    lines = [[name, config, part["job_loops"], part["files"], part["chunks"], part["wall_s"],
              part["documents_per_s"], part["chunks_per_s"], part["cpu_cores_busy"],
              "/".join(f"{w:.0f}" for w in part["wall_s_all"])]
             for name, by_config in result["sets"].items()
             for config, part in by_config.items()]
    return (f"ingest, scale-out: {result['config']['repeat']} repeat(s), medians; "
            f"{result['elapsed_s']} s\n\n{common.format_table(headers, lines)}\n\n"
            f"{common.summary_table(result['summary'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="set_name", choices=["python", "debian", "all"],
                        default="all", help="which eval source set(s) to ingest")
    parser.add_argument("--repeat", type=int, default=None,
                        help=f"repetitions, medians reported (default {DEFAULT_REPEAT})")
    parser.add_argument("--no-keywords-run", dest="keywords_run", action="store_false",
                        help="skip the second run with ingestion.keywords_enabled=false")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"ingest only N files per set, evenly strided "
                             f"(default {DEFAULT_LIMIT}; 0: every file)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_REPEAT} repeat, {QUICK_LIMIT} files per set unless --limit")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, metavar="PATH",
                        help="also write the JSON result to PATH")
    common.add_database_arguments(parser)
    parser.add_argument("--worker-processes", type=int, default=2,
                        help="with PostgreSQL: ragd worker processes (--concurrency 1 each)")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.child_args or "{}")),
                         default=str), flush=True)
        return 0
    sets = list(SETS) if args.set_name == "all" else [args.set_name]
    if common.chosen_backend(args.backend, args.database_url) == "postgresql":
        result = run_scaleout(args.quick, sets=sets, repeat=args.repeat, limit=args.limit,
                              database_url=args.database_url,
                              worker_processes=args.worker_processes)
    else:
        result = run(args.quick, sets=sets, repeat=args.repeat, keywords_run=args.keywords_run,
                     limit=args.limit)
    common.write_json(args.json_out, result)
    common.emit(result, render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
