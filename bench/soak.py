"""Soak: mixed load on the embedded default for a long time, then the same load under memory
pressure (issue 11, closing note).

    .venv/bin/python bench/soak.py [--minutes 30] [--pressure-minutes 5] [--window-minutes 5]
                                   [--clients 8] [--mix search=50,chat=25,upload=15,delete=10]
                                   [--seed 11] [--json bench/results/soak.json] [--quick]

Not part of ``bench/run.py``'s default set (``make bench``): the full soak takes ~40 minutes
with its setup. Run it alone, on a quiet machine, with the command above (defaults = the
issue's figures); ``--quick`` (or ``--minutes 2 --window-minutes 1 --pressure-minutes 1``) is
the smoke version.

Setup: a real ``ragd serve`` on 127.0.0.1 (embedded default: SQLite, tantivy, usearch, MiniLM,
no LLM configured, so answers are extractive; 2 in-process ingestion workers; models from the
shared cache under /tmp) on a throwaway data dir. A tenant is registered and an API key created
(access tokens expire after 15 minutes, keys do not); a collection is seeded through the HTTP
API with the FAQ pages of both dev sets (``../shared/eval/*/source``, role ``faq`` in
``MANIFEST.tsv``) plus ``--seed-distractors`` distractor files, and every job is awaited.
Then the server is restarted, so both phases start from a fresh process on that data dir.

Phase 1, **baseline** (``--minutes``): ``--clients`` threads each loop, without think time,
over operations drawn by ``--mix`` weights:

* ``search``: ``POST /api/v1/search`` (hybrid, top_k 10) with a dev query of either set;
* ``chat``: ``POST /api/v1/chat`` with a dev query, ``--stream-share`` of them streamed (SSE;
  an ``error`` event or a stream without ``done`` counts as an error);
* ``upload``: ``POST /api/v1/documents``, alternately a multipart distractor file (< 64 KB)
  and a JSON text document (a ``corpus.jsonl`` entry); each carries a unique marker, so
  duplicate detection never folds two uploads into one (a ``duplicate: true`` is counted);
* ``delete``: ``DELETE /api/v1/documents/{id}`` of the oldest document the soak uploaded
  (queued, processing or ready alike). With an empty pool the draw is skipped (counted); once
  ``--max-live-uploads`` soak documents exist an upload draw becomes a delete (counted), so
  the corpus and the ingestion backlog stay bounded however long the soak runs.

Every request is recorded (completion time, latency, outcome): errors by HTTP status, stream
errors, and connection errors (by exception: resets, refused, timeouts) separately; nothing is
retried. Per ``--window-minutes`` window: requests/s, errors, p50/p95 per operation and
overall, RSS at its end. The server's RSS (process + children, psutil) is sampled every
``--rss-interval`` s; ``/performance/memory`` (public for this server) is read at every
window's end. At the phase's end: ingestion jobs by status (failed ones with their errors),
model loads/unloads and 5xx by route from ``/metrics``, and the server log's warnings/errors
(JSON lines), with the lines of each sampled error's request id.

Phase 2, **pressure** (``--pressure-minutes``): the server is restarted on the same data dir
with ``RAGD_MEMORY__SOFT_LIMIT_MB`` = ``--soft-fraction`` x the phase-1 median RSS of the
server process (what the memory manager compares; parser children are not counted),
``EMERGENCY_LIMIT_MB`` above twice the phase-1 maximum (so only the soft path runs, unless
``--emergency-mb`` says otherwise), ``MONITOR_INTERVAL_SECONDS`` = ``--monitor-seconds`` and
``SOFT_IDLE_SECONDS`` = ``--soft-idle-seconds`` (the default 300 s would never unload a model
under load). The same mix runs; the cleanup events (count, measured RSS freed, models unloaded,
cache bytes cleared) and the errors within ``UNLOAD_ERROR_WINDOW_S`` after a model unload are
reported: a model unloaded under load must be reloaded transparently.

The clients share the 2 cores with the server, so absolute figures include client overhead;
compare runs on the same machine only. Exit code 1 when any request failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "soak"
EVAL = common.REPO_ROOT.parent / "shared" / "eval"
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
DEFAULT_JSON = common.BENCH_DIR / "results" / "soak.json"
EMAIL, PASSWORD = "soak-bench@example.com", "Soak-bench-passphrase-31!"  # noqa: S105
OPERATIONS = ("search", "chat", "upload", "delete")
DEFAULT_MIX = "search=50,chat=25,upload=15,delete=10"
FINISHED = ("succeeded", "failed", "cancelled")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
UPLOAD_MAX_BYTES = 64 * 1024
UNLOAD_ERROR_WINDOW_S = 10.0
REQUEST_TIMEOUT_S = 120.0
SAMPLES_PER_KIND = 3


@dataclass
class Options:
    minutes: float = 30.0
    pressure_minutes: float = 5.0
    window_minutes: float = 5.0
    clients: int = 8
    mix: str = DEFAULT_MIX
    seed: int = 11
    seed_distractors: int = 16
    max_live_uploads: int = 200
    stream_share: float = 0.5
    rss_interval: float = 5.0
    soft_fraction: float = 0.7
    emergency_mb: float | None = None
    monitor_seconds: float = 5.0
    soft_idle_seconds: float = 2.0


QUICK = {"minutes": 2.0, "pressure_minutes": 1.0, "window_minutes": 1.0, "rss_interval": 2.0}


def parse_mix(text: str) -> dict[str, float]:
    """``"search=50,chat=25,..."`` -> weights; unknown or negative entries are refused."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        if name not in OPERATIONS:
            raise ValueError(f"unknown operation {name!r} in --mix (valid: {OPERATIONS})")
        weights[name] = float(value)
        if weights[name] < 0:
            raise ValueError(f"negative weight for {name!r}")
    if not any(weights.values()):
        raise ValueError("--mix needs a positive weight")
    total = sum(weights.values())
    return {name: weights.get(name, 0.0) / total for name in OPERATIONS}


