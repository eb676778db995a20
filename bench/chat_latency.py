"""Chat latency over HTTP: time to first token and total of ``POST /api/v1/chat``, and fallback.

    .venv/bin/python bench/chat_latency.py [--requests 200] [--clients 8] [--docs 60]
                                           [--quick] [--json out.json]

Setup: a real ``ragd serve`` on 127.0.0.1 with a throwaway data dir (models from the shared
cache under /tmp) gets a tenant, a collection and ``--docs`` python-faq corpus entries (the
relevant entries of the first dev queries, title + text) as text documents through the real
API; every ingestion job is awaited. The questions are those dev queries, so retrieval finds
relevant chunks and the provider is really asked. Fake LLM servers
(``tests.generation.fakes.FakeLLMServer``: real HTTP, OpenAI protocol) run in this process.

a) **extractive**: the server has no provider configured (the extractive one only); a
   sequential single-client baseline of streamed requests, then ``--clients`` threads send
   ``--requests`` streamed requests (TTFB = send -> first ``token`` event, total = send ->
   ``done``), then as many non-streamed ones (total only).
b) **fake stream**: the server is restarted on the same data dir with providers configured
   (``RAGD_LLM__PROVIDERS``); one fake answers every request with a fixed answer of
   ``DELTAS`` word deltas, ``STREAM_INTERVAL`` s apart (>= 0.49 s intrinsic). The fake's own
   first-delta and total times are measured directly (no ragd; one client, and also
   ``--clients`` clients); ragd's overhead is the p50 through ragd minus the fake's median
   with one client.
c) **fallback**: requests name ``providers: [<down>, "up"]`` ("up" is a fast fake), one client,
   sequentially. ``<down>`` is a fake answering 500, a closed port (connection refused) or a
   fake that never answers (``timeout_seconds`` 1); each has ``max_attempts`` 1 and the
   breaker opens after ``BREAKER_FAILURES`` failures (cooldown 1 h). Requests whose answer
   shows an attempt at ``<down>`` are "breaker closed", those where it was skipped
   (``breaker_open``) are "breaker open"; p50 of each is reported.

Errors (must be 0): any non-200, any ``error`` event, a stream without ``done``, or an answer
from another provider than expected. All processes, fakes and temp dirs are cleaned up even on
errors. The clients share the 2 cores with the server and the fakes, so absolute numbers
include client overhead; compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

if str(common.REPO_ROOT) not in sys.path:  # the fakes live in tests/ (a package)
    sys.path.insert(0, str(common.REPO_ROOT))

from tests.generation.fakes import FakeLLMServer, Step  # noqa: E402

NAME = "chat_latency"
EVAL = common.REPO_ROOT.parent / "shared" / "eval" / "python-faq"
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
EMAIL, PASSWORD = "chat-bench@example.com", "Chat-bench-passphrase-77!"  # noqa: S105
DELTAS, STREAM_INTERVAL = 50, 0.01
BREAKER_FAILURES = 5
HANG_TIMEOUT_S = 1.0
FINISHED = ("succeeded", "failed", "cancelled")
#: A fixed answer of exactly DELTAS word deltas, citing block 1.
ANSWER = " ".join(
    (["Python", "is", "described", "in", "the", "documents", "[1]."] * 8)[: DELTAS - 1]
    + ["[1]"]
)
DOWN_KINDS = ("status500", "refused", "hang")

DEFAULTS = {"requests": 200, "clients": 8, "docs": 60, "warmup": 16, "open_requests": 20,
            "fake_probes": 20, "single": 40}
QUICK = {"requests": 40, "docs": 20, "warmup": 8, "open_requests": 6, "fake_probes": 5,
         "single": 10}


# -- data --------------------------------------------------------------------------------------


def _dataset(docs: int) -> tuple[list[dict[str, str]], list[str]]:
    """The first dev queries with a relevant entry, up to ``docs`` distinct entries."""
    corpus = {}
    for line in (EVAL / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        corpus[entry["_id"]] = entry
    queries = {}
    for line in (EVAL / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        queries[entry["_id"]] = entry["text"]
    chosen: dict[str, dict[str, str]] = {}
    questions: list[str] = []
    for line in (EVAL / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, corpus_id, score = line.split("\t")[:3]
        if int(score) <= 0 or corpus_id not in corpus or query_id not in queries:
            continue
        if corpus_id not in chosen:
            if len(chosen) >= docs:
                break
            chosen[corpus_id] = corpus[corpus_id]
        if queries[query_id] not in questions:
            questions.append(queries[query_id])
    return list(chosen.values()), questions


# -- the server --------------------------------------------------------------------------------


@contextlib.contextmanager
def _server(data_dir: Path, log: Path, secret: str, providers: list[dict[str, Any]] | None,
            ) -> Iterator[common.ServerProcess]:
    extra = {"RAGD_JWT_SECRET": secret, "RAGD_BOOTSTRAP_ADMIN": "false",
             "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE), "RAGD_LOG_LEVEL": "WARNING",
             "RAGD_LLM__BREAKER_FAILURES": str(BREAKER_FAILURES),
             "RAGD_LLM__BREAKER_COOLDOWN_SECONDS": "3600"}
    if providers:
        extra["RAGD_LLM__PROVIDERS"] = json.dumps(providers)
    with common.running_server(data_dir, log, extra) as server:
        yield server


def _setup(base_url: str, documents: list[dict[str, str]]) -> dict[str, Any]:
    """Register, create a collection, ingest ``documents``, wait for every job."""
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=120) as client:
        r = client.post("/api/v1/auth/register",
                        json={"email": EMAIL, "password": PASSWORD, "tenant_name": "chat-bench"})
        if r.status_code != 201:
            raise RuntimeError(f"register: {r.status_code} {r.text[:300]}")
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = client.post("/api/v1/collections", json={"name": "faq"}, headers=headers)
        if r.status_code != 201:
            raise RuntimeError(f"collection: {r.status_code} {r.text[:300]}")
        collection_id = r.json()["id"]
        jobs = []
        for entry in documents:
            r = client.post("/api/v1/documents", headers=headers, json={
                "collection_id": collection_id, "title": entry.get("title") or entry["_id"],
                "text": entry["text"]})
            if r.status_code != 202:
                raise RuntimeError(f"upload: {r.status_code} {r.text[:300]}")
            jobs.append(r.json()["job_id"])
        deadline = time.monotonic() + 600
        failed = 0
        for job_id in jobs:
            while True:
                job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
                if job["status"] in FINISHED:
                    failed += job["status"] != "succeeded"
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} not finished: {job}")
                time.sleep(0.05)
    if failed:
        raise RuntimeError(f"{failed} ingestion jobs did not succeed")
    return {"documents": len(documents), "ingest_s": round(time.perf_counter() - started, 1)}


def _login(base_url: str) -> dict[str, str]:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        r = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        if r.status_code != 200:
            raise RuntimeError(f"login: {r.status_code} {r.text[:300]}")
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


# -- one chat request --------------------------------------------------------------------------


def _chat(client: httpx.Client, headers: dict[str, str], question: str, *, stream: bool,
          providers: list[str] | None = None) -> dict[str, Any]:
    """One request: ``ttfb``/``total`` seconds, ``ok``, and the final answer (``done``)."""
    body: dict[str, Any] = {"question": question, "stream": stream}
    if providers:
        body["providers"] = providers
    started = time.perf_counter()
    if not stream:
        r = client.post("/api/v1/chat", json=body, headers=headers)
        total = time.perf_counter() - started
        ok = r.status_code == 200
        return {"ok": ok, "ttfb": None, "total": total, "status": r.status_code,
                "answer": r.json() if ok else None}
    ttfb = None
    answer = None
    error = None
    with client.stream("POST", "/api/v1/chat", json=body, headers=headers) as r:
        if r.status_code != 200:
            r.read()
            return {"ok": False, "ttfb": None, "total": time.perf_counter() - started,
                    "status": r.status_code, "answer": None}
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "token" and ttfb is None:
                    ttfb = time.perf_counter() - started
                elif event == "done":
                    answer = json.loads(line[6:])
                elif event == "error":
                    error = json.loads(line[6:])
    total = time.perf_counter() - started
    return {"ok": answer is not None and error is None and ttfb is not None, "ttfb": ttfb,
            "total": total, "status": 200, "answer": answer, "error": error}


def _median_timing(answers: list[dict[str, Any]], key: str) -> float | None:
    values = [a["timings_ms"][key] for a in answers if key in a.get("timings_ms", {})]
    return round(statistics.median(values), 1) if values else None


def _load(base_url: str, headers: dict[str, str], questions: list[str], *, clients: int,
          requests: int, stream: bool, expect: str, providers: list[str] | None = None,
          ) -> dict[str, Any]:
    """``requests`` chats from ``clients`` threads; latency percentiles in ms."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        with httpx.Client(base_url=base_url, timeout=120) as client:
            for i in range(offset, requests, clients):
                try:
                    outcome = _chat(client, headers, questions[(i * 7) % len(questions)],
                                    stream=stream, providers=providers)
                except httpx.HTTPError as exc:
                    outcome = {"ok": False, "ttfb": None, "total": 0.0, "status": repr(exc),
                               "answer": None}
                with lock:
                    results.append(outcome)

    wall = common.run_clients(worker, clients)
    answers = [r["answer"] for r in results if r["answer"] is not None]
    wrong = sum(1 for a in answers if a["provider"] != expect)
    errors = sum(1 for r in results if not r["ok"]) + wrong
    ttfb = [r["ttfb"] for r in results if r["ttfb"] is not None]
    total = [r["total"] for r in results if r["ok"]]
    out: dict[str, Any] = {
        "requests": len(results), "clients": clients, "stream": stream, "errors": errors,
        "wrong_provider": wrong, "throughput_rps": round(len(results) / wall, 2),
        "grounded": sum(1 for a in answers if a["grounded"]),
        "ttfb": common.latency_summary(ttfb) if stream else None,
        "total": common.latency_summary(total),
        "server_timings_ms_median": {key: _median_timing(answers, key)
                                     for key in ("retrieval", "first_token", "generate", "total")},
    }
    if errors:
        out["error_samples"] = [str(r.get("error") or r["status"])[:300]
                                for r in results if not r["ok"]][:3]
    return out


