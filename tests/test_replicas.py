"""Scale-out on one PostgreSQL: two `ragd serve` replicas and one `ragd worker`, as real
processes on loopback, each with a data dir of its own (as on three hosts).

The replicas run no ingestion workers (``RAGD_INGESTION__WORKERS=0``): every job is the
worker's. Nothing passes between the processes except through the database, so these tests
hold only if revocation, index changes and job state travel through PostgreSQL:

* revocation: a logout, or an API key deleted, through replica A is refused by replica B. The
  replicas' periodic revocation sync is set to its longest (300 s), so B cannot pass by having
  happened to resync: the change must reach it as a notification (LISTEN/NOTIFY). The
  promise is "B's next request *after the notification arrived* is refused": the
  notification travels from the database to B on B's listening connection while the test's
  next request travels to B over HTTP, so a request sent the instant A answered can still
  race it (measured with bench/revocation_delay.py: B's very first request was refused in
  199 of 200 logouts, p99 delay 83 ms, on a loaded 2-core box). The tests therefore wait for
  B's refusal (the hang guard, 60 s, is far below the 300 s sync), then check it holds;
* search: a document uploaded through A whose job ended is found through B at once;
* leases: ``kill -9`` of the worker in the middle of a job; a new worker reclaims the job once
  its lease (``RAGD_INGESTION__LEASE_SECONDS``, short here) has expired, and the document ends
  ready exactly once (one active version, its chunks once, the job's second attempt);
* contention: uploads through both replicas at once all end ready, with no 5xx;
* local disk: no process keeps tenant data in its data dir (the database holds it all).

One set of processes serves the module (starting three servers costs more than the tests); a
test that kills the worker starts the next one itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import STRONG_PASSWORD, TEST_SECRET
from tests.postgres import PostgresServer
from tests.processes import free_port, stop, wait_ready
from tests.shared_data import EVAL, require
from tests.waiting import HANG_TIMEOUT, eventually_sync

pytestmark = pytest.mark.slow

#: The lease of a claimed job: short, so a job whose worker was killed is reclaimed soon after.
#: It is no timing assumption: the worker heartbeats every third of it, and with one worker
#: slot (``--concurrency 1``) nobody else could take a job over from a live but slow worker.
LEASE_SECONDS = 5


@dataclass
class Node:
    """One ragd process of the cluster: a replica (``base`` set) or a worker."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    base: str = ""

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@dataclass
class Cluster:
    """Two replicas and one worker on one database, each process with its own data dir."""

    root: Path
    env: dict[str, str]
    dsn: str  # the database's plain URL, for checks in SQL
    nodes: list[Node] = field(default_factory=list)
    workers_started: int = 0

    @property
    def a(self) -> Node:
        return self.nodes[0]

    @property
    def b(self) -> Node:
        return self.nodes[1]

    @property
    def worker(self) -> Node:
        return self.nodes[-1]

    def _launch(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        data_dir = self.root / name / "data"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = self.root / name / "ragd.log"
        with log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "ragd", *args, "--data-dir", str(data_dir)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )

    def start_replica(self, name: str) -> Node:
        port = free_port()
        env = {**self.env, "RAGD_INGESTION__WORKERS": "0",
               # The safety net only: a revocation must reach the replicas as a notification.
               "RAGD_AUTH__REVOCATION_SYNC_SECONDS": "300"}
        proc = self._launch(name, ["serve", "--port", str(port)], env)
        node = Node(name, proc, self.root / name / "ragd.log", f"http://127.0.0.1:{port}")
        self.nodes.append(node)
        return node

    def start_worker(self) -> Node:
        self.workers_started += 1
        name = f"worker-{self.workers_started}"
        proc = self._launch(name, ["worker", "--concurrency", "1"], dict(self.env))
        node = Node(name, proc, self.root / name / "ragd.log")
        self.nodes.append(node)
        return node

    def wait_worker(self, node: Node) -> None:
        def started() -> bool:
            assert node.proc.poll() is None, f"{node.name} exited early:\n{node.log_text()}"
            return "ragd worker: 1 worker(s)" in node.log_text()

        eventually_sync(started, what=f"{node.name} runs")

    def kill_worker(self) -> None:
        """``kill -9`` of the worker: no lease released, no job ended."""
        worker = self.worker
        os.kill(worker.proc.pid, signal.SIGKILL)
        assert worker.proc.wait(HANG_TIMEOUT) == -signal.SIGKILL
        self.nodes.remove(worker)

    def query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async def fetch() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return list(await conn.fetch(sql, *args))
            finally:
                await conn.close()

        return asyncio.run(fetch())


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, postgres: PostgresServer
) -> Iterator[Cluster]:
    url = asyncio.run(postgres.fresh_database("replicas"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(
        RAGD_JWT_SECRET=TEST_SECRET, RAGD_MODELS__CACHE_DIR=str(model_cache),
        RAGD_DATABASE__URL=url, RAGD_BOOTSTRAP_ADMIN="false",
        RAGD_INGESTION__LEASE_SECONDS=str(LEASE_SECONDS),
        RAGD_INGESTION__POLL_INTERVAL_SECONDS="0.2", PYTHONUNBUFFERED="1",
    )
    cluster = Cluster(tmp_path_factory.mktemp("replicas"), env,
                      postgres.dsn(url.rsplit("/", 1)[1]))
    try:
        # All three start at once (their start-ups overlap on the database, as in a rollout).
        a, b = cluster.start_replica("replica-a"), cluster.start_replica("replica-b")
        worker = cluster.start_worker()
        wait_ready(a.base, a.proc, "replica A")
        wait_ready(b.base, b.proc, "replica B")
        cluster.wait_worker(worker)
        yield cluster
    finally:
        for node in cluster.nodes:
            if node.proc.poll() is None:
                stop(node.proc)
    for node in cluster.nodes:  # after a clean run: nothing went wrong quietly
        assert "Traceback" not in node.log_text(), f"{node.name}:\n{node.log_text()}"


# -- helpers ------------------------------------------------------------------------------------


def _client(node: Node) -> httpx.Client:
    return httpx.Client(base_url=node.base, timeout=HANG_TIMEOUT)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


def _tenant(cluster: Cluster) -> dict[str, Any]:
    """A new tenant registered through A, with a collection: its admin's email and headers."""
    email = f"admin-{os.urandom(4).hex()}@acme.io"
    with _client(cluster.a) as client:
        registered = _ok(client.post("/api/v1/auth/register", json={
            "email": email, "password": STRONG_PASSWORD, "tenant_name": f"t-{email[6:14]}"}), 201)
        headers = _bearer(registered["access_token"])
        collection = _ok(client.post("/api/v1/collections", json={"name": "docs"},
                                     headers=headers), 201)
    return {"email": email, "headers": headers, "collection_id": collection["id"]}


def _login(client: httpx.Client, email: str) -> str:
    body = _ok(client.post("/api/v1/auth/login",
                           json={"email": email, "password": STRONG_PASSWORD}))
    return str(body["access_token"])


def _refused_by(client: httpx.Client, headers: dict[str, str], code: str | None = None) -> None:
    """Until ``client``'s replica refuses ``headers`` (it accepts them until the notification
    arrives, nothing else), then once more: a revocation does not come undone."""
    def refused() -> httpx.Response | None:
        response = client.get("/api/v1/auth/me", headers=headers)
        assert response.status_code in (200, 401), response.text
        return response if response.status_code == 401 else None

    for response in (eventually_sync(refused, what="B refuses the revoked credential"),
                     client.get("/api/v1/auth/me", headers=headers)):
        assert response.status_code == 401, response.text
        if code is not None:
            assert response.json()["error"]["code"] == code, response.text


def _upload(client: httpx.Client, tenant: dict[str, Any], title: str, text: str) -> dict[str, Any]:
    """Upload a text document; the 202 answer (document and job ids)."""
    return dict(_ok(client.post("/api/v1/documents", headers=tenant["headers"], json={
        "collection_id": tenant["collection_id"], "title": title, "text": text}), 202))


def _job(client: httpx.Client, tenant: dict[str, Any], job_id: str) -> dict[str, Any]:
    return dict(_ok(client.get(f"/api/v1/jobs/{job_id}", headers=tenant["headers"])))


def _await_jobs(node: Node, tenant: dict[str, Any], job_ids: list[str]) -> None:
    """Until every job succeeded (asked through ``node``); a failed one fails the test."""
    with _client(node) as client:
        def done() -> bool:
            for job_id in job_ids:
                job = _job(client, tenant, job_id)
                assert job["status"] in ("queued", "running", "succeeded"), job
                if job["status"] != "succeeded":
                    return False
            return True

        eventually_sync(done, what=f"{len(job_ids)} ingestion job(s) succeeded")


def _found(client: httpx.Client, tenant: dict[str, Any], query: str, mode: str,
           top_k: int = 1) -> list[str]:
    body = _ok(client.post("/api/v1/search", headers=tenant["headers"],
                           json={"query": query, "mode": mode, "top_k": top_k}))
    return [hit["document_id"] for hit in body["results"]]


def _passages(count: int) -> list[str]:
    """``count`` real passages of the python-faq corpus (title + text)."""
    rows = require(EVAL / "python-faq" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    passages = []
    for line in rows[:count]:
        row = json.loads(line)
        passages.append(f"{row.get('title') or ''}\n\n{row['text']}".strip())
    assert len(passages) == count, f"python-faq has only {len(passages)} passages"
    return passages


# -- revocation -----------------------------------------------------------------------------------


def test_a_logout_through_a_is_refused_by_b(cluster: Cluster) -> None:
    tenant = _tenant(cluster)
    with _client(cluster.a) as a, _client(cluster.b) as b:
        token = _login(a, tenant["email"])
        _ok(b.get("/api/v1/auth/me", headers=_bearer(token)))  # B knows the session
        assert a.post("/api/v1/auth/logout", headers=_bearer(token)).status_code == 204
        _refused_by(b, _bearer(token), "token_revoked")
        # ... and the other session of the same user still works on B.
        _ok(b.get("/api/v1/auth/me", headers=tenant["headers"]))


def test_an_api_key_revoked_through_a_is_refused_through_b(cluster: Cluster) -> None:
    tenant = _tenant(cluster)
    with _client(cluster.a) as a, _client(cluster.b) as b:
        created = _ok(a.post("/api/v1/auth/api-keys", json={"name": "ci"},
                             headers=tenant["headers"]), 201)
        key = {"X-API-Key": created["key"]}
        _ok(b.get("/api/v1/auth/me", headers=key))  # B has the key cached as valid
        deleted = a.delete(f"/api/v1/auth/api-keys/{created['id']}", headers=tenant["headers"])
        assert deleted.status_code == 204, deleted.text
        _refused_by(b, key)


# -- search ---------------------------------------------------------------------------------------


def test_a_document_uploaded_through_a_is_found_through_b(cluster: Cluster) -> None:
    tenant = _tenant(cluster)
    text = "Basalt flows from the volcano cool into hexagonal columns beside the sea."
    with _client(cluster.b) as b:  # B has the tenant's (empty) index open: it must not go stale
        assert _found(b, tenant, "basalt hexagonal columns", "lexical") == []
    with _client(cluster.a) as a:
        accepted = _upload(a, tenant, "volcano", text)
    _await_jobs(cluster.b, tenant, [accepted["job_id"]])
    with _client(cluster.b) as b:  # at once: no wait for any sync
        for query, mode in (("basalt hexagonal columns", "lexical"),
                            ("lava turning into stone pillars by the ocean", "dense"),
                            ("volcano basalt", "hybrid")):
            assert _found(b, tenant, query, mode) == [accepted["document_id"]], (mode, query)


# -- leases ---------------------------------------------------------------------------------------


def test_a_job_of_a_killed_worker_is_reclaimed_and_ends_ready_exactly_once(
    cluster: Cluster,
) -> None:
    tenant = _tenant(cluster)
    # ~60 chunks of real text: its keyword stage alone takes seconds, so the job is observed
    # mid-way by polling (the kill waits for that observation, not for a guessed moment).
    marker = f"wombat{os.urandom(4).hex()}"
    text = "\n\n".join([*_passages(60), f"({marker})"])
    with _client(cluster.a) as a:
        accepted = _upload(a, tenant, "python faq, all of it", text)
    job_id, document_id = accepted["job_id"], accepted["document_id"]

    with _client(cluster.b) as b:
        def mid_job() -> dict[str, Any] | None:
            job = _job(b, tenant, job_id)
            assert job["status"] in ("queued", "running"), job  # it must not end first
            progress = job["progress"]
            if (job["status"] == "running" and job["stage"] in ("embed", "keywords")
                    and 0 < progress["done"] < progress["total"]):
                return job
            return None

        seen = eventually_sync(mid_job, what="the job is running with progress")
        cluster.kill_worker()
        after_kill = _job(b, tenant, job_id)
        assert after_kill["status"] == "running" and after_kill["attempts"] == 1, after_kill

        cluster.wait_worker(cluster.start_worker())
        _await_jobs(cluster.b, tenant, [job_id])
        job = _job(b, tenant, job_id)
        assert job["attempts"] == 2, job  # the killed attempt, then the reclaimed one
        total = job["progress"]["total"]
        assert total == seen["progress"]["total"], (job, seen)

        document = _ok(b.get(f"/api/v1/documents/{document_id}", headers=tenant["headers"]))
        assert document["status"] == "ready", document
        assert document["version"] == document["active_version"] == 1, document
        assert document["chunk_count"] == total, document
        chunks: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = _ok(b.get(f"/api/v1/documents/{document_id}/chunks", params=params,
                             headers=tenant["headers"]))
            chunks += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(chunk["ordinal"] for chunk in chunks) == list(range(total))
        assert {chunk["version"] for chunk in chunks} == {1}
        assert len({chunk["id"] for chunk in chunks}) == total

    # In the database itself: one version's rows, no row left by the killed attempt.
    (rows,) = cluster.query(
        "SELECT count(*) AS n, count(DISTINCT (version, ordinal)) AS distinct_n, "
        "count(DISTINCT version) AS versions FROM chunks WHERE document_id = $1", document_id)
    assert (rows["n"], rows["distinct_n"], rows["versions"]) == (total, total, 1), dict(rows)
    with _client(cluster.a) as a:
        assert _found(a, tenant, marker, "lexical") == [document_id]


# -- contention -----------------------------------------------------------------------------------


def test_uploads_through_both_replicas_at_once_all_end_ready(cluster: Cluster) -> None:
    tenant = _tenant(cluster)
    passages = _passages(24)
    nodes = (cluster.a, cluster.b)
    markers = [f"quokka{index}x{os.urandom(3).hex()}" for index in range(len(passages))]

    def upload(index: int) -> tuple[int, dict[str, Any]]:
        with _client(nodes[index % 2]) as client:
            response = client.post("/api/v1/documents", headers=tenant["headers"], json={
                "collection_id": tenant["collection_id"], "title": f"passage {index}",
                "text": f"{passages[index]}\n\n({markers[index]})"})
        return response.status_code, response.json()

    with _client(cluster.a) as a, _client(cluster.b) as b:  # both hold the tenant's index
        assert _found(a, tenant, markers[0], "lexical") == _found(b, tenant, markers[1],
                                                                  "lexical") == []
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(upload, range(len(passages))))
    assert [status for status, _ in answers] == [202] * len(passages), answers
    ids = [body["document_id"] for _, body in answers]
    _await_jobs(cluster.a, tenant, [body["job_id"] for _, body in answers])
    with _client(cluster.a) as a, _client(cluster.b) as b:
        documents = _ok(b.get("/api/v1/documents", headers=tenant["headers"],
                              params={"collection_id": tenant["collection_id"], "limit": 200}))
        assert sorted(d["status"] for d in documents["items"]) == ["ready"] * len(passages)
        assert {d["id"] for d in documents["items"]} == set(ids)
        for index, marker in enumerate(markers):  # each found through the other replica
            assert _found(b if index % 2 == 0 else a, tenant, marker, "lexical") == [ids[index]]


# -- local disk ------------------------------------------------------------------------------------


def test_no_process_keeps_tenant_data_on_its_own_disk(cluster: Cluster) -> None:
    """On PostgreSQL the database holds everything of every tenant (rows, original bytes, the
    searchable columns): after an upload, its job and a search, every process's data dir
    (the killed worker's too) is still empty."""
    tenant = _tenant(cluster)
    with _client(cluster.a) as a:
        accepted = _upload(a, tenant, "glacier",
                           "Glaciers carve fjords over millennia and feed the rivers below.")
    _await_jobs(cluster.b, tenant, [accepted["job_id"]])
    with _client(cluster.b) as b:
        assert _found(b, tenant, "glaciers fjords", "hybrid") == [accepted["document_id"]]
    data_dirs = sorted(cluster.root.glob("*/data"))
    assert len(data_dirs) >= 3, data_dirs
    assert {str(d): sorted(map(str, d.rglob("*"))) for d in data_dirs} == {
        str(d): [] for d in data_dirs}
