"""`ragd serve --workers 2`: two real server processes on one port and one data dir.

Which process serves a request is the kernel's choice (it hands each new connection to one
of them), so the tests pin connections: a connection is served, request after request, by
the process that accepted it, and ``/performance/health`` tells a platform admin that
process's pid. A request is checked on "the other process" by sending it over a connection
pinned to it; if a connection was closed and reopened under the client (keep-alive ends
after 5 idle seconds), the attempt proves nothing about processes and is made again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.settings import IngestionSettings
from tests.conftest import STRONG_PASSWORD, TEST_SECRET
from tests.processes import free_port, stop, wait_ready
from tests.waiting import HANG_TIMEOUT, eventually_sync

pytestmark = pytest.mark.slow


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    env: dict[str, str]
    ops_key: str = ""  # an API key of the platform admin (it sees /performance/health pids)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def pid_of(self, client: httpx.Client) -> tuple[int, int]:
        """(pid of the process serving the client's connection, the connection's port)."""
        response = client.get("/performance/health", headers={"X-API-Key": self.ops_key})
        assert response.status_code == 200, response.text
        return int(response.json()["pid"]), _local_port(response)


def _local_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


@contextmanager
def serving(tmp_path: Path, model_cache: Path, workers: int = 2) -> Iterator[Server]:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(RAGD_JWT_SECRET=TEST_SECRET, RAGD_MODELS__CACHE_DIR=str(model_cache),
               RAGD_INGESTION__POLL_INTERVAL_SECONDS="0.2", PYTHONUNBUFFERED="1")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragd", "serve", "--workers", str(workers),
             "--port", str(port), "--data-dir", str(data_dir)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log, data_dir, env)
    try:
        wait_ready(server.base, proc, "ragd serve --workers")
        eventually_sync(lambda: "processes (pids" in server.log_text(),
                        what="every server process is ready")
        server.ops_key = _ops_key(server)
        yield server
    finally:
        if proc.poll() is None:
            stop(proc)


def _ops_key(server: Server) -> str:
    creds = dict(line.split(": ", 1)
                 for line in (server.data_dir / "initial-admin.txt").read_text().splitlines())
    with httpx.Client(base_url=server.base, timeout=HANG_TIMEOUT) as client:
        token = _login(client, creds["email"], creds["password"])["access_token"]
        key = client.post("/api/v1/auth/api-keys", json={"name": "ops"}, headers=_bearer(token))
        assert key.status_code == 201, key.text
        return str(key.json()["key"])


def _login(client: httpx.Client, email: str, password: str = STRONG_PASSWORD) -> Any:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Reconnected(Exception):
    """The client's connection was replaced: it may now be served by another process."""


@dataclass
class Pinned:
    """A client whose one connection is served by the process ``pid``."""

    client: httpx.Client
    pid: int
    port: int

    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        if _local_port(response) != self.port:
            raise Reconnected
        return response


@contextmanager
def pinned_pair(server: Server) -> Iterator[tuple[Pinned, Pinned]]:
    """Two connections served by two different processes (fresh connections are opened until
    the kernel has handed them to both)."""
    with ExitStack() as stack:
        found: dict[int, Pinned] = {}

        def both() -> bool:
            client = stack.enter_context(httpx.Client(
                base_url=server.base, timeout=HANG_TIMEOUT,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)))
            pid, port = server.pid_of(client)
            found.setdefault(pid, Pinned(client, pid, port))
            return len(found) == 2

        eventually_sync(both, what="connections to both server processes")
        first, second = found.values()
        yield first, second


def on_two_processes(server: Server, scenario: Callable[[Pinned, Pinned], None]) -> None:
    """Run ``scenario(here, there)`` with connections pinned to two different processes,
    again if a connection was replaced midway (the attempt proved nothing)."""

    def attempt() -> bool:
        with pinned_pair(server) as (here, there):
            try:
                scenario(here, there)
            except Reconnected:
                return False
        return True

    eventually_sync(attempt, what=f"{scenario.__name__} on two pinned connections")


def _pids_seen(server: Server, count: int) -> set[int]:
    """Pids of the processes serving fresh connections, until ``count`` distinct ones."""
    seen: set[int] = set()

    def enough() -> bool:
        assert server.proc.poll() is None, server.log_text()
        with httpx.Client(base_url=server.base, timeout=HANG_TIMEOUT) as client:
            seen.add(server.pid_of(client)[0])
        return len(seen) >= count

    eventually_sync(enough, what=f"{count} server processes answer")
    return seen


# -- one server for the sharing tests ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("workers"), model_cache) as running:
        yield running


@pytest.fixture
def member(server: Server) -> dict[str, Any]:
    return _new_tenant(server)


