"""The web console: how many bytes it ships, and how soon its documents page is usable.

    .venv/bin/python bench/console.py [--documents 1000] [--runs 5] [--load-clients 4]
                                      [--json out.json]

Measured:

1. **Asset bytes** — every file the server serves under ``/`` and ``/console/`` (read from
   the package as the server reads it), raw and gzip-compressed (what a compressing proxy
   would send; ragd itself sends them raw).
2. **Time to interactive of the documents page** — a real ``ragd serve`` gets one tenant and
   one collection of ``--documents`` small text documents (JSON uploads, every job awaited).
   Each run opens a fresh headless Chromium context (Debian's ``chromium``; an empty HTTP
   cache) holding a fresh session cookie, loads ``/#/documents?c=<collection>`` and takes
   ``performance.now()`` (milliseconds since navigation start) at the first animation frame
   in which the table shows its first page of documents, and the page was signed in (the
   cookie spent for an access token), ``/auth/me``, the collections and the page of
   documents were fetched. Runs are made on the idle server, then while
   ``--load-clients`` threads keep it busy (hybrid searches, and uploads that keep
   ingestion running); medians of ``--runs``.

Nothing here runs in the test suite; timings depend on the machine.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "console"
PASSWORD = "console-bench-Password-42"
PAGE_SIZE = 100
FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--no-sandbox"]
QUERIES = ("how do I install packages", "why is python slow", "kernel modules",
           "what is a release", "configure the network")


def asset_bytes() -> dict[str, Any]:
    from ragd.api.console import load_assets

    files = {name: asset.body for name, asset in load_assets().items()}
    return {
        "files": len(files),
        "raw_bytes": sum(len(body) for body in files.values()),
        "gzip_bytes": sum(len(gzip.compress(body, 9)) for body in files.values()),
        "largest": sorted(((len(b), n) for n, b in files.items()), reverse=True)[:5],
    }


def seed(client: httpx.Client, documents: int) -> tuple[dict[str, str], str]:
    """A tenant with one collection of ``documents`` small text documents, all ready."""
    email = f"bench-{int(time.time())}@example.org"
    registered = client.post("/api/v1/auth/register", json={
        "email": email, "password": PASSWORD, "tenant_name": f"console bench {email}"})
    registered.raise_for_status()
    auth = {"Authorization": f"Bearer {registered.json()['access_token']}"}
    collection = client.post("/api/v1/collections", headers=auth, json={"name": "thousand"})
    collection.raise_for_status()
    collection_id = collection.json()["id"]

    def upload(worker: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=120) as own:
            for n in range(worker, documents, 4):
                own.post("/api/v1/documents", headers=auth, json={
                    "collection_id": collection_id, "title": f"Note {n:04d}",
                    "text": f"Note {n} of the console benchmark. " + QUERIES[n % len(QUERIES)]
                    + f" is discussed in paragraph {n}.",
                }).raise_for_status()

    common.run_clients(upload, 4)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        detail = client.get(f"/api/v1/collections/{collection_id}", headers=auth).json()
        if detail["documents_by_status"]["ready"] >= documents:
            return {"email": email, **auth}, collection_id
        time.sleep(1)
    raise RuntimeError("the documents did not become ready within 30 minutes")


class Load:
    """Clients that keep the server busy: searches, and uploads that keep ingestion going."""

    def __init__(self, base: str, auth: dict[str, str], collection_id: str, clients: int):
        self.base, self.auth, self.collection_id = base, auth, collection_id
        self.clients = clients
        self.stop = threading.Event()
        self.requests = 0
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _work(self, worker: int) -> None:
        headers = {"Authorization": self.auth["Authorization"]}
        n = 0
        with httpx.Client(base_url=self.base, timeout=120) as client:
            while not self.stop.is_set():
                n += 1
                if worker % 2 == 0 or n % 4:
                    client.post("/api/v1/search", headers=headers, json={
                        "query": QUERIES[n % len(QUERIES)], "top_k": 10})
                else:
                    client.post("/api/v1/documents", headers=headers, json={
                        "collection_id": self.collection_id,
                        "title": f"load {worker}-{n}-{time.time_ns()}",
                        "text": f"Load document {worker} {n}. " * 40})
                with self._lock:
                    self.requests += 1

    def __enter__(self) -> Load:
        self.started = time.perf_counter()
        self.threads = [threading.Thread(target=self._work, args=(n,), daemon=True)
                        for n in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
        self.seconds = time.perf_counter() - self.started


def time_to_interactive(browser: Any, base: str, email: str, collection_id: str) -> dict[str, Any]:
    """One cold load of the documents page with a fresh session; milliseconds."""
    session = httpx.post(f"{base}/api/v1/auth/session",
                         json={"email": email, "password": PASSWORD}, timeout=120)
    session.raise_for_status()
    context = browser.new_context(base_url=base)
    context.add_cookies([
        {"name": name, "value": value, "url": base + ("/api/v1/auth/session"
                                                     if name == "ragd_refresh" else "/")}
        for name, value in session.cookies.items()
    ])
    context.set_default_timeout(300_000)
    page = context.new_page()
    page.goto(f"/#/documents?c={collection_id}")
    shown = page.wait_for_function(
        f"""() => {{
            const table = document.querySelector('#documents');
            return table && table.dataset.count === '{PAGE_SIZE}' ? performance.now() : null;
        }}""",
        polling="raf",
    ).json_value()
    resources = page.evaluate("""() => performance.getEntriesByType('resource')
        .map(e => ({name: e.name, bytes: e.transferSize}))""")
    context.close()
    return {"ms": float(shown), "requests": len(resources),
            "transfer_bytes": sum(int(r["bytes"]) for r in resources)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load-clients", type=int, default=4)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)

    assets = asset_bytes()
    with tempfile.TemporaryDirectory(prefix="ragd-console-bench-") as tmp:
        root = Path(tmp)
        with common.running_server(root / "data", root / "serve.log", {
            "RAGD_AUTH__LOGIN_ATTEMPTS_PER_ACCOUNT": "100000",
            "RAGD_AUTH__LOGIN_ATTEMPTS_PER_IP": "100000",
        }) as server, httpx.Client(base_url=server.base_url, timeout=120) as client:
            seeded = time.perf_counter()
            auth, collection_id = seed(client, args.documents)
            seed_seconds = time.perf_counter() - seeded
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium,
                                                     args=FLAGS)
                load_page = lambda: time_to_interactive(  # noqa: E731
                    browser, server.base_url, auth["email"], collection_id)
                load_page()  # warm the server's code paths once
                idle = [load_page() for _ in range(args.runs)]
                with Load(server.base_url, auth, collection_id, args.load_clients) as load:
                    loaded = [load_page() for _ in range(args.runs)]
                browser.close()

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return round(statistics.median(run[key] for run in runs), 1)

    result = {
        "bench": NAME,
        "environment": common.environment(),
        "assets": assets,
        "documents": args.documents,
        "seed_seconds": round(seed_seconds, 1),
        "idle": {"runs_ms": [round(r["ms"], 1) for r in idle], "median_ms": median(idle, "ms"),
                 "requests": idle[0]["requests"],
                 "transfer_bytes": median(idle, "transfer_bytes")},
        "loaded": {"runs_ms": [round(r["ms"], 1) for r in loaded],
                   "median_ms": median(loaded, "ms"), "load_clients": args.load_clients,
                   "load_requests_per_s": round(load.requests / load.seconds, 1)},
    }
    rows = [
        common.row("console assets", assets["raw_bytes"], "bytes",
                   note=f"{assets['files']} files; gzip {assets['gzip_bytes']}"),
        common.row("documents page TTI, idle", result["idle"]["median_ms"], "ms",
                   note=f"median of {args.runs}; {args.documents} documents"),
        common.row("documents page TTI, loaded", result["loaded"]["median_ms"], "ms",
                   note=f"{args.load_clients} clients, "
                        f"{result['loaded']['load_requests_per_s']} req/s alongside"),
    ]
    common.write_json(args.json, result)
    common.emit(result, common.summary_table(rows, bench=NAME), json_only=args.json_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