# -- data --------------------------------------------------------------------------------------


@dataclass
class Corpus:
    seed_files: list[Path]
    upload_files: list[Path]
    texts: list[tuple[str, str]]  # (title, text)
    queries: list[str]


def _eval_sets() -> list[Path]:
    sets = sorted(path.parent for path in EVAL.glob("*/source/MANIFEST.tsv"))
    if not sets:
        raise SystemExit(f"soak: no eval data under {EVAL} (expected */source/MANIFEST.tsv); "
                         "the soak needs the real documents of ../shared/eval")
    return [path.parent for path in sets]


def load_corpus(seed_distractors: int, rng: random.Random) -> Corpus:
    seed_files: list[Path] = []
    distractors: list[Path] = []
    texts: list[tuple[str, str]] = []
    queries: list[str] = []
    for root in _eval_sets():
        source = root / "source"
        for line in (source / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            path, role = line.split("\t")[:2]
            if role == "faq":
                seed_files.append(source / path)
            elif role == "distractor" and (source / path).suffix in (".html", ".txt") \
                    and (source / path).stat().st_size <= UPLOAD_MAX_BYTES:
                distractors.append(source / path)
        for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            texts.append((entry.get("title") or entry["_id"], entry["text"]))
        for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            queries.append(json.loads(line)["text"])
    missing = [path for path in seed_files if not path.is_file()]
    if missing or not seed_files or not distractors or not queries:
        raise SystemExit(f"soak: incomplete eval data under {EVAL}: {len(seed_files)} FAQ "
                         f"files ({len(missing)} missing), {len(distractors)} distractors, "
                         f"{len(queries)} queries")
    rng.shuffle(distractors)
    return Corpus(seed_files=seed_files + distractors[:seed_distractors],
                  upload_files=distractors[seed_distractors:], texts=texts, queries=queries)


def _content_type(path: Path) -> str:
    return "text/html" if path.suffix == ".html" else "text/plain"


def _marked(data: bytes, path: Path, tag: str) -> bytes:
    """The file with a unique, harmless marker (a new SHA-256, so never a duplicate)."""
    if path.suffix == ".html":
        marker = f"<p>soak upload {tag}</p>".encode()
        at = data.rfind(b"</body>")
        return data[:at] + marker + data[at:] if at >= 0 else data + marker
    return data + f"\n\nSoak upload {tag}.\n".encode()


# -- the server --------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(data_dir: Path, log: Path, secret: str, extra: dict[str, str] | None = None,
            ) -> Iterator[common.ServerProcess]:
    env = {"RAGD_JWT_SECRET": secret, "RAGD_BOOTSTRAP_ADMIN": "false",
           "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE), "RAGD_LOG_LEVEL": "WARNING",
           "RAGD_LOG_FORMAT": "json", "RAGD_PUBLIC_PERFORMANCE": "true", **(extra or {})}
    with common.running_server(data_dir, log, env, stop_timeout=60) as server:
        yield server