def _new_tenant(server: Server) -> dict[str, Any]:
    """A new tenant (its admin's tokens and a collection), registered through any process."""
    email = f"admin-{os.urandom(4).hex()}@acme.io"
    with httpx.Client(base_url=server.base, timeout=HANG_TIMEOUT) as client:
        registered = client.post("/api/v1/auth/register", json={
            "email": email, "password": STRONG_PASSWORD, "tenant_name": f"t-{email[6:14]}"})
        assert registered.status_code == 201, registered.text
        headers = _bearer(registered.json()["access_token"])
        collection = client.post("/api/v1/collections", json={"name": "docs"}, headers=headers)
        assert collection.status_code == 201, collection.text
    return {"email": email, "headers": headers, "collection_id": collection.json()["id"]}


def _upload(through: Pinned, tenant: dict[str, Any], title: str, text: str) -> str:
    """Upload a text document; returns its id (its job id goes to ``tenant["jobs"]``)."""
    response = through.send("POST", "/api/v1/documents", headers=tenant["headers"], json={
        "collection_id": tenant["collection_id"], "title": title, "text": text})
    assert response.status_code == 202, response.text
    tenant.setdefault("jobs", []).append(response.json()["job_id"])
    return str(response.json()["document_id"])


def _wait_indexed(server: Server, tenant: dict[str, Any]) -> None:
    """Until every ingestion job of the tenant succeeded. A job ends after its worker applied
    the index changes and signalled them to the other processes (the document's status turns
    "ready" earlier, in the SQL commit, before the partitions are written)."""
    with httpx.Client(base_url=server.base, timeout=HANG_TIMEOUT) as client:
        def all_done() -> bool:
            for job_id in tenant["jobs"]:
                status = client.get(f"/api/v1/jobs/{job_id}",
                                    headers=tenant["headers"]).json()["status"]
                assert status in ("queued", "running", "succeeded"), status
                if status != "succeeded":
                    return False
            return True

        eventually_sync(all_done, what="the ingestion jobs succeeded")


def _finds(through: Pinned, tenant: dict[str, Any], query: str, mode: str = "hybrid",
           top_k: int = 1) -> list[str]:
    found = through.send("POST", "/api/v1/search", headers=tenant["headers"],
                         json={"query": query, "mode": mode, "top_k": top_k})
    assert found.status_code == 200, found.text
    return [hit["document_id"] for hit in found.json()["results"]]


def test_requests_land_on_both_processes_started_once(server: Server) -> None:
    pids = _pids_seen(server, 2)
    assert server.proc.pid not in pids  # the parent only supervises
    text = server.log_text()
    assert text.count("database migrated") == 1  # under the start-up lock, once
    assert text.count("created the first platform admin") == 1
    assert text.count("Started server process") == 2
    # The default RAGD_INGESTION__WORKERS loops, in one process only.
    assert text.count("worker started") == IngestionSettings().workers


def _refused_next_on_the_other(
    here: Pinned, there: Pinned, token: str, revoke: Callable[[], httpx.Response]
) -> None:
    """``token`` works on ``there``; once ``revoke()`` went through ``here``, the very next
    request on ``there`` refuses it."""
    assert there.send("GET", "/api/v1/auth/me", headers=_bearer(token)).status_code == 200
    revoked = revoke()
    assert revoked.status_code < 300 or revoked.json()["error"]["code"] == "refresh_token_reused"
    refused = there.send("GET", "/api/v1/auth/me", headers=_bearer(token))
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "token_revoked"


def test_logout_through_one_process_is_refused_at_once_by_the_other(
    server: Server, member: dict[str, Any]
) -> None:
    def logout(here: Pinned, there: Pinned) -> None:
        token = _login(here.client, member["email"])["access_token"]
        _refused_next_on_the_other(here, there, token, lambda: here.send(
            "POST", "/api/v1/auth/logout", headers=_bearer(token)))

    on_two_processes(server, logout)


def test_a_reused_refresh_token_revokes_the_session_in_both_processes(
    server: Server, member: dict[str, Any]
) -> None:
    def reuse(here: Pinned, there: Pinned) -> None:
        spent = _login(here.client, member["email"])["refresh_token"]
        rotated = there.send("POST", "/api/v1/auth/refresh", json={"refresh_token": spent})
        assert rotated.status_code == 200, rotated.text
        _refused_next_on_the_other(here, there, rotated.json()["access_token"], lambda: here.send(
            "POST", "/api/v1/auth/refresh", json={"refresh_token": spent}))

    on_two_processes(server, reuse)


def test_a_user_deactivated_through_one_process_is_refused_at_once_by_the_other(
    server: Server, member: dict[str, Any]
) -> None:
    def deactivate(here: Pinned, there: Pinned) -> None:
        email = f"member-{os.urandom(4).hex()}@acme.io"
        created = here.send("POST", "/api/v1/tenant/users", headers=member["headers"],
                            json={"email": email, "password": STRONG_PASSWORD})
        assert created.status_code == 201, created.text
        _refused_next_on_the_other(
            here, there, _login(there.client, email)["access_token"], lambda: here.send(
                "PATCH", f"/api/v1/tenant/users/{created.json()['id']}",
                headers=member["headers"], json={"is_active": False}))

    on_two_processes(server, deactivate)