def _warm(base_url: str, headers: dict[str, str], questions: list[str], count: int,
          providers: list[str] | None = None) -> None:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for i in range(count):
            _chat(client, headers, questions[i % len(questions)], stream=i % 2 == 0,
                  providers=providers)


# -- the fakes ---------------------------------------------------------------------------------


def _provider(name: str, base_url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai", "model": "fake-model", "base_url": base_url,
            "api_key": "sk-bench-not-a-secret", "timeout_seconds": 10, **extra}


def _fake_intrinsic(fake: FakeLLMServer, probes: int, clients: int = 1) -> dict[str, Any]:
    """The fake's own first-delta and total stream times (no ragd), from ``clients`` threads
    sending ``probes`` requests each."""
    firsts: list[float] = []
    totals: list[float] = []
    lock = threading.Lock()
    body = {"model": "fake-model", "stream": True,
            "messages": [{"role": "user", "content": "intrinsic probe"}]}

    def worker(_: int) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(probes):
                started = time.perf_counter()
                first = None
                with client.stream("POST", f"{fake.base_url}/chat/completions", json=body) as r:
                    for line in r.iter_lines():
                        if first is None and '"content": "' in line \
                                and '"content": ""' not in line:
                            first = time.perf_counter() - started
                total = time.perf_counter() - started
                with lock:
                    totals.append(total)
                    firsts.append(first if first is not None else total)

    common.run_clients(worker, clients)
    return {"clients": clients, "requests": len(totals),
            "first_delta_ms": round(statistics.median(firsts) * 1000, 2),
            "total_ms": round(statistics.median(totals) * 1000, 2),
            "scripted_total_ms": round((DELTAS - 1) * STREAM_INTERVAL * 1000, 1)}