def _check(response: httpx.Response, expected: int, what: str) -> dict[str, Any]:
    if response.status_code != expected:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def _wait_jobs(client: httpx.Client, jobs: list[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    for job_id in jobs:
        while True:
            job = _check(client.get(f"/api/v1/jobs/{job_id}"), 200, "job")
            if job["status"] in FINISHED:
                statuses[job["status"]] += 1
                if job["error"]:
                    errors.append(str(job["error"])[:300])
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"seed job {job_id} not finished after {timeout:.0f} s: {job}")
            time.sleep(0.2)
    return {"statuses": dict(statuses), "errors": errors}


def setup(base_url: str, corpus: Corpus) -> tuple[dict[str, str], str, dict[str, Any]]:
    """Register, create an API key and a collection, ingest the seed files, await the jobs."""
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        token = _check(client.post("/api/v1/auth/register", json={
            "email": EMAIL, "password": PASSWORD, "tenant_name": "soak"}), 201,
            "register")["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        key = _check(client.post("/api/v1/auth/api-keys", json={"name": "soak"}), 201,
                     "api key")["key"]
        headers = {"X-API-Key": key}
        client.headers.pop("Authorization")
        client.headers.update(headers)
        collection_id = _check(client.post("/api/v1/collections", json={"name": "soak"}), 201,
                               "collection")["id"]
        jobs = []
        for path in corpus.seed_files:
            accepted = _check(client.post(
                "/api/v1/documents", data={"collection_id": collection_id, "title": path.name},
                files={"file": (path.name, path.read_bytes(), _content_type(path))}), 202,
                f"seed upload {path.name}")
            jobs.append(accepted["job_id"])
        outcome = _wait_jobs(client, jobs, timeout=1800)
        chunks = 0
        cursor = None
        while True:
            params: dict[str, Any] = {"collection_id": collection_id, "limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = _check(client.get("/api/v1/documents", params=params), 200, "documents")
            chunks += sum(document["chunk_count"] for document in page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
    seed = {"documents": len(corpus.seed_files), "chunks": chunks, **outcome,
            "ingest_s": round(time.perf_counter() - started, 1)}
    return headers, collection_id, seed


def _warm(base_url: str, headers: dict[str, str], queries: list[str]) -> None:
    """Load what the first requests would (models, index readers); not measured."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        for query in queries[:8]:
            client.post("/api/v1/search", json={"query": query, "top_k": 10})
        for query in queries[8:12]:
            client.post("/api/v1/chat", json={"question": query})


# -- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    op: str  # search, chat, chat_stream, upload_file, upload_text, delete
    at: float  # wall clock (epoch s) at completion
    seconds: float
    error: str | None  # None, an HTTP status ("500"), "stream:<why>" or "conn:<exception>"
    status: int | None = None
    request_id: str | None = None
    detail: str | None = None


def _category(op: str) -> str:
    return op.split("_")[0]


@dataclass
class Shared:
    """State shared by the client threads of both phases (the pool of soak uploads)."""

    collection_id: str
    pool: deque[str] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    uploads: int = 0


class Load:
    """One phase's client threads and what they record."""

    def __init__(self, phase: str, base_url: str, headers: dict[str, str], corpus: Corpus,
                 shared: Shared, options: Options) -> None:
        self.phase = phase
        self.base_url = base_url
        self.headers = headers
        self.corpus = corpus
        self.shared = shared
        self.options = options
        self.weights = parse_mix(options.mix)
        self.outcomes: list[Outcome] = []
        self.counters: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.run_tag = secrets.token_hex(3)
        self.deadline = 0.0

    def run(self, seconds: float) -> float:
        self.deadline = time.monotonic() + seconds
        return common.run_clients(self._worker, self.options.clients)

    def _worker(self, n: int) -> None:
        rng = random.Random(f"{self.options.seed}-{self.phase}-{n}")
        names = list(self.weights)
        weights = [self.weights[name] for name in names]
        count = 0
        with httpx.Client(base_url=self.base_url, headers=self.headers,
                          timeout=REQUEST_TIMEOUT_S) as client:
            while time.monotonic() < self.deadline:
                count += 1
                op = rng.choices(names, weights)[0]
                if op == "upload":
                    with self.shared.lock:
                        full = len(self.shared.pool) >= self.options.max_live_uploads
                    if full:
                        op = "delete"
                        self._count("upload_capped_to_delete")
                if op == "delete":
                    with self.shared.lock:
                        document_id = self.shared.pool.popleft() if self.shared.pool else None
                    if document_id is None:
                        self._count("delete_skipped_empty_pool")
                        time.sleep(0.01)
                        continue
                    outcome = self._timed(client, "delete", self._delete, document_id)
                elif op == "upload":
                    tag = f"{self.run_tag}-{self.phase}-{n}-{count}"
                    if rng.random() < 0.5:
                        outcome = self._timed(client, "upload_file", self._upload_file, rng, tag)
                    else:
                        outcome = self._timed(client, "upload_text", self._upload_text, rng, tag)
                elif op == "chat":
                    stream = rng.random() < self.options.stream_share
                    query = rng.choice(self.corpus.queries)
                    outcome = self._timed(client, "chat_stream" if stream else "chat",
                                          self._chat, query, stream)
                else:
                    query = rng.choice(self.corpus.queries)
                    outcome = self._timed(client, "search", self._search, query)
                with self.lock:
                    self.outcomes.append(outcome)

    def _count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1

    def _timed(self, client: httpx.Client, op: str, call: Any, *args: Any) -> Outcome:
        """Run ``call(client, *args) -> (error, status, request_id, detail)``, timed; transport
        errors are outcomes too (``conn:<exception class>``), never retried."""
        started = time.perf_counter()
        try:
            error, status, request_id, detail = call(client, *args)
        except httpx.HTTPError as exc:
            error, status, request_id, detail = (f"conn:{type(exc).__name__}", None, None,
                                                 str(exc)[:300])
        return Outcome(op=op, at=time.time(), seconds=time.perf_counter() - started,
                       error=error, status=status, request_id=request_id, detail=detail)

    @staticmethod
    def _status(response: httpx.Response, *expected: int) -> tuple[str | None, int, str | None,
                                                                   str | None]:
        request_id = response.headers.get("x-request-id")
        if response.status_code in expected:
            return None, response.status_code, request_id, None
        return (str(response.status_code), response.status_code, request_id,
                response.text[:300])

    def _search(self, client: httpx.Client, query: str) -> tuple[Any, ...]:
        response = client.post("/api/v1/search", json={"query": query, "top_k": 10})
        return self._status(response, 200)

    def _chat(self, client: httpx.Client, query: str, stream: bool) -> tuple[Any, ...]:
        body = {"question": query, "stream": stream}
        if not stream:
            return self._status(client.post("/api/v1/chat", json=body), 200)
        with client.stream("POST", "/api/v1/chat", json=body) as response:
            if response.status_code != 200:
                response.read()
                return self._status(response, 200)
            request_id = response.headers.get("x-request-id")
            event, done, failure = "", False, None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "done":
                        done = True
                    elif event == "error":
                        failure = line[6:306]
        if failure is not None:
            return "stream:error_event", 200, request_id, failure
        if not done:
            return "stream:no_done", 200, request_id, None
        return None, 200, request_id, None

    def _accepted(self, response: httpx.Response) -> tuple[Any, ...]:
        result = self._status(response, 200, 202)
        if result[0] is None:
            body = response.json()
            if body.get("duplicate"):
                self._count("upload_duplicates")
            else:
                with self.shared.lock:
                    self.shared.pool.append(body["document_id"])
                    self.shared.uploads += 1
        return result

    def _upload_file(self, client: httpx.Client, rng: random.Random, tag: str
                     ) -> tuple[Any, ...]:
        path = rng.choice(self.corpus.upload_files)
        data = _marked(path.read_bytes(), path, tag)
        response = client.post(
            "/api/v1/documents", files={"file": (path.name, data, _content_type(path))},
            data={"collection_id": self.shared.collection_id, "title": f"{path.stem} {tag}",
                  "metadata": json.dumps({"soak": self.phase})})
        return self._accepted(response)

    def _upload_text(self, client: httpx.Client, rng: random.Random, tag: str
                     ) -> tuple[Any, ...]:
        title, text = rng.choice(self.corpus.texts)
        response = client.post("/api/v1/documents", json={
            "collection_id": self.shared.collection_id, "title": f"{title} {tag}"[:200],
            "text": f"{text}\n\n(soak upload {tag})", "metadata": {"soak": self.phase}})
        return self._accepted(response)

    def _delete(self, client: httpx.Client, document_id: str) -> tuple[Any, ...]:
        return self._status(client.delete(f"/api/v1/documents/{document_id}"), 204)


# -- the monitor -------------------------------------------------------------------------------


class Monitor(threading.Thread):
    """Samples the server's RSS every ``interval`` s and reads ``/performance/memory`` at every
    window's end, until :meth:`finish`."""

    def __init__(self, server: common.ServerProcess, interval: float, window_s: float) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.window_s = window_s
        self.started_at = time.time()
        self.rss: list[tuple[float, int, int, int]] = []  # (t, total, main, children)
        self.snapshots: list[dict[str, Any]] = []
        self.events: dict[tuple[float, str], dict[str, Any]] = {}
        self._stop_event = threading.Event()
        self._client = httpx.Client(base_url=server.base_url, timeout=30)

    def run(self) -> None:
        next_sample = next_window = time.monotonic()
        next_window += self.window_s
        while not self._stop_event.is_set():
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample = now + self.interval
            if now >= next_window:
                self.snapshot()
                next_window += self.window_s
            self._stop_event.wait(max(0.0, min(next_sample, next_window) - time.monotonic()))

    def sample(self) -> None:
        try:
            root = psutil.Process(self.server.pid)
            main = root.memory_info().rss
            children = root.children(recursive=True)
            total = self.server.rss_bytes()
        except psutil.Error:
            return
        self.rss.append((time.time() - self.started_at, total, main, len(children)))

    def snapshot(self) -> None:
        try:
            memory = self._client.get("/performance/memory").json()
        except (httpx.HTTPError, ValueError) as exc:
            self.snapshots.append({"t": round(time.time() - self.started_at, 1),
                                   "error": repr(exc)[:200]})
            return
        for event in memory.get("events", []):
            self.events[(event["at"], event["level"])] = event
        sample = memory.get("sample") or {}
        self.snapshots.append({
            "t": round(time.time() - self.started_at, 1),
            "status": memory.get("status"),
            "rss_mb": common.bytes_to_mb(sample.get("rss")),
            "caches": {cache["name"]: {key: cache[key] for key in
                                       ("entries", "bytes", "hits", "misses", "evictions")}
                       for cache in memory.get("caches", [])},
            "models": {model["name"]: model["state"] for model in memory.get("models", [])},
            "cleanup_events_total": len(self.events),
            # Other work on the shared cores skews every figure of the window: keep it close.
            "load_avg_1m": round(os.getloadavg()[0], 2),
        })

    def finish(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()
        if not self.snapshots or time.time() - self.started_at - self.snapshots[-1]["t"] > 2:
            self.snapshot()
        self._client.close()


# -- analysis ----------------------------------------------------------------------------------


def _latency(outcomes: list[Outcome]) -> dict[str, Any]:
    return common.latency_summary([o.seconds for o in outcomes if o.error is None])


def _errors(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(Counter(o.error for o in outcomes if o.error is not None).most_common())


def _split_errors(errors: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {"http_status": {}, "stream": {}, "connection": {}}
    for kind, count in errors.items():
        if kind.startswith("conn:"):
            out["connection"][kind[5:]] = count
        elif kind.startswith("stream:"):
            out["stream"][kind[7:]] = count
        else:
            out["http_status"][kind] = count
    return out


def _op_table(outcomes: list[Outcome]) -> dict[str, Any]:
    by_op: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_op.setdefault(outcome.op, []).append(outcome)
        by_op.setdefault(f"{_category(outcome.op)} (all)", []).append(outcome)
    table = {}
    for op in sorted(by_op):
        items = by_op[op]
        if op.endswith(" (all)") and len({o.op for o in items}) == 1:
            continue  # a category with one operation would repeat that operation
        errors = _errors(items)
        table[op] = {"count": len(items), "errors": sum(errors.values()),
                     "errors_by_kind": _split_errors(errors), "latency": _latency(items)}
    return table


def windows(outcomes: list[Outcome], started: float, duration: float, window_s: float,
            rss: list[tuple[float, int, int, int]], snapshots: list[dict[str, Any]],
            ) -> list[dict[str, Any]]:
    count = max(1, int(-(-duration // window_s)))  # ceil
    out = []
    previous: dict[str, Any] = {}
    for index in range(count):
        low, high = index * window_s, min(duration, (index + 1) * window_s)
        last = index == count - 1
        items = [o for o in outcomes
                 if low <= o.at - started < high or (last and o.at - started >= high)]
        samples = [s for s in rss if low <= s[0] < high or (last and s[0] >= high)]
        snaps = [s for s in snapshots if low < s["t"] <= high + 2 or (last and s["t"] > high)]
        errors = _errors(items)
        memory = snaps[-1] if snaps else None
        caches = (memory or {}).get("caches", {})
        entry: dict[str, Any] = {
            "window": index + 1, "start_s": round(low, 1), "end_s": round(high, 1),
            "partial": high - low < window_s - 1e-6,
            "requests": len(items), "rps": round(len(items) / max(high - low, 1e-9), 2),
            "errors": sum(errors.values()), "errors_by_kind": _split_errors(errors),
            "latency": _latency(items),
            "operations": {op: {"count": v["count"], "errors": v["errors"],
                                "p50_ms": v["latency"].get("p50_ms"),
                                "p95_ms": v["latency"].get("p95_ms")}
                           for op, v in _op_table(items).items()},
            "rss_end_mb": common.bytes_to_mb(samples[-1][1]) if samples else None,
            "rss_max_mb": common.bytes_to_mb(max(s[1] for s in samples)) if samples else None,
            "memory": memory,
            "cache_hit_rate": _hit_rates(previous, caches),
        }
        previous = caches or previous
        out.append(entry)
    return out


def _hit_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    """Each cache's hit rate between two snapshots (the counters survive a clear)."""
    rates: dict[str, float | None] = {}
    for name, now in after.items():
        then = before.get(name, {"hits": 0, "misses": 0})
        hits, misses = now["hits"] - then["hits"], now["misses"] - then["misses"]
        rates[name] = round(hits / (hits + misses), 3) if hits + misses > 0 else None
    return rates


def rss_summary(rss: list[tuple[float, int, int, int]]) -> dict[str, Any]:
    if not rss:
        return {"samples": 0}
    middle = min(rss, key=lambda s: abs(s[0] - rss[-1][0] / 2))
    totals = [s[1] for s in rss]
    mains = [s[2] for s in rss]
    return {
        "samples": len(rss),
        "start_mb": common.bytes_to_mb(rss[0][1]),
        "middle_mb": common.bytes_to_mb(middle[1]),
        "end_mb": common.bytes_to_mb(rss[-1][1]),
        "max_mb": common.bytes_to_mb(max(totals)),
        "median_mb": common.bytes_to_mb(int(statistics.median(totals))),
        "server_process_median_mb": common.bytes_to_mb(int(statistics.median(mains))),
        "server_process_max_mb": common.bytes_to_mb(max(mains)),
        "children_max": max(s[3] for s in rss),
        "series": [[round(t, 1), common.bytes_to_mb(total), common.bytes_to_mb(main)]
                   for t, total, main, _ in rss],
    }


def cleanup_summary(events: list[dict[str, Any]], outcomes: list[Outcome]) -> dict[str, Any]:
    """What the memory manager's cleanups did, and the errors right after a model unload."""
    levels: Counter[str] = Counter()
    unloads: Counter[str] = Counter()
    model_bytes = cache_bytes = callback_bytes = 0
    unload_times = []
    for event in events:
        levels[event["level"]] += 1
        for action in event["actions"]:
            target, freed = action["target"], action["freed_bytes"] or 0
            if target.startswith("model:") and action["action"] == "unload":
                unloads[target[6:]] += 1
                model_bytes += freed
                unload_times.append(event["at"])
            elif target.startswith("cache:"):
                cache_bytes += freed
            elif target.startswith("callback:"):
                callback_bytes += freed
    near = [o for o in outcomes if o.error is not None
            and any(0 <= o.at - at <= UNLOAD_ERROR_WINDOW_S for at in unload_times)]
    return {
        "events": len(events), "by_level": dict(levels),
        "rss_freed_mb_total": common.bytes_to_mb(sum(e["freed_bytes"] for e in events)),
        "rss_freed_mb_max": common.bytes_to_mb(max((e["freed_bytes"] for e in events),
                                                   default=0)),
        "models_unloaded": dict(unloads),
        "model_unload_freed_mb": common.bytes_to_mb(model_bytes),
        "cache_cleared_mb": common.bytes_to_mb(cache_bytes),
        "callbacks_freed_mb": common.bytes_to_mb(callback_bytes),
        "seconds_max": max((e["seconds"] for e in events), default=None),
        "action_errors": [a["error"] for e in events for a in e["actions"] if a["error"]][:5],
        "errors_within_s_after_unload": UNLOAD_ERROR_WINDOW_S,
        "errors_after_unload": len(near),
        "errors_after_unload_by_kind": _errors(near),
        "events_sample": [{key: e[key] for key in ("at", "level", "rss_before", "rss_after",
                                                   "freed_bytes", "seconds")}
                          | {"actions": [f"{a['target']} {a['action']} {a['freed_bytes']}"
                                         for a in e["actions"]]}
                          for e in events[:3]],
    }


def jobs_summary(client: httpx.Client) -> dict[str, Any]:
    """Ingestion jobs of the tenant by status (all phases so far); failed ones' errors."""
    counts: dict[str, int] = {}
    failed_errors: Counter[str] = Counter()
    for status in JOB_STATUSES:
        total, cursor = 0, None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = _check(client.get("/api/v1/jobs", params=params), 200, "jobs")
            total += len(page["items"])
            if status == "failed":
                failed_errors.update(str(job["error"])[:200] for job in page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        counts[status] = total
    return {"by_status": counts, "failed_errors": dict(failed_errors.most_common(5))}


# Greedy up to the value: route templates carry braces ({document_id}).
_SAMPLE = re.compile(r'^(ragd_[a-z_]+?)(?:_total)?\{(.*)\} ([0-9.e+-]+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def metrics_summary(client: httpx.Client) -> dict[str, Any]:
    """Model loads/unloads and 5xx by route since this server started, from ``/metrics``."""
    out: dict[str, dict[str, float]] = {"model_loads": {}, "model_unloads": {},
                                        "http_5xx": {}}
    try:
        text = client.get("/metrics").text
    except httpx.HTTPError as exc:
        return {"error": repr(exc)[:200]}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.group(1), dict(_LABEL.findall(match.group(2))), \
            float(match.group(3))
        if name == "ragd_model_loads":
            out["model_loads"][f"{labels['model']}:{labels['outcome']}"] = value
        elif name == "ragd_model_load_duration_seconds_sum":
            out["model_load_seconds"] = {**out.get("model_load_seconds", {}),
                                         labels["model"]: round(value, 2)}
        elif name == "ragd_model_unloads":
            out["model_unloads"][f"{labels['model']}:{labels['reason']}"] = value
        elif name == "ragd_http_requests" and labels.get("status", "").startswith("5"):
            key = f"{labels['method']} {labels['route']} {labels['status']}"
            out["http_5xx"][key] = value
    return out


_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


def _exception_line(traceback: str) -> str | None:
    """The exception line of a formatted traceback (and SQLAlchemy's ``[SQL: ...]`` line)."""
    lines = traceback.strip().splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if _EXCEPTION.match(lines[index]):
            tail = lines[index + 1:index + 2]
            return lines[index] + (f" {tail[0]}" if tail and tail[0].startswith("[SQL") else "")
    return None


def log_summary(path: Path, request_ids: set[str], load_ended_at: float) -> dict[str, Any]:
    """Warnings and errors of the server log (JSON lines), grouped, apart from those written
    after the load (the checks and the shutdown); the lines of the sampled failed requests;
    lines that are not JSON (tracebacks of children, uvicorn) counted."""
    groups: Counter[str] = Counter()
    after: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    by_request: dict[str, list[str]] = {}
    unparsed: list[str] = []
    unparsed_count = locked = 0
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {"error": f"no log at {path}"}
    for line in lines:
        locked += "database is locked" in line
        try:
            entry = json.loads(line)
        except ValueError:
            unparsed_count += 1
            if len(unparsed) < 10 and line.strip():
                unparsed.append(line[:300])
            continue
        if not isinstance(entry, dict):
            continue
        exception = _exception_line(entry.get("exc") or "")
        summary = f"{entry.get('level')} {entry.get('logger')}: {entry.get('msg')}"
        if entry.get("path"):
            summary += f" ({entry['path']})"
        try:
            late = datetime.fromisoformat(entry["ts"]).timestamp() > load_ended_at
        except (KeyError, TypeError, ValueError):
            late = False
        if late:
            after[summary + (f" | {exception[:300]}" if exception else "")] += 1
            continue
        levels[str(entry.get("level"))] += 1
        groups[summary + (f" | {exception[:300]}" if exception else "")] += 1
        request_id = entry.get("request_id")
        if request_id in request_ids:
            by_request.setdefault(request_id, []).append(
                (f"{entry.get('ts')} {summary}" + (f" | {exception}" if exception else ""))[:600])
    return {"lines": len(lines), "by_level": dict(levels),
            "groups": dict(groups.most_common(15)),
            "after_load_groups": dict(after.most_common(10)),
            "database_is_locked_lines": locked, "unparsed_lines": unparsed_count,
            "unparsed_sample": unparsed, "error_request_lines": by_request}


def _error_samples(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    seen: Counter[tuple[str, str]] = Counter()
    samples = []
    for o in outcomes:
        if o.error is None:
            continue
        seen[(o.op, o.error)] += 1
        if seen[(o.op, o.error)] <= SAMPLES_PER_KIND:
            samples.append({"op": o.op, "error": o.error, "status": o.status,
                            "request_id": o.request_id, "at": round(o.at, 3),
                            "detail": o.detail})
    return samples


# -- the phases --------------------------------------------------------------------------------


def _cpu_seconds(server: common.ServerProcess) -> float | None:
    """CPU time of the server so far (user + system, with its finished children)."""
    try:
        times = psutil.Process(server.pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system + times.children_user + times.children_system)


def run_phase(phase: str, server: common.ServerProcess, headers: dict[str, str],
              corpus: Corpus, shared: Shared, options: Options, minutes: float,
              env: dict[str, str]) -> dict[str, Any]:
    print(f"[soak] {phase}: {minutes:g} min, {options.clients} clients", file=sys.stderr,
          flush=True)
    _warm(server.base_url, headers, corpus.queries)
    window_s = options.window_minutes * 60
    duration = minutes * 60
    load = Load(phase, server.base_url, headers, corpus, shared, options)
    monitor = Monitor(server, options.rss_interval, window_s)
    cpu_before = _cpu_seconds(server)
    started = time.time()
    monitor.started_at = started
    monitor.start()
    try:
        wall = load.run(duration)
    finally:
        monitor.finish()
    cpu_after = _cpu_seconds(server)
    outcomes = sorted(load.outcomes, key=lambda o: o.at)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    with httpx.Client(base_url=server.base_url, headers=headers,
                      timeout=REQUEST_TIMEOUT_S) as client:
        jobs = jobs_summary(client)
        metrics = metrics_summary(client)
    errors = _errors(outcomes)
    samples = _error_samples(outcomes)
    events = sorted(monitor.events.values(), key=lambda e: e["at"])
    with shared.lock:
        live = len(shared.pool)
    result: dict[str, Any] = {
        "phase": phase, "minutes": minutes, "wall_s": round(wall, 1), "env": env,
        "totals": {"requests": len(outcomes), "rps": round(len(outcomes) / wall, 2),
                   "errors": sum(errors.values()),
                   "error_rate": round(sum(errors.values()) / max(1, len(outcomes)), 5),
                   "errors_by_kind": _split_errors(errors), "latency": _latency(outcomes)},
        "operations": _op_table(outcomes),
        # CPU per request separates the server's own cost from contention on the machine.
        "server_cpu": None if cpu is None else {
            "seconds": round(cpu, 1), "cores_busy": round(cpu / wall, 2),
            "ms_per_request": round(cpu * 1000 / max(1, len(outcomes)), 2)},
        "load_counters": dict(load.counters),
        "live_soak_documents_end": live,
        "windows": windows(outcomes, started, duration, window_s, monitor.rss,
                           monitor.snapshots),
        "rss": rss_summary(monitor.rss),
        "memory_snapshots": monitor.snapshots,
        "cleanup": cleanup_summary(events, outcomes),
        "jobs": jobs,
        "metrics": metrics,
        "error_samples": samples,
    }
    result["load_ended_at"] = started + wall
    return result


def _add_log(result: dict[str, Any], log: Path) -> None:
    """Read the phase's server log once the server has stopped (shutdown lines included)."""
    ids = {sample["request_id"] for sample in result["error_samples"] if sample["request_id"]}
    result["server_log"] = log_summary(log, ids, result["load_ended_at"])


def _pressure_env(baseline: dict[str, Any], options: Options) -> dict[str, str]:
    rss = baseline["rss"]
    working_set = rss["server_process_median_mb"]
    soft = max(64.0, round(working_set * options.soft_fraction))
    emergency = options.emergency_mb or max(round(rss["server_process_max_mb"] * 2), soft + 512)
    if emergency <= soft:
        raise SystemExit(f"soak: --emergency-mb {emergency} must be above the soft limit {soft}")
    return {"RAGD_MEMORY__SOFT_LIMIT_MB": f"{soft:g}",
            "RAGD_MEMORY__EMERGENCY_LIMIT_MB": f"{emergency:g}",
            "RAGD_MEMORY__MONITOR_INTERVAL_SECONDS": f"{options.monitor_seconds:g}",
            "RAGD_MEMORY__SOFT_IDLE_SECONDS": f"{options.soft_idle_seconds:g}"}


def run(quick: bool = False, *, keep_dir: bool = False, **overrides: Any) -> dict[str, Any]:
    options = Options(**{**(QUICK if quick else {}),
                         **{k: v for k, v in overrides.items() if v is not None}})
    parse_mix(options.mix)  # fail before starting anything
    corpus = load_corpus(options.seed_distractors, random.Random(options.seed))
    secret = common.bench_secret()
    result: dict[str, Any] = {"bench": NAME, "quick": quick, "options": asdict(options),
                              "environment": common.environment()}
    scratch = Path(tempfile.mkdtemp(prefix="ragd-soak-"))
    try:
        data_dir = scratch / "data"
        with _server(data_dir, scratch / "server-seed.log", secret) as server:
            print("[soak] seeding ...", file=sys.stderr, flush=True)
            headers, collection_id, result["seed"] = setup(server.base_url, corpus)
            result["seed"]["server_rss_mb"] = common.bytes_to_mb(server.rss_bytes())
        shared = Shared(collection_id=collection_id)
        # Both phases start from a fresh process on the seeded data dir: the seed's burst of
        # large FAQ pages leaves a heap the steady load never needs, and would inflate the
        # working set the pressure phase's soft limit is derived from.
        with _server(data_dir, scratch / "server-baseline.log", secret) as server:
            result["baseline"] = run_phase("baseline", server, headers, corpus, shared,
                                           options, options.minutes, {})
        _add_log(result["baseline"], scratch / "server-baseline.log")
        if options.pressure_minutes > 0:
            env = _pressure_env(result["baseline"], options)
            with _server(data_dir, scratch / "server-pressure.log", secret, env) as server:
                result["pressure"] = run_phase("pressure", server, headers, corpus, shared,
                                               options, options.pressure_minutes, env)
            _add_log(result["pressure"], scratch / "server-pressure.log")
        result["soak_uploads_total"] = shared.uploads
    finally:
        if keep_dir:
            print(f"[soak] kept {scratch}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    result["environment"]["load_avg_1m_end"] = common.environment().get("load_avg_1m")
    result["summary"] = summary_rows(result)
    return result


# -- output ------------------------------------------------------------------------------------


def _pair(latency: dict[str, Any]) -> str | None:
    """``"p50 / p95"`` of a :func:`common.latency_summary`, None without successes."""
    if not latency.get("n"):
        return None
    return f"{latency['p50_ms']:.1f} / {latency['p95_ms']:.1f}"


def _phases(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, result[name]) for name in ("baseline", "pressure") if name in result]


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [common.row("seed: documents / chunks",
                       f"{result['seed']['documents']} / {result['seed']['chunks']}",
                       note=f"{result['seed']['ingest_s']} s, jobs {result['seed']['statuses']}")]
    for name, phase in _phases(result):
        totals, rss = phase["totals"], phase["rss"]
        kinds = totals["errors_by_kind"]
        label = f"{name} ({phase['minutes']:g} min)"
        rows.append(common.row(
            f"{label}: requests, req/s", f"{totals['requests']}, {totals['rps']}",
            target="0 errors", status="pass" if totals["errors"] == 0 else "FAIL",
            note=f"{totals['errors']} errors: http {kinds['http_status']}, stream "
                 f"{kinds['stream']}, connection {kinds['connection']}"))
        cpu = phase.get("server_cpu") or {}
        rows.append(common.row(f"{label}: p50 / p95 all ops", _pair(totals["latency"]), "ms",
                               note=f"server CPU {cpu.get('ms_per_request')} ms/request, "
                                    f"{cpu.get('cores_busy')} cores busy"))
        for op, entry in phase["operations"].items():
            rows.append(common.row(f"{label}: {op} p50 / p95", _pair(entry["latency"]), "ms",
                                   note=f"n={entry['count']}, {entry['errors']} errors"))
        rows.append(common.row(f"{label}: p95 per window",
                               " / ".join(str(w["latency"].get("p95_ms")) for w in
                                          phase["windows"]), "ms",
                               note=f"{len(phase['windows'])} windows of "
                                    f"{result['options']['window_minutes']:g} min"))
        rows.append(common.row(f"{label}: RSS start / middle / end / max",
                               f"{rss.get('start_mb')} / {rss.get('middle_mb')} / "
                               f"{rss.get('end_mb')} / {rss.get('max_mb')}", "MB",
                               note=f"server process median "
                                    f"{rss.get('server_process_median_mb')} MB"))
        snapshots = [snap for snap in phase["memory_snapshots"] if "caches" in snap]
        rates = _hit_rates({}, snapshots[-1]["caches"]) if snapshots else {}
        rows.append(common.row(f"{label}: cache hit rate query / phrase",
                               f"{rates.get('query_embeddings')} / "
                               f"{rates.get('keyword_phrases')}",
                               note="since the server started; cleanups clear the caches"))
        log = phase["server_log"]
        top = next((group for group in log.get("groups", {})
                    if group.startswith(("error", "critical"))), None)
        late = sum(count for group, count in log.get("after_load_groups", {}).items()
                   if group.startswith(("error", "critical")))
        rows.append(common.row(f"{label}: server log errors during the load", log.get(
            "by_level", {}).get("error", 0), note=f"'database is locked' lines: "
            f"{log.get('database_is_locked_lines')}; {late} after the load (shutdown)"
            + (f"; top: {top[:160]}" if top else "")))
        jobs = phase["jobs"]["by_status"]
        rows.append(common.row(f"{label}: ingestion jobs failed (cumulative)", jobs["failed"],
                               note=f"by status {jobs}"))
        cleanup = phase["cleanup"]
        if name == "pressure" or cleanup["events"]:
            env = phase["env"]
            rows.append(common.row(
                f"{label}: cleanup events", cleanup["events"],
                note=f"soft {env.get('RAGD_MEMORY__SOFT_LIMIT_MB', 'default')} MB, freed RSS "
                     f"{cleanup['rss_freed_mb_total']} MB, caches "
                     f"{cleanup['cache_cleared_mb']} MB, models {cleanup['models_unloaded']}"))
            rows.append(common.row(
                f"{label}: errors <= {UNLOAD_ERROR_WINDOW_S:g} s after a model unload",
                cleanup["errors_after_unload"], target="0",
                status="pass" if cleanup["errors_after_unload"] == 0 else "FAIL",
                note=f"model loads {phase['metrics'].get('model_loads')}"))
    return rows


def _window_table(phase: dict[str, Any]) -> str:
    headers = ["window", "req", "req/s", "errors", "p50 ms", "p95 ms", "search p95",
               "chat p95", "upload p95", "delete p95", "RSS end MB", "cleanups",
               "hit % query/phrase", "load"]
    lines = []
    for window in phase["windows"]:
        ops = window["operations"]

        def p95(*names: str, ops: dict[str, Any] = ops) -> float | None:
            for name in names:
                if name in ops:
                    value: float | None = ops[name]["p95_ms"]
                    return value
            return None

        memory = window["memory"] or {}
        lines.append([
            f"{window['window']}{' (partial)' if window['partial'] else ''}",
            window["requests"], window["rps"], window["errors"],
            window["latency"].get("p50_ms"), window["latency"].get("p95_ms"),
            p95("search"), p95("chat (all)", "chat"),
            p95("upload (all)", "upload_file", "upload_text"),
            p95("delete"), window["rss_end_mb"], memory.get("cleanup_events_total"),
            "/".join("-" if window["cache_hit_rate"].get(name) is None
                     else f"{window['cache_hit_rate'][name] * 100:.0f}"
                     for name in ("query_embeddings", "keyword_phrases")),
            memory.get("load_avg_1m"),
        ])
    return common.format_table(headers, lines)


def render(result: dict[str, Any]) -> str:
    parts = [common.summary_table(result["summary"], bench=NAME)]
    for name, phase in _phases(result):
        parts.append(f"{name}: per window\n{_window_table(phase)}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Options()
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"baseline phase (default {defaults.minutes:g})")
    parser.add_argument("--pressure-minutes", type=float, default=None,
                        help=f"memory-pressure phase, 0 = skip (default "
                             f"{defaults.pressure_minutes:g})")
    parser.add_argument("--window-minutes", type=float, default=None,
                        help=f"report window (default {defaults.window_minutes:g})")
    parser.add_argument("--clients", type=int, default=None,
                        help=f"concurrent clients (default {defaults.clients})")
    parser.add_argument("--mix", default=None, help=f"operation weights (default {DEFAULT_MIX})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"random seed of the clients' draws (default {defaults.seed})")
    parser.add_argument("--seed-distractors", type=int, default=None,
                        help=f"distractor files in the seed collection besides the FAQ pages "
                             f"(default {defaults.seed_distractors})")
    parser.add_argument("--max-live-uploads", type=int, default=None,
                        help=f"soak documents alive at most (default {defaults.max_live_uploads})")
    parser.add_argument("--stream-share", type=float, default=None,
                        help=f"share of chats streamed (default {defaults.stream_share:g})")
    parser.add_argument("--rss-interval", type=float, default=None,
                        help=f"RSS sampling, seconds (default {defaults.rss_interval:g})")
    parser.add_argument("--soft-fraction", type=float, default=None,
                        help=f"pressure soft limit = this x baseline median server RSS "
                             f"(default {defaults.soft_fraction:g})")
    parser.add_argument("--emergency-mb", type=float, default=None,
                        help="pressure emergency limit (default: above twice the baseline max)")
    parser.add_argument("--monitor-seconds", type=float, default=None,
                        help=f"pressure memory monitor interval "
                             f"(default {defaults.monitor_seconds:g})")
    parser.add_argument("--soft-idle-seconds", type=float, default=None,
                        help=f"pressure: unload models idle this long "
                             f"(default {defaults.soft_idle_seconds:g})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 + 1 minutes, 1-minute windows")
    parser.add_argument("--keep-dir", action="store_true",
                        help="keep the data dir and server logs (path on stderr)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the JSON (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    try:
        parse_mix(args.mix or DEFAULT_MIX)
    except ValueError as exc:
        parser.error(str(exc))
    overrides = {key: value for key, value in vars(args).items()
                 if key not in ("quick", "keep_dir", "json")}
    result = run(args.quick, keep_dir=args.keep_dir, **overrides)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    common.emit(result, render(result))
    print(f"\nJSON written to {args.json}")  # noqa: T201
    errors = sum(phase["totals"]["errors"] for _, phase in _phases(result))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
