"""A real ``ragd serve`` process for the whole-API tests (schema fuzzing, hostile values).

One process per test session: it serves the embedded default on a free port with its own
data dir, shares the session's prepared model, and is seeded with a tenant admin, a
collection and a ready document (so the model is loaded before anything is timed out).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import STRONG_PASSWORD, TEST_SECRET
from tests.processes import free_port, stop, wait_ready
from tests.waiting import HANG_TIMEOUT, eventually_sync

REPO = Path(__file__).resolve().parents[2]
EMAIL = "fuzz-admin@acme.io"
OPS_EMAIL = "ops@acme.io"


@dataclass(frozen=True)
class LiveServer:
    base: str
    email: str
    password: str
    log: Path
    collection_id: str
    document_id: str
    #: An API key of a platform administrator (who is also admin of its own tenant).
    ops_key: str

    def token(self) -> str:
        response = httpx.post(f"{self.base}/api/v1/auth/login",
                              json={"email": self.email, "password": self.password},
                              timeout=HANG_TIMEOUT)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def live_server(workdir: Path, model_cache: Path, **env: str) -> Iterator[LiveServer]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / "serve.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    environment.update({
        "RAGD_JWT_SECRET": TEST_SECRET,
        "RAGD_BOOTSTRAP_ADMIN": "false",
        "RAGD_MODELS__CACHE_DIR": str(model_cache),
        # Schema fuzzing logs in again whenever a case revoked its session.
        "RAGD_AUTH__LOGIN_ATTEMPTS_PER_ACCOUNT": "1000000",
        "RAGD_AUTH__LOGIN_ATTEMPTS_PER_IP": "1000000",
        **env,
    })
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragd", "serve", "--port", str(port),
             "--data-dir", str(workdir / "data")],
            env=environment, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )

    try:
        wait_ready(base, proc)
        created = subprocess.run(
            [sys.executable, "-m", "ragd", "admin", "create-superuser", "--email", OPS_EMAIL,
             "--password-stdin", "--tenant", "ops", "--data-dir", str(workdir / "data")],
            input=STRONG_PASSWORD, text=True, env=environment, cwd=REPO, capture_output=True,
            check=False,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        yield _seed(base, log)
    finally:
        stop(proc)


def _seed(base: str, log: Path) -> LiveServer:
    client = httpx.Client(base_url=base, timeout=HANG_TIMEOUT)
    registered = client.post("/api/v1/auth/register", json={
        "email": EMAIL, "password": STRONG_PASSWORD, "tenant_name": "fuzz"})
    assert registered.status_code == 201, registered.text
    auth = {"Authorization": f"Bearer {registered.json()['access_token']}"}
    collection = client.post("/api/v1/collections", headers=auth, json={"name": "seed"})
    assert collection.status_code == 201, collection.text
    collection_id = collection.json()["id"]
    uploaded = client.post("/api/v1/documents", headers=auth, json={
        "collection_id": collection_id, "title": "Seed",
        "text": "ragd answers questions from your documents with citations."})
    assert uploaded.status_code == 202, uploaded.text
    document_id = uploaded.json()["document_id"]

    def document_ready() -> Any:
        status = client.get(f"/api/v1/documents/{document_id}", headers=auth).json()["status"]
        assert status not in ("failed", "cancelled"), status
        return status == "ready"

    # The first document may prepare the embedding model: a hang guard, not a speed bar.
    eventually_sync(document_ready, timeout=10 * HANG_TIMEOUT,
                    what="the seed document is ready")
    ops = client.post("/api/v1/auth/login", json={"email": OPS_EMAIL,
                                                  "password": STRONG_PASSWORD})
    assert ops.status_code == 200, ops.text
    key = client.post("/api/v1/auth/api-keys", json={"name": "ops"},
                      headers={"Authorization": f"Bearer {ops.json()['access_token']}"})
    assert key.status_code == 201, key.text
    client.close()
    return LiveServer(base=base, email=EMAIL, password=STRONG_PASSWORD, log=log,
                      collection_id=collection_id, document_id=document_id,
                      ops_key=key.json()["key"])
