"""Fair ingestion between tenants: how long one tenant's single upload takes to be ready
while another tenant's large backlog is queued, against the upload's own processing time.

    .venv/bin/python bench/fairness.py [--backlog 2000] [--probes 3] [--clients 4]
                                       [--workers 4] [--no-keywords] [--quick] [--json out.json]

A real ``ragd serve`` on a fresh data dir (the embedded default: SQLite, tantivy, usearch;
``--workers`` in-process ingestion workers, default 4 (the server's), keywords on unless
``--no-keywords``). Tenant A uploads ``--backlog`` small text documents (JSON, 1-2 chunks
each) through ``--clients`` threads as fast as they are accepted; the workers start on them
at once. When every one of A's uploads has been accepted, tenant B uploads one document of
the same kind and polls its job until it is ready; ``--probes`` times, one after another,
while A's backlog is still being worked off.

Reported per probe: B's time to ready (from just before its upload to the first poll that
sees the job succeeded; polls every 20 ms), B's processing time (the job's own stage
timings: parse, chunk, embed, keywords, index), the difference (time spent queued and in
the HTTP round trips), A's jobs still queued when B uploaded and when B was ready. Then
the run waits for A's backlog to drain (so a run lasts about backlog / A's rate: ~8 docs/s
on the 2-core reference machine): A's throughput from its first upload to the drain. For
scale, "FIFO estimate": the time A's queued jobs at B's upload take at that rate, which is
how long B would wait behind them in a first-in-first-out queue (ragd before fair claims;
the same script run on such a build measures it). No target is asserted; with fair claims
B waits for about one of A's jobs per worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "fairness"
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
PASSWORD = "Bench-passphrase-4-fairness!"  # noqa: S105 - a throwaway bench account
POLL_S = 0.02
HANG_S = 3600.0
_TOPICS = ("glaciers", "tidal pools", "lighthouses", "bee keeping", "railway signals",
           "sourdough", "bridges", "orchards", "printing presses", "weather balloons")


def document_text(tenant: str, n: int) -> str:
    """A small, distinct document (one or two 220-token chunks)."""
    topic = _TOPICS[n % len(_TOPICS)]
    return (
        f"Note {n} of tenant {tenant} is about {topic}. "
        + " ".join(f"Observation {k} on {topic} number {n}: it was recorded and filed."
                   for k in range(12))
    )


class Tenant:
    """A registered tenant admin with one collection, over one HTTP client per thread."""

    def __init__(self, base: str, name: str) -> None:
        self.base = base
        body = _expect(httpx.post(f"{base}/api/v1/auth/register", timeout=60, json={
            "email": f"{name}@fairness.example.org", "password": PASSWORD, "tenant_name": name,
        }), 201, f"register {name}")
        self.name = name
        self.headers = {"Authorization": f"Bearer {body['access_token']}"}
        self.collection = _expect(httpx.post(
            f"{base}/api/v1/collections", json={"name": "notes"}, headers=self.headers,
            timeout=60), 201, "collection")["id"]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=120)

    def upload(self, client: httpx.Client, n: int) -> str:
        """Upload document ``n``; its job id."""
        accepted = _expect(client.post("/api/v1/documents", json={
            "collection_id": self.collection, "title": f"{self.name}-{n}",
            "text": document_text(self.name, n),
        }), 202, "upload")
        return str(accepted["job_id"])

    def count(self, client: httpx.Client, status: str) -> int:
        """This tenant's jobs in ``status`` (paging through the job list)."""
        total, cursor = 0, None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = _expect(client.get("/api/v1/jobs", params=params), 200, "jobs")
            total += len(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return total


def _expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{what}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else None


def _wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = _expect(client.get(f"/api/v1/jobs/{job_id}"), 200, "job")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(POLL_S)
    raise RuntimeError(f"job {job_id} did not finish within {HANG_S:.0f} s")


def _upload_backlog(tenant: Tenant, backlog: int, clients: int) -> float:
    """Tenant A's uploads, ``clients`` threads; the wall seconds."""
    errors: list[BaseException] = []

    def upload(offset: int) -> None:
        try:
            with tenant.client() as client:
                for n in range(offset, backlog, clients):
                    tenant.upload(client, n)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    seconds = common.run_clients(upload, clients)
    if errors:
        raise errors[0]
    return seconds


def _one_run(backlog: int, probes: int, clients: int, workers: int,
             keywords: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ragd-fairness-") as scratch:
        env = {"RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE), "RAGD_BOOTSTRAP_ADMIN": "false",
               "RAGD_LOG_LEVEL": "WARNING", "RAGD_INGESTION__WORKERS": str(workers),
               "RAGD_INGESTION__KEYWORDS_ENABLED": "true" if keywords else "false"}
        with common.running_server(Path(scratch) / "data", Path(scratch) / "log",
                                   env) as server:
            a = Tenant(server.base_url, "tenant-a")
            b = Tenant(server.base_url, "tenant-b")
            with a.client() as a_client, b.client() as b_client:
                # Warm-up (the models load before the clock starts): one document each.
                _wait_job(a_client, a.upload(a_client, -1))
                _wait_job(b_client, b.upload(b_client, -1))

                started = time.perf_counter()
                upload_s = _upload_backlog(a, backlog, clients)
                results = []
                for probe in range(probes):
                    a_queued = a.count(a_client, "queued")
                    a_done_before = a.count(a_client, "succeeded")
                    t0 = time.perf_counter()
                    job = _wait_job(b_client, b.upload(b_client, probe))
                    ready_s = time.perf_counter() - t0
                    a_done_after = a.count(a_client, "succeeded")
                    timings = job.get("timings") or {}
                    processing = float(timings.get("total", 0.0))
                    results.append({
                        "status": job["status"], "time_to_ready_s": round(ready_s, 3),
                        "processing_s": round(processing, 3),
                        "waiting_s": round(ready_s - processing, 3),
                        "a_queued_at_upload": a_queued,
                        "a_queued_at_ready": a.count(a_client, "queued"),
                        "a_finished_meanwhile": a_done_after - a_done_before,
                        "a_rate_docs_per_s": round(
                            (a_done_after - a_done_before) / ready_s, 3) if ready_s else None,
                        "timings": timings,
                    })
                # Then A's backlog drains: A's throughput over the whole run, B's probes in it.
                deadline = time.monotonic() + HANG_S
                while a.count(a_client, "queued") + a.count(a_client, "running"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("A's backlog did not drain")
                    time.sleep(0.5)
                elapsed = time.perf_counter() - started
                a_done = a.count(a_client, "succeeded") - 1  # without the warm-up
            rate = a_done / elapsed if elapsed else 0.0
            for result in results:
                result["fifo_estimate_s"] = (
                    round(result["a_queued_at_upload"] / rate, 1) if rate else None
                )
    return {
        "backlog": backlog, "clients": clients, "workers": workers, "keywords": keywords,
        "a_upload_s": round(upload_s, 2), "a_drained_s": round(elapsed, 2),
        "a_docs_per_s": round(rate, 3), "a_finished": a_done, "probes": results,
    }


def run(quick: bool = False, *, backlog: int = 2000, probes: int = 3, clients: int = 4,
        workers: int = 4, keywords: bool = True) -> dict[str, Any]:
    if quick:
        backlog, probes = 100, 1
    single = _one_run(backlog, probes, clients, workers, keywords)
    ready = [p["time_to_ready_s"] for p in single["probes"]]
    processing = [p["processing_s"] for p in single["probes"]]
    waiting = [p["waiting_s"] for p in single["probes"]]
    fifo = [p["fifo_estimate_s"] for p in single["probes"] if p["fifo_estimate_s"] is not None]
    queued = [p["a_queued_at_upload"] for p in single["probes"]]
    result: dict[str, Any] = {
        "bench": NAME, "environment": common.environment(), "run": single,
        "median": {
            "b_time_to_ready_s": round(statistics.median(ready), 3),
            "b_processing_s": round(statistics.median(processing), 3),
            "b_waiting_s": round(statistics.median(waiting), 3),
            "a_queued_at_b_upload": statistics.median(queued),
            "fifo_estimate_s": round(statistics.median(fifo), 1) if fifo else None,
        },
    }
    m = result["median"]
    note = (f"backlog {backlog}, {workers} workers, keywords {'on' if keywords else 'off'}, "
            f"median of {probes} probes")
    result["summary"] = [
        common.row("B's upload: time to ready", m["b_time_to_ready_s"], "s", note=note),
        common.row("B's upload: own processing (job timings)", m["b_processing_s"], "s"),
        common.row("B's upload: waiting (queue + HTTP)", m["b_waiting_s"], "s"),
        common.row("A's jobs queued when B uploaded", m["a_queued_at_b_upload"], "jobs"),
        common.row("A's backlog: uploaded, then drained", single["a_drained_s"], "s",
                   note=f"{single['a_docs_per_s']} docs/s from the first upload"),
        common.row("FIFO estimate: A's queue at B's upload / A's rate", m["fifo_estimate_s"],
                   "s", note="B's wait in a first-in-first-out queue"),
    ]
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = result["summary"]
    return rows


def render(result: dict[str, Any]) -> str:
    probes = result["run"]["probes"]
    table = common.format_table(
        ["probe", "time to ready s", "processing s", "waiting s", "A queued at upload",
         "A queued at ready", "FIFO estimate s"],
        [[n, p["time_to_ready_s"], p["processing_s"], p["waiting_s"], p["a_queued_at_upload"],
          p["a_queued_at_ready"], p["fifo_estimate_s"]] for n, p in enumerate(probes)],
    )
    return table + "\n\n" + common.summary_table(result["summary"], bench=NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=2000, help="tenant A's documents")
    parser.add_argument("--probes", type=int, default=3, help="tenant B's uploads, in turn")
    parser.add_argument("--clients", type=int, default=4, help="threads uploading A's backlog")
    parser.add_argument("--workers", type=int, default=4, help="ingestion workers in serve")
    parser.add_argument("--no-keywords", action="store_true")
    parser.add_argument("--quick", action="store_true", help="backlog 100, one probe")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.quick, backlog=args.backlog, probes=args.probes, clients=args.clients,
                 workers=args.workers, keywords=not args.no_keywords)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    common.emit(result, render(result), json_only=args.json_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