def _fallback(base_url: str, headers: dict[str, str], questions: list[str], down: str,
              open_requests: int) -> dict[str, Any]:
    """Sequential requests with ``[down, "up"]`` until the breaker opened, then more."""
    closed: list[dict[str, Any]] = []
    opened: list[dict[str, Any]] = []
    errors: list[str] = []
    limit = BREAKER_FAILURES * 3 + open_requests  # a breaker that never opens still stops
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for i in range(limit):
            if len(opened) >= open_requests:
                break
            outcome = _chat(client, headers, questions[(i * 11) % len(questions)], stream=True,
                            providers=[down, "up"])
            answer = outcome["answer"]
            if not outcome["ok"] or answer is None or answer["provider"] != "up":
                errors.append(str(outcome.get("error") or outcome["status"])[:300])
                continue
            skipped = {s["provider"]: s["reason"] for s in answer["skipped"]}
            if skipped.get(down) == "breaker_open":
                opened.append(outcome)
            elif any(a["provider"] == down and not a["ok"] for a in answer["attempts"]):
                closed.append(outcome)
            else:
                errors.append(f"neither attempted nor skipped: {answer['attempts']}")
    kinds = sorted({a["error_kind"] or "" for o in closed for a in o["answer"]["attempts"]
                    if a["provider"] == down})

    def p50(values: list[dict[str, Any]], key: str) -> float | None:
        return round(statistics.median(v[key] for v in values) * 1000, 1) if values else None

    return {
        "down": down, "closed_requests": len(closed), "open_requests": len(opened),
        "errors": len(errors), "error_samples": errors[:3], "down_error_kinds": kinds,
        "closed_ttfb_p50_ms": p50(closed, "ttfb"), "closed_total_p50_ms": p50(closed, "total"),
        "open_ttfb_p50_ms": p50(opened, "ttfb"), "open_total_p50_ms": p50(opened, "total"),
    }


