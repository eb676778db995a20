"""Crash consistency of durable ingestion: `ragd worker` processes SIGKILLed mid-work.

A tenant's documents are uploaded (and some replaced) through the real API with no
in-process workers; then, ``KILLS`` times, a `ragd worker` process is started on the same
data dir and SIGKILLed: every fifth kill at a seeded random moment of its start-up, the
others mid-job (once the worker holds a job, a seeded random while later, checked with the
process frozen by SIGSTOP so the kill lands exactly there). A final worker drains the queue.
The result must equal an uninterrupted run: every document ready exactly once, with the
chunks of a clean run, no chunk of a dead version, consistent derived indexes, a sound
SQLite file and no job left behind. (How long all this takes is ``bench/crash.py``'s.)

``RAGD_CRASH_KILLS`` (default 20) and ``RAGD_CRASH_SEED`` set the kills and the seed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.app import create_app
from ragd.db.tables import utcnow
from ragd.jobs import SqlJobQueue
from ragd.stores.catalog import INGEST_JOB
from ragd.stores.sql_catalog import finalise_ingest_job
from tests.conftest import _MODEL_CACHE, TEST_SECRET
from tests.ingestion.conftest import Tenant, ingest_settings, new_tenant, upload_text
from tests.processes import stop
from tests.shared_data import EVAL, require
from tests.waiting import HANG_TIMEOUT, eventually_sync

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("RAGD_CRASH_KILLS", "20"))
SEED = int(os.environ.get("RAGD_CRASH_SEED", "20261125"))
#: Documents uploaded before the first kill; each iteration then adds or replaces one.
INITIAL_DOCS = 12
LEASE_SECONDS = 2
#: Every this many kills, one lands during start-up (before any claim); the others mid-job.
STARTUP_KILL_EVERY = 5
#: A start-up kill: this long after the spawn (start-up takes ~2.5 s on a 2-core machine).
STARTUP_DELAY = (0.1, 1.5)
#: A mid-job kill: this long after the worker was first seen holding a job.
MID_JOB_DELAY = (0.0, 3.0)
#: Chunks per staged batch of a large version in the killed workers (the default is 1000).
COMMIT_BATCH = 3
#: How long a mid-job worker runs between two checks made with it frozen.
PROBE_SECONDS = 0.05
#: Enough that a job killed at every attempt of the scenario (one per kill at most, then the
#: final drain) is not failed for it, whatever the machine's speed.
MAX_ATTEMPTS = KILLS + 2
#: The killed runs use the whole pipeline, keywords included (RAGD_CRASH_KEYWORDS=0 turns
#: them off); the clean reference run skips them (chunks do not depend on keywords).
KEYWORDS = os.environ.get("RAGD_CRASH_KEYWORDS", "1") == "1"
DRAIN_TIMEOUT = 600.0  # a hang guard for the final drain, not a speed bar
CORPUS = EVAL / "python-faq" / "corpus.jsonl"


# -- documents --------------------------------------------------------------------------------


def _contents(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (title, text) pairs of 2-8 KB built from consecutive FAQ answers."""
    rng = random.Random(seed)
    corpus = require(CORPUS).read_text(encoding="utf-8")
    entries = [json.loads(line) for line in corpus.splitlines()]
    out: list[tuple[str, str]] = []
    pos = 0
    for index in range(count):
        target = rng.randint(2000, 8000)
        parts: list[str] = []
        while sum(len(p) for p in parts) < target:
            parts.append(entries[pos % len(entries)]["text"])
            pos += 1
        out.append((f"faq-{index:03d}", "\n\n".join(parts)))
    return out


