"""Crash consistency: SIGKILL ``ragd worker`` processes mid-ingestion, then check the result.

One data dir is filled through a ``ragd serve`` process with no in-process workers (register
a tenant, create a collection, upload 12 documents of 1.2-4 KB built from the python-faq
corpus). Then, ``--kills`` times: start ``ragd worker --concurrency 2`` (lease 2 s), SIGKILL it
after a seeded random delay (0.3-5.5 s after launch, so some kills land during start-up and
most mid-job), and upload one more document (plus, every other time, a new version of an
existing one through ``PUT``, superseding its job). A final worker drains the queue.

The same final contents are ingested in a second data dir by one uninterrupted worker; the
killed run must match it: every document ``ready`` once with the clean run's chunks (count
and text), no chunk of a non-active version, no duplicate ``(document_id, ordinal)``,
``ragd index verify`` ok, ``PRAGMA integrity_check`` ok, no job queued/running/failed.

Keyword extraction is off by default (it dominates the CPU time); ``--keywords`` turns it on
for the killed run. Nothing is asserted on timings.

    .venv/bin/python bench/crash.py [--kills 50] [--seed N] [--keywords] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "crash"
DEFAULT_KILLS = 50
QUICK_KILLS = 5
DEFAULT_SEED = 20261125
INITIAL_DOCS = 12
LEASE_SECONDS = 2
KILL_DELAY = (0.3, 5.5)
MAX_ATTEMPTS = 20
DRAIN_TIMEOUT = 600.0
CORPUS = common.REPO_ROOT.parent / "shared" / "eval" / "python-faq" / "corpus.jsonl"
PASSWORD = "violet-harbour-trumpet-42"


# -- the plan ---------------------------------------------------------------------------------


def contents(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    entries = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    out: list[tuple[str, str]] = []
    pos = 0
    for index in range(count):
        target = rng.randint(1200, 4000)
        parts: list[str] = []
        while sum(len(p) for p in parts) < target:
            parts.append(entries[pos % len(entries)]["text"])
            pos += 1
        out.append((f"faq-{index:03d}", "\n\n".join(parts)))
    return out


def plan(kills: int, seed: int) -> tuple[list[tuple[str, str]], list[list[tuple[str, int, int]]]]:
    """The contents and, per kill, the uploads that follow it (add, and every other time a
    replace of an earlier document slot)."""
    rng = random.Random(seed + 1)
    steps: list[list[tuple[str, int, int]]] = []
    slots, content = INITIAL_DOCS, INITIAL_DOCS
    for k in range(kills):
        step = [("add", content, slots)]
        slots, content = slots + 1, content + 1
        if k % 2 == 1:
            step.append(("replace", content, rng.randrange(slots)))
            content += 1
        steps.append(step)
    return contents(content, seed), steps


def final_contents(steps: list[list[tuple[str, int, int]]]) -> list[int]:
    slots = list(range(INITIAL_DOCS))
    for op, content, slot in (item for step in steps for item in step):
        if op == "add":
            slots.append(content)
        else:
            slots[slot] = content
    return slots


# -- processes --------------------------------------------------------------------------------


def worker_env(model_cache: Path, *, keywords: bool) -> dict[str, str]:
    return common.server_env({
        "RAGD_BOOTSTRAP_ADMIN": "false", "RAGD_MODELS__CACHE_DIR": str(model_cache),
        "RAGD_LOG_LEVEL": "INFO", "RAGD_INGESTION__WORKERS": "0",
        "RAGD_INGESTION__LEASE_SECONDS": str(LEASE_SECONDS),
        "RAGD_INGESTION__POLL_INTERVAL_SECONDS": "0.1",
        "RAGD_INGESTION__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "RAGD_INGESTION__KEYWORDS_ENABLED": str(keywords).lower(),
    })


class Api:
    """A ``ragd serve`` (no workers) used to register, upload and replace documents."""

    def __init__(self, data_dir: Path, env: dict[str, str], log: Path) -> None:
        self.server = common.ServerProcess(data_dir=data_dir, log_path=log, env=env)
        self.headers: dict[str, str] = {}
        self.collection_id = ""
        self.tenant_id = ""
        self.document_ids: list[str] = []

    def __enter__(self) -> Api:
        self.server.data_dir.mkdir(parents=True, exist_ok=True)
        self.server.start()
        ready = self.server.wait_ready(interval=0.05, timeout=60)
        if not ready.ready:
            raise RuntimeError(f"ragd serve not ready: {self.server.log_tail()}")
        body = self.call("POST", "/api/v1/auth/register", {
            "email": f"crash-{os.getpid()}@bench.example.com", "password": PASSWORD,
            "tenant_name": "crash-bench"})
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}
        self.tenant_id = self.call("GET", "/api/v1/auth/me")["tenant_id"]
        self.collection_id = self.call("POST", "/api/v1/collections", {"name": "docs"})["id"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 only
            self.server.base_url + path, data=data, method=method,
            headers={"content-type": "application/json", **self.headers},
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return json.loads(response.read())

    def add(self, title: str, text: str) -> None:
        body = self.call("POST", "/api/v1/documents",
                         {"collection_id": self.collection_id, "title": title, "text": text})
        self.document_ids.append(body["document_id"])

    def replace(self, slot: int, title: str, text: str) -> None:
        self.call("PUT", f"/api/v1/documents/{self.document_ids[slot]}",
                  {"title": title, "text": text})


def spawn_worker(data_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*common.ragd_command(), "worker", "--data-dir", str(data_dir), "--concurrency",
             "2"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )


def query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(db_path, timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def drain(data_dir: Path, env: dict[str, str], log: Path) -> float:
    started = time.perf_counter()
    proc = spawn_worker(data_dir, env, log)
    db = data_dir / "ragd.db"
    try:
        while query(db, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")[0][0]:
            if proc.poll() is not None or time.perf_counter() - started > DRAIN_TIMEOUT:
                raise RuntimeError(f"queue not drained (worker exit {proc.returncode})")
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its Popen handle
            proc.wait()
    return time.perf_counter() - started


@dataclass
class Kill:
    delay: float
    jobs_held: int
    stages: list[str]


def kill_once(data_dir: Path, env: dict[str, str], log: Path, delay: float) -> Kill:
    proc = spawn_worker(data_dir, env, log)
    try:
        time.sleep(delay)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited early with {proc.returncode}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    held = query(data_dir / "ragd.db",
                 "SELECT stage FROM jobs WHERE status = 'running' AND lease_owner LIKE ?",
                 f"%-{proc.pid}-%")
    return Kill(round(delay, 3), len(held), [str(row[0]) for row in held])


# -- checks -----------------------------------------------------------------------------------


def chunk_digests(db: Path) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for document_id, title, count in query(db, "SELECT id, title, chunk_count FROM documents"):
        texts = [r[0] for r in query(
            db, "SELECT text FROM chunks WHERE document_id = ? ORDER BY ordinal", document_id)]
        out[title] = (int(count), hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16])
    return out


def check(data_dir: Path, env: dict[str, str], expected: dict[str, tuple[int, str]],
          tenant_id: str) -> dict[str, Any]:
    db = data_dir / "ragd.db"
    found: dict[str, Any] = {}
    found["integrity_check"] = query(db, "PRAGMA integrity_check")[0][0]
    found["jobs_unfinished_or_failed"] = query(
        db, "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running', 'failed')")[0][0]
    docs = query(db, "SELECT title, status, active_version, latest_version FROM documents")
    found["documents"] = len(docs)
    found["documents_expected"] = len(expected)
    found["documents_not_ready"] = sum(1 for _, s, a, latest in docs
                                       if s != "ready" or a != latest)
    actual = chunk_digests(db)
    found["documents_differing_from_clean_run"] = sorted(
        t for t in set(expected) | set(actual) if actual.get(t) != expected.get(t))
    found["chunks"] = query(db, "SELECT count(*) FROM chunks")[0][0]
    found["chunks_of_inactive_versions"] = query(
        db, "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE d.active_version IS NULL OR c.version != d.active_version")[0][0]
    found["duplicate_ordinals"] = len(query(
        db, "SELECT 1 FROM chunks GROUP BY document_id, ordinal HAVING count(*) > 1"))
    verify = subprocess.run(
        [*common.ragd_command(), "index", "verify", "--data-dir", str(data_dir), "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    reports = json.loads(verify.stdout) if verify.stdout.strip().startswith("[") else []
    mine = [r for r in reports if r.get("tenant_id") == tenant_id]
    found["index_verify_exit"] = verify.returncode
    found["index_verify"] = mine[0] if mine else None
    found["jobs"] = query(db, "SELECT count(*) FROM jobs")[0][0]
    found["jobs_reclaimed"], found["max_attempts_seen"] = query(
        db, "SELECT count(*), coalesce(max(attempts), 0) FROM jobs WHERE attempts > 1")[0]
    found["consistent"] = (
        found["integrity_check"] == "ok" and not found["jobs_unfinished_or_failed"]
        and found["documents"] == len(expected) and not found["documents_not_ready"]
        and not found["documents_differing_from_clean_run"]
        and not found["chunks_of_inactive_versions"] and not found["duplicate_ordinals"]
        and verify.returncode == 0 and bool(mine) and mine[0]["ok"]
        and mine[0]["chunks"] == found["chunks"]
    )
    return found


# -- run --------------------------------------------------------------------------------------


def run(quick: bool = False, *, kills: int | None = None, seed: int = DEFAULT_SEED,
        keywords: bool = False) -> dict[str, Any]:
    kills = kills if kills is not None else (QUICK_KILLS if quick else DEFAULT_KILLS)
    kills = max(1, min(kills, 500))
    rng = random.Random(seed + 2)
    texts, steps = plan(kills, seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragd-bench-crash-") as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        cache = root / "models"
        env = worker_env(cache, keywords=keywords)
        clean_env = worker_env(cache, keywords=False)
        t0 = time.perf_counter()
        subprocess.run([*common.ragd_command(), "models", "prepare", "--data-dir",
                        str(root / "prepare")], env=env, check=True, capture_output=True)
        prepare_s = time.perf_counter() - t0

        with Api(root / "clean", clean_env, logs / "clean-serve.log") as api:
            for content in final_contents(steps):
                api.add(*texts[content])
        clean_s = drain(root / "clean", clean_env, logs / "clean.log")
        expected = chunk_digests(root / "clean" / "ragd.db")

        data_dir = root / "data"
        records: list[Kill] = []
        t0 = time.perf_counter()
        with Api(data_dir, env, logs / "serve.log") as api:
            tenant_id = api.tenant_id
            for content in range(INITIAL_DOCS):
                api.add(*texts[content])
            for index, step in enumerate(steps):
                records.append(kill_once(data_dir, env, logs / f"kill{index}.log",
                                         rng.uniform(*KILL_DELAY)))
                for op, content, slot in step:
                    if op == "add":
                        api.add(*texts[content])
                    else:
                        api.replace(slot, *texts[content])
        loop_s = time.perf_counter() - t0
        drain_s = drain(data_dir, env, logs / "final.log")
        found = check(data_dir, env, expected, tenant_id)

    mid = [k for k in records if k.jobs_held]
    result: dict[str, Any] = {
        "bench": NAME,
        "config": {"kills": kills, "seed": seed, "keywords": keywords,
                   "initial_documents": INITIAL_DOCS, "lease_seconds": LEASE_SECONDS,
                   "kill_delay_s": list(KILL_DELAY), "max_attempts": MAX_ATTEMPTS,
                   "worker_concurrency": 2},
        "environment": common.environment(),
        "kills": len(records),
        "kills_mid_job": len(mid),
        "jobs_interrupted": sum(k.jobs_held for k in records),
        "stages_interrupted": sorted({s for k in records for s in k.stages}),
        "check": found,
        "timings_s": {"prepare_model": round(prepare_s, 2), "clean_run": round(clean_s, 2),
                      "kill_loop": round(loop_s, 2), "final_drain": round(drain_s, 2)},
        "samples": [k.__dict__ for k in records],
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    result["summary"] = summary_rows(result)
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = result["check"]
    index = found.get("index_verify") or {}
    timings = result["timings_s"]
    return [
        common.row("consistent after SIGKILLs", "yes" if found["consistent"] else "NO",
                   target="yes", status="pass" if found["consistent"] else "FAIL",
                   note=f"{result['kills']} kills, seed {result['config']['seed']}"),
        common.row("kills that landed mid-job", result["kills_mid_job"], "kills",
                   note=f"{result['jobs_interrupted']} job attempts cut, stages "
                        f"{', '.join(result['stages_interrupted']) or '-'}"),
        common.row("jobs reclaimed (attempts > 1)", found["jobs_reclaimed"], "jobs",
                   note=f"of {found['jobs']}; max attempts {found['max_attempts_seen']}"),
        common.row("documents ready = clean run", found["documents"] - found["documents_not_ready"]
                   - len(found["documents_differing_from_clean_run"]), "docs",
                   target=str(found["documents_expected"])),
        common.row("chunks of inactive versions", found["chunks_of_inactive_versions"],
                   target="0", status="pass" if not found["chunks_of_inactive_versions"]
                   else "FAIL"),
        common.row("index verify", "ok" if index.get("ok") else "NOT ok",
                   note=f"chunks {index.get('chunks')}, changes {index.get('last_change')}, "
                        f"exit {found['index_verify_exit']}"),
        common.row("sqlite integrity_check", found["integrity_check"]),
        common.row("kill loop", timings["kill_loop"], "s",
                   note=f"drain {timings['final_drain']} s, clean run {timings['clean_run']} s"),
    ]


def render(result: dict[str, Any]) -> str:
    per_kill = common.format_table(
        ["kill", "delay s", "jobs held", "stages"],
        [[i + 1, k["delay"], k["jobs_held"], ", ".join(k["stages"]) or "-"]
         for i, k in enumerate(result["samples"])],
    )
    return (f"crash: {result['kills']} SIGKILLs, {result['environment']['cpu_count']} CPU(s), "
            f"{result['elapsed_s']} s\n\n{per_kill}\n\n"
            f"{common.summary_table(result['summary'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=None,
                        help=f"worker SIGKILLs (default {DEFAULT_KILLS}, --quick {QUICK_KILLS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--keywords", action="store_true",
                        help="keep keyword extraction on in the killed run")
    parser.add_argument("--quick", action="store_true", help="fewer kills")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    result = run(args.quick, kills=args.kills, seed=args.seed, keywords=args.keywords)
    common.emit(result, render(result), json_only=args.json)
    return 0 if result["check"]["consistent"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