TEXTS = {
    "harbour": "Cranes unload containers in the harbour at dawn while pilots guide the ships.",
    "glacier": "Glaciers carve fjords over millennia and their meltwater feeds the rivers.",
    "volcano": "Basalt flows from the volcano cool into hexagonal columns beside the sea.",
    "desert": "Dunes in the desert migrate with the wind and bury the old caravan roads.",
}


def test_documents_uploaded_through_either_process_are_found_through_both(
    server: Server, member: dict[str, Any]
) -> None:
    """Uploads alternate between the processes (the ingestion workers run in one of them,
    the partitions are synced by both); every document is then found through each process,
    by words (BM25) and by meaning (vectors)."""
    ids: dict[str, str] = {}

    def upload(here: Pinned, there: Pinned) -> None:
        for index, (title, text) in enumerate(TEXTS.items()):
            if title not in ids:
                ids[title] = _upload(here if index % 2 == 0 else there, member, title, text)

    on_two_processes(server, upload)
    _wait_indexed(server, member)

    def search(here: Pinned, there: Pinned) -> None:
        for pinned in (here, there):
            for title, query, mode in (("volcano", "basalt columns", "lexical"),
                                       ("desert", "sand dunes moving in the wind", "dense"),
                                       ("harbour", "ships in port", "hybrid")):
                hits = _finds(pinned, member, query, mode)
                assert hits == [ids[title]], (pinned.pid, mode, query, hits)
            everything = _finds(pinned, member, " ".join(TEXTS.values()), "lexical", 50)
            assert set(everything) == set(ids.values())

    on_two_processes(server, search)


# -- supervision: a server of its own each -----------------------------------------------------


def test_a_killed_process_is_replaced_and_sigterm_stops_all_with_0(
    tmp_path: Path, model_cache: Path
) -> None:
    """A SIGKILLed server process is replaced; SIGTERM to the parent stops every process
    cleanly, and the indexes both processes wrote are in step with the database (the one
    that synced last does not have its save overwritten by the one behind)."""
    with serving(tmp_path, model_cache) as server:
        tenant = _new_tenant(server)
        ids: list[str] = []

        def both_find_the_first(here: Pinned, there: Pinned) -> None:
            if not ids:
                ids.append(_upload(here, tenant, "volcano", TEXTS["volcano"]))
                _wait_indexed(server, tenant)
            assert _finds(here, tenant, "basalt columns", "lexical") == ids
            assert _finds(there, tenant, "basalt columns", "lexical") == ids

        on_two_processes(server, both_find_the_first)
        pids = _pids_seen(server, 2)
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            assert server.proc.poll() is None, server.log_text()
            return "a server process died; replacing it" in server.log_text()

        eventually_sync(replaced, what="the parent replaces the killed process")
        now = _pids_seen(server, 2)
        assert victim not in now and len(now) == 2
        assert (pids - {victim}) <= now  # the other process was left alone

        def one_finds_the_second(here: Pinned, there: Pinned) -> None:
            if len(ids) == 1:
                ids.append(_upload(there, tenant, "desert", TEXTS["desert"]))
                _wait_indexed(server, tenant)
            assert _finds(here, tenant, "dunes desert caravan", "lexical") == ids[1:]

        on_two_processes(server, one_finds_the_second)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(HANG_TIMEOUT) == 0, server.log_text()
    text = server.log_text()
    for pid in now:
        assert f"Finished server process [{pid}]" in text
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in text
    verified = subprocess.run(
        [sys.executable, "-m", "ragd", "index", "verify", "--data-dir", str(server.data_dir)],
        env=server.env, capture_output=True, text=True, check=False, timeout=HANG_TIMEOUT,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_process_that_cannot_start_stops_the_others_with_3(tmp_path: Path) -> None:
    """A start-up failure (here: the database file is not a database) would repeat on every
    restart: it ends `ragd serve --workers 2` with status 3, as it ends a single server."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "ragd.db").write_bytes(b"not a database, " * 512)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(RAGD_JWT_SECRET=TEST_SECRET)
    result = subprocess.run(
        [sys.executable, "-m", "ragd", "serve", "--workers", "2", "--port", str(free_port()),
         "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
        timeout=120,  # a safety net: the process is expected to exit by itself
    )
    output = result.stdout.decode()
    assert result.returncode == 3, output
    assert "a server process failed to start; stopping the others" in output
    assert output.count("started a server process") == 2  # nothing restarted
    assert "serving" not in output