@dataclass
class Plan:
    """What is uploaded: the initial documents and, per iteration, one add or replace."""

    contents: list[tuple[str, str]]
    initial: list[int]
    #: Per iteration: ("add", content, new slot) and, every other one, ("replace", content,
    #: slot).
    steps: list[list[tuple[str, int, int]]]

    @classmethod
    def make(cls, kills: int, seed: int) -> Plan:
        rng = random.Random(seed + 1)
        contents = _contents(INITIAL_DOCS + kills + kills // 2, seed)
        steps: list[list[tuple[str, int, int]]] = []
        slots, content = INITIAL_DOCS, INITIAL_DOCS
        for k in range(kills):
            step = [("add", content, slots)]
            slots, content = slots + 1, content + 1
            if k % 2 == 1:
                step.append(("replace", content, rng.randrange(slots)))
                content += 1
            steps.append(step)
        return cls(contents, list(range(INITIAL_DOCS)), steps)

    def final_contents(self) -> list[int]:
        """The content each document slot ends with."""
        slots = list(self.initial)
        for op, content, slot in (item for step in self.steps for item in step):
            if op == "add":
                slots.append(content)
            else:
                slots[slot] = content
        return slots


@dataclass
class Uploader:
    client: httpx.AsyncClient
    tenant: Tenant
    document_ids: list[str] = field(default_factory=list)

    async def add(self, title: str, text: str) -> None:
        response = await upload_text(self.client, self.tenant, title, text)
        assert response.status_code == 202, response.text
        self.document_ids.append(response.json()["document_id"])

    async def replace(self, slot: int, title: str, text: str) -> None:
        response = await self.client.put(
            f"/api/v1/documents/{self.document_ids[slot]}", json={"title": title, "text": text},
            headers=self.tenant.headers,
        )
        assert response.status_code == 202, response.text


async def _uploader(data_dir: Path) -> AsyncIterator[Uploader]:
    settings = ingest_settings(data_dir, ingestion={"workers": 0, "max_attempts": MAX_ATTEMPTS})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test",
                                     timeout=60) as client:
            yield Uploader(client, await new_tenant(client))


# -- worker processes -------------------------------------------------------------------------