# -- the bench ---------------------------------------------------------------------------------


def run(quick: bool = False, *, requests: int | None = None, clients: int | None = None,
        docs: int | None = None) -> dict[str, Any]:
    opts = {**DEFAULTS, **(QUICK if quick else {})}
    opts.update({k: v for k, v in (("requests", requests), ("clients", clients),
                                   ("docs", docs)) if v is not None})
    documents, questions = _dataset(opts["docs"])
    secret = common.bench_secret()
    result: dict[str, Any] = {
        "bench": NAME, "quick": quick, "options": opts, "questions": len(questions),
        "fake": {"deltas": DELTAS, "stream_interval_s": STREAM_INTERVAL},
        "fallback_settings": {"breaker_failures": BREAKER_FAILURES, "max_attempts": 1,
                              "breaker_cooldown_seconds": 3600,
                              "hang_timeout_seconds": HANG_TIMEOUT_S},
        "environment": common.environment(),
    }
    with tempfile.TemporaryDirectory(prefix="ragd-chat-bench-") as scratch, \
            contextlib.ExitStack() as stack:
        root = Path(scratch)
        data_dir, log = root / "data", root / "server.log"
        # a) extractive only: no provider configured.
        with _server(data_dir, log, secret, None) as server:
            result["setup"] = _setup(server.base_url, documents)
            headers = _login(server.base_url)
            _warm(server.base_url, headers, questions, opts["warmup"])
            result["extractive_stream_1client"] = _load(
                server.base_url, headers, questions, stream=True, expect="extractive",
                clients=1, requests=opts["single"])
            common_args = {"clients": opts["clients"], "requests": opts["requests"]}
            result["extractive_stream"] = _load(server.base_url, headers, questions,
                                                stream=True, expect="extractive", **common_args)
            result["extractive_json"] = _load(server.base_url, headers, questions,
                                              stream=False, expect="extractive", **common_args)
        # b) and c): one restart with every fake configured; requests pick theirs by name.
        streamer = stack.enter_context(FakeLLMServer(
            "openai", default=Step(text=ANSWER), stream_interval=STREAM_INTERVAL))
        up = stack.enter_context(FakeLLMServer("openai", default=Step(text=ANSWER)))
        down500 = stack.enter_context(FakeLLMServer("openai", default=Step("status", status=500)))
        hang = stack.enter_context(FakeLLMServer("openai", default=Step("hang")))
        refused = f"http://{common.LOOPBACK}:{common.free_port()}/v1"
        providers = [
            _provider("stream", streamer.base_url),
            _provider("status500", down500.base_url, max_attempts=1),
            _provider("refused", refused, max_attempts=1),
            _provider("hang", hang.base_url, max_attempts=1, timeout_seconds=HANG_TIMEOUT_S),
            _provider("up", up.base_url),
        ]
        result["fake_intrinsic"] = _fake_intrinsic(streamer, opts["fake_probes"])
        result["fake_intrinsic_concurrent"] = _fake_intrinsic(
            streamer, max(2, opts["fake_probes"] // 4), clients=opts["clients"])
        with _server(data_dir, log, secret, providers) as server:
            headers = _login(server.base_url)
            _warm(server.base_url, headers, questions, opts["warmup"], providers=["up"])
            load = _load(server.base_url, headers, questions, stream=True, expect="stream",
                         providers=["stream"], **common_args)
            intrinsic = result["fake_intrinsic"]
            load["overhead_ms"] = {
                "ttfb_p50": round(load["ttfb"]["p50_ms"] - intrinsic["first_delta_ms"], 1)
                if load["ttfb"].get("n") else None,
                "total_p50": round(load["total"]["p50_ms"] - intrinsic["total_ms"], 1)
                if load["total"].get("n") else None,
            }
            result["fake_stream"] = load
            result["fallback"] = {
                kind: _fallback(server.base_url, headers, questions, kind, opts["open_requests"])
                for kind in DOWN_KINDS
            }
    result["summary"] = summary_rows(result)
    return result


def _latency_rows(label: str, load: dict[str, Any], note: str = "") -> list[dict[str, Any]]:
    rows = []
    tail = f"{load['throughput_rps']} req/s, {load['errors']} errors"
    if load["stream"]:
        ttfb = load["ttfb"]
        rows.append(common.row(f"{label}: TTFB p50 / p95", _pair(ttfb), "ms", note=note))
    rows.append(common.row(f"{label}: total p50 / p95", _pair(load["total"]), "ms", note=tail,
                           status="pass" if load["errors"] == 0 else "FAIL", target="0 errors"))
    return rows


def _pair(summary: dict[str, Any]) -> str | None:
    if not summary.get("n"):
        return None
    return f"{summary['p50_ms']:.1f} / {summary['p95_ms']:.1f}"


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    clients = result["options"]["clients"]
    rows = [
        *_latency_rows("extractive, stream (1 client)", result["extractive_stream_1client"]),
        *_latency_rows(f"extractive, stream ({clients} clients)", result["extractive_stream"]),
        *_latency_rows(f"extractive, JSON ({clients} clients)", result["extractive_json"]),
    ]
    intrinsic = result["fake_intrinsic"]
    concurrent = result["fake_intrinsic_concurrent"]
    load = result["fake_stream"]
    overhead = load["overhead_ms"]
    rows += _latency_rows(
        f"fake {DELTAS}x{STREAM_INTERVAL * 1000:g} ms stream ({clients} clients)", load,
        note=f"fake alone: first {intrinsic['first_delta_ms']} ms, "
             f"total {intrinsic['total_ms']} ms")
    rows.append(common.row("fake stream: ragd overhead p50 (TTFB / total)",
                           f"{overhead['ttfb_p50']} / {overhead['total_p50']}", "ms",
                           note=f"p50 via ragd - the fake's own median (1 client); fake alone "
                                f"at {concurrent['clients']} clients: total "
                                f"{concurrent['total_ms']} ms"))
    for kind, entry in result["fallback"].items():
        rows.append(common.row(
            f"fallback {kind}->up: total p50 closed / open",
            f"{entry['closed_total_p50_ms']} / {entry['open_total_p50_ms']}", "ms",
            target="0 errors", status="pass" if entry["errors"] == 0 else "FAIL",
            note=f"n={entry['closed_requests']}/{entry['open_requests']}, "
                 f"TTFB {entry['closed_ttfb_p50_ms']} / {entry['open_ttfb_p50_ms']} ms, "
                 f"{entry['errors']} errors"))
    return rows


def render(result: dict[str, Any]) -> str:
    return common.summary_table(result["summary"], bench=NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None,
                        help=f"per load phase (default {DEFAULTS['requests']})")
    parser.add_argument("--clients", type=int, default=None,
                        help=f"concurrent clients (default {DEFAULTS['clients']})")
    parser.add_argument("--docs", type=int, default=None,
                        help=f"corpus entries ingested (default {DEFAULTS['docs']})")
    parser.add_argument("--quick", action="store_true", help="small numbers, a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(args.quick, requests=args.requests, clients=args.clients, docs=args.docs)
    common.emit(result, render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    errors = sum(result[k]["errors"] for k in ("extractive_stream_1client", "extractive_stream",
                                               "extractive_json", "fake_stream"))
    errors += sum(entry["errors"] for entry in result["fallback"].values())
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