def _env(model_cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(
        RAGD_JWT_SECRET=TEST_SECRET, RAGD_BOOTSTRAP_ADMIN="false",
        RAGD_MODELS__CACHE_DIR=str(model_cache), RAGD_LOG_LEVEL="INFO",
        RAGD_INGESTION__WORKERS="0", RAGD_INGESTION__LEASE_SECONDS=str(LEASE_SECONDS),
        RAGD_INGESTION__POLL_INTERVAL_SECONDS="0.1",
        RAGD_INGESTION__MAX_ATTEMPTS=str(MAX_ATTEMPTS), PYTHONUNBUFFERED="1",
        RAGD_INGESTION__KEYWORDS_ENABLED=str(KEYWORDS).lower(),
        # Versions of more than 3 chunks (most of these) are staged in batches before they
        # are activated, so kills also land between batches.
        RAGD_INGESTION__COMMIT_BATCH_CHUNKS=str(COMMIT_BATCH),
    )
    env.update(extra)
    return env


def _ragd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragd", *args]


def _spawn_worker(data_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            _ragd("worker", "--data-dir", str(data_dir), "--concurrency", "2"),
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )


def _query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(db_path, timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def _unfinished(db_path: Path) -> int:
    return int(_query(db_path, "SELECT count(*) FROM jobs WHERE status IN "
                               "('queued', 'running')")[0][0])


def _alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.poll() is None, f"worker exited {proc.returncode}: {_tail(log)}"


def _drain(data_dir: Path, env: dict[str, str], log: Path) -> None:
    """Run one worker until no job is queued or running; SIGTERM it."""
    db = data_dir / "ragd.db"
    proc = _spawn_worker(data_dir, env, log)

    def drained() -> bool:
        _alive(proc, log)
        return _unfinished(db) == 0

    try:
        eventually_sync(drained, timeout=DRAIN_TIMEOUT, interval=0.2, what="the queue drained")
    except AssertionError as exc:
        states = _query(db, "SELECT status, count(*) FROM jobs GROUP BY status")
        raise AssertionError(f"{exc}; jobs by status: {states}") from None
    finally:
        stop(proc)
    assert proc.returncode in (0, -signal.SIGTERM), _tail(log)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Kill:
    mid_job: bool  # planned to land mid-job (else during start-up)
    jobs_held: int  # running jobs whose lease the killed process held
    stages: list[str]


def _held(db: Path, pid: int) -> list[str]:
    """The stages of the running jobs leased by process ``pid`` (worker ids embed it)."""
    rows = _query(db, "SELECT stage FROM jobs WHERE status = 'running' AND lease_owner LIKE ?",
                  f"%-{pid}-%")
    return [str(row[0]) for row in rows]


def _freeze_mid_job(proc: subprocess.Popen[bytes], db: Path, log: Path,
                    rng: random.Random) -> None:
    """Leave the worker frozen (SIGSTOP) while it holds a job, a seeded random while after it
    was first seen holding one.

    The worker runs only in short slices between checks made with it frozen, and it is frozen
    for good early when the jobs it holds are the last unfinished ones: it cannot run out of
    work before the kill, however fast or slow the machine is.
    """

    def holds_a_job() -> bool:
        _alive(proc, log)
        if _held(db, proc.pid):
            return True
        assert _unfinished(db) > 0, "the queue drained before the worker was seen holding a job"
        return False

    eventually_sync(holds_a_job, interval=PROBE_SECONDS, what="the worker holds a job")
    # The scenario: how far into the work the kill lands (seeded, so stages vary).
    delay = rng.uniform(*MID_JOB_DELAY)
    first_seen = time.monotonic()
    while True:
        os.kill(proc.pid, signal.SIGSTOP)
        held = len(_held(db, proc.pid))
        unfinished = _unfinished(db)
        if held and (time.monotonic() - first_seen >= delay or unfinished <= held):
            return
        # Between two jobs, or not yet time: the last check saw it holding a job with more work
        # queued, and it cannot finish a job and all that work within one short slice.
        assert held or unfinished > 0, "the worker ran out of work between two checks"
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(PROBE_SECONDS)


def _kill_once(
    data_dir: Path, env: dict[str, str], log: Path, rng: random.Random, *, mid_job: bool
) -> Kill:
    db = data_dir / "ragd.db"
    proc = _spawn_worker(data_dir, env, log)
    try:
        if mid_job:
            _freeze_mid_job(proc, db, log, rng)
        else:
            # The scenario: a kill at a random moment of start-up (nothing to wait for).
            time.sleep(rng.uniform(*STARTUP_DELAY))
            _alive(proc, log)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HANG_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The dead process's rows are frozen.
    held = _held(db, proc.pid)
    return Kill(mid_job, len(held), held)


# -- the checks -------------------------------------------------------------------------------


def _chunk_digests(db_path: Path) -> dict[str, tuple[int, str]]:
    """Per document title: (chunk count, digest of the ordered chunk texts)."""
    out: dict[str, tuple[int, str]] = {}
    for document_id, title, count in _query(
        db_path, "SELECT id, title, chunk_count FROM documents"
    ):
        texts = [row[0] for row in _query(
            db_path, "SELECT text FROM chunks WHERE document_id = ? ORDER BY ordinal",
            document_id,
        )]
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        out[title] = (int(count), digest)
    return out


def _verify_indexes(data_dir: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = subprocess.run(
        _ragd("index", "verify", "--data-dir", str(data_dir), "--json"),
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"index verify: {result.stdout}\n{result.stderr}"
    reports: list[dict[str, Any]] = json.loads(result.stdout)
    return reports


def _check_consistent(
    data_dir: Path, env: dict[str, str], expected: dict[str, tuple[int, str]], tenant_id: str
) -> dict[str, Any]:
    db = data_dir / "ragd.db"
    problems: list[str] = []

    assert _query(db, "PRAGMA integrity_check") == [("ok",)]
    leftover = _query(db, "SELECT id, status, attempts, error FROM jobs "
                          "WHERE status IN ('queued', 'running', 'failed')")
    if leftover:
        problems.append(f"jobs left queued/running/failed: {leftover}")

    documents = _query(db, "SELECT id, title, status, active_version, latest_version, error, "
                           "content_sha256, chunk_count FROM documents")
    titles = [row[1] for row in documents]
    if sorted(titles) != sorted(expected):
        problems.append(f"documents {sorted(titles)} != expected {sorted(expected)}")
    if len({row[6] for row in documents}) != len(documents):
        problems.append("two documents share a content hash")
    for doc_id, title, status, active, latest, error, _sha, _count in documents:
        if status != "ready" or active != latest:
            problems.append(f"{title} ({doc_id}): status={status} active={active} "
                            f"latest={latest} error={error}")

    actual = _chunk_digests(db)
    for title, want in sorted(expected.items()):
        if actual.get(title) != want:
            problems.append(f"{title}: (chunk_count, text digest) {actual.get(title)} != "
                            f"clean run {want}")

    dead = _query(db, "SELECT c.document_id, c.version, d.active_version FROM chunks c "
                      "JOIN documents d ON d.id = c.document_id "
                      "WHERE d.active_version IS NULL OR c.version != d.active_version")
    if dead:
        problems.append(f"{len(dead)} chunks of non-active versions, e.g. {dead[:3]}")
    orphans = _query(db, "SELECT count(*) FROM chunks WHERE document_id NOT IN "
                         "(SELECT id FROM documents)")[0][0]
    if orphans:
        problems.append(f"{orphans} chunks without a document")
    duplicates = _query(db, "SELECT document_id, ordinal, count(*) FROM chunks "
                            "GROUP BY document_id, ordinal HAVING count(*) > 1")
    if duplicates:
        problems.append(f"duplicate (document_id, ordinal): {duplicates[:5]}")
    miscounted = _query(db, "SELECT d.title, d.chunk_count, count(c.key), max(c.ordinal) "
                            "FROM documents d LEFT JOIN chunks c ON c.document_id = d.id "
                            "GROUP BY d.id HAVING d.chunk_count != count(c.key) "
                            "OR coalesce(max(c.ordinal), -1) != d.chunk_count - 1")
    if miscounted:
        problems.append(f"chunk_count disagrees with the chunk rows: {miscounted}")

    reports = _verify_indexes(data_dir, env)
    mine = [r for r in reports if r["tenant_id"] == tenant_id]
    total_chunks = _query(db, "SELECT count(*) FROM chunks")[0][0]
    if len(mine) != 1 or not mine[0]["ok"] or mine[0]["chunks"] != total_chunks:
        problems.append(f"index verify: {reports} (chunk rows: {total_chunks})")

    assert not problems, "crash consistency violated:\n  " + "\n  ".join(problems)
    reclaimed = _query(db, "SELECT count(*), coalesce(max(attempts), 0) FROM jobs "
                           "WHERE attempts > 1")[0]
    return {"documents": len(documents), "chunks": total_chunks,
            "jobs": _query(db, "SELECT count(*) FROM jobs")[0][0],
            "jobs_reclaimed": reclaimed[0], "max_attempts_seen": reclaimed[1],
            "index": mine[0]}


# -- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedder prepared once (other tests may already have done it in this cache)."""
    cache = _MODEL_CACHE[0] if _MODEL_CACHE else tmp_path_factory.mktemp("crash-models")
    data_dir = tmp_path_factory.mktemp("crash-prepare")
    result = subprocess.run(_ragd("models", "prepare", "--data-dir", str(data_dir)),
                            env=_env(cache), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return cache


async def test_sigkilled_workers_leave_a_consistent_catalog_and_index(
    tmp_path: Path, model_cache: Path
) -> None:
    plan = Plan.make(KILLS, SEED)
    rng = random.Random(SEED + 2)
    env = _env(model_cache)
    logs = tmp_path / "logs"
    logs.mkdir()

    # The reference: the final contents, processed by one uninterrupted worker (chunking does
    # not depend on keywords, so the clean run always skips them).
    clean_dir = tmp_path / "clean"
    gen = _uploader(clean_dir)
    up = await anext(gen)
    for content in plan.final_contents():
        await up.add(*plan.contents[content])
    await gen.aclose()
    clean_env = _env(model_cache, RAGD_INGESTION__KEYWORDS_ENABLED="false")
    await asyncio.to_thread(_drain, clean_dir, clean_env, logs / "clean.log")
    expected = _chunk_digests(clean_dir / "ragd.db")
    assert len(expected) == len(plan.final_contents())
    assert all(count >= 1 for count, _ in expected.values())
    assert len({count for count, _ in expected.values()}) > 1, "chunk counts should differ"

    data_dir = tmp_path / "data"
    gen = _uploader(data_dir)
    up = await anext(gen)
    tenant_id = up.tenant.tenant_id
    for content in plan.initial:
        await up.add(*plan.contents[content])
    kills: list[Kill] = []
    try:
        for index, step in enumerate(plan.steps):
            kill = await asyncio.to_thread(_kill_once, data_dir, env, logs / f"kill{index}.log",
                                           rng, mid_job=index % STARTUP_KILL_EVERY != 0)
            kills.append(kill)
            # More work while the dead worker's lease runs out: a new document and, every
            # other time, a new version of an existing one (its running job is superseded).
            for op, content, slot in step:
                if op == "add":
                    await up.add(*plan.contents[content])
                else:
                    await up.replace(slot, *plan.contents[content])
    finally:
        await gen.aclose()
    await asyncio.to_thread(_drain, data_dir, env, logs / "final.log")

    summary = _check_consistent(data_dir, env, expected, tenant_id)
    mid_job = [k for k in kills if k.jobs_held]
    summary.update(
        kills=len(kills), kills_mid_job=len(mid_job),
        jobs_interrupted=sum(k.jobs_held for k in kills),
        stages_interrupted=sorted({s for k in kills for s in k.stages}),
        seed=SEED,
    )
    print("\ncrash consistency:", json.dumps(summary, default=str))  # noqa: T201 - the report
    # Proof that the test tests something: every kill planned mid-job landed mid-job (it was
    # checked with the worker frozen), whatever the machine's speed.
    planned = [k for k in kills if k.mid_job]
    assert all(k.jobs_held for k in planned), f"a planned mid-job kill held no job: {summary}"


async def test_job_failed_after_its_last_worker_died_fails_its_document(
    tmp_path: Path,
) -> None:
    """A worker SIGKILLed during the last allowed attempt: the next claim finishes the job as
    failed ("worker lost"), and the document must say so rather than stay "processing"."""
    settings = ingest_settings(
        tmp_path / "data", ingestion={"workers": 0, "max_attempts": 1, "lease_seconds": 1}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test") as client:
            tenant = await new_tenant(client)
            title, text = _contents(1, SEED)[0]
            accepted = (await upload_text(client, tenant, title, text)).json()
            services = app.state.services
            # What the pipeline does first, then the process dies (no heartbeat, no fail()).
            job = await services.queue.claim("doomed-1234-worker", [INGEST_JOB])
            assert job is not None and job.id == accepted["job_id"]
            assert await services.catalog.start_version(
                tenant.tenant_id, accepted["document_id"], 1
            ) is not None
            # Another process, wired as ragd wires its queue, whose clock says the lease
            # has run out.
            survivor = SqlJobQueue(
                services.db, lease_seconds=1, finalisers={INGEST_JOB: finalise_ingest_job},
                clock=lambda: utcnow() + timedelta(seconds=2),
            )
            assert await survivor.claim("survivor-5678-worker", [INGEST_JOB]) is None
            final = (await client.get(f"/api/v1/jobs/{job.id}", headers=tenant.headers)).json()
            assert final["status"] == "failed", final
            document = (await client.get(f"/api/v1/documents/{accepted['document_id']}",
                                         headers=tenant.headers)).json()
    assert document["status"] == "failed", (
        f"BUG: job {final['status']} ({final['error']}) but its document is stuck in "
        f"{document['status']!r} (SqlJobQueue.claim finishes lease-exhausted jobs without "
        "updating the document)"
    )
