"""Ingestion through the API and the event loop: how much of the server's event-loop thread the
pipeline takes, and what that does to searches served meanwhile.

    .venv/bin/python bench/loop_share.py [--docs 400] [--clients 4] [--repeats 3]
                                         [--server-workers 1] [--json out.json]

A real ``ragd serve`` on a fresh data dir (embedded default: 2 in-process ingestion workers,
keywords on; ``--server-workers`` passes ``--workers N``). ``--clients`` threads upload
``--docs`` python-faq passages (``corpus.jsonl``, title + text, ``POST /api/v1/documents``)
as fast as they are accepted, while one probe client runs hybrid searches back to back; the
run ends when no job is queued or running. Meanwhile every thread of the server process is
sampled from ``/proc/<pid>/task/*/stat`` (user + system CPU): the thread whose id is the
process id runs the event loop; every other thread (inference, SQLite connections, uvicorn) is
"other threads"; parser sandboxes are child processes ("children"). Then the same probe runs
for as many searches on the idle server.

Reported per run and as medians over ``--repeats``: documents/s and chunks/s, the event-loop
thread's CPU as a share of wall time (1.0 = one core all the time), other threads' and
children's shares, search p50/p95 during the ingestion and when idle. The issue's bar: the
Python work of the pipeline must not starve the API (a loop share near 1.0 with a search p95
far above the idle one would be starving). No target is asserted; numbers depend on the
machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

try:
    from bench import _common as common
except ImportError:
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "loop_share"
EVAL = common.REPO_ROOT.parent / "shared" / "eval"
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
PASSWORD = "Bench-passphrase-4-loop-share!"  # noqa: S105 - a throwaway bench account
TICKS = os.sysconf("SC_CLK_TCK")


def _threads_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every thread of ``pid``."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


def _children_cpu(pid: int) -> float:
    """CPU seconds of the live children and of the reaped ones."""
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    total = times.children_user + times.children_system
    for child in proc.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        total += child_times.user + child_times.system
    return total


class CpuMeter:
    """Per-thread CPU of the server between :meth:`start` and :meth:`stop` (for every server
    process, with ``--workers N``: the event-loop threads are summed)."""

    def __init__(self, root: int) -> None:
        self.root = root

    def _pids(self) -> list[int]:
        proc = psutil.Process(self.root)
        servers = [self.root]
        for child in proc.children():
            try:
                if "serve" in " ".join(child.cmdline()) or "multiprocessing" in " ".join(
                    child.cmdline()
                ):
                    servers.append(child.pid)
            except psutil.Error:
                continue
        return servers

    def snapshot(self) -> dict[str, float]:
        loop = other = 0.0
        for pid in self._pids():
            for tid, seconds in _threads_cpu(pid).items():
                if tid == pid:
                    loop += seconds
                else:
                    other += seconds
        return {"loop": loop, "other": other, "children": _children_cpu(self.root),
                "at": time.perf_counter()}


def _search_probe(base: str, headers: dict[str, str], queries: list[str],
                  stop: threading.Event, limit: int | None = None) -> list[float]:
    latencies: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        index = 0
        while not stop.is_set() and (limit is None or len(latencies) < limit):
            query = queries[index % len(queries)]
            index += 1
            started = time.perf_counter()
            response = client.post("/api/v1/search",
                                   json={"query": query, "top_k": 10, "mode": "hybrid"})
            if response.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _one_run(docs: int, clients: int, server_workers: int) -> dict[str, Any]:
    passages = [json.loads(line) for line in
                (EVAL / "python-faq" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    passages = passages[:docs]
    queries = [json.loads(line)["text"] for line in
               (EVAL / "python-faq" / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    with tempfile.TemporaryDirectory(prefix="ragd-loop-share-") as scratch:
        env = {"RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE), "RAGD_BOOTSTRAP_ADMIN": "false",
               "RAGD_LOG_LEVEL": "WARNING"}
        server = common.ServerProcess(
            data_dir=Path(scratch) / "data", log_path=Path(scratch) / "log",
            env=common.server_env(env),
            extra_args=("--workers", str(server_workers)) if server_workers != 1 else (),
        )
        server.start()
        try:
            if not server.wait_ready(timeout=180).ready:
                raise RuntimeError(f"ragd serve did not become ready:\n{server.log_tail(30)}")
            base = server.base_url
            token = httpx.post(f"{base}/api/v1/auth/register", json={
                "email": "loop@example.com", "password": PASSWORD, "tenant_name": "loop",
            }, timeout=60).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            collection = httpx.post(f"{base}/api/v1/collections", json={"name": "faq"},
                                    headers=headers, timeout=60).json()["id"]
            # Warm-up: the model loads before the clock starts (one upload, one search).
            warm = httpx.post(f"{base}/api/v1/documents", headers=headers, timeout=120, json={
                "collection_id": collection, "title": "warm-up", "text": "warm up the model"})
            _wait_idle(base, headers)
            httpx.post(f"{base}/api/v1/search", headers=headers, timeout=120,
                       json={"query": "warm up"})
            assert warm.status_code == 202, warm.text

            meter = CpuMeter(server.pid)
            stop = threading.Event()
            probe: list[float] = []
            probe_thread = threading.Thread(
                target=lambda: probe.extend(_search_probe(base, headers, queries, stop)))
            before = meter.snapshot()
            probe_thread.start()

            def upload(offset: int) -> None:
                with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
                    for passage in passages[offset::clients]:
                        response = client.post("/api/v1/documents", json={
                            "collection_id": collection,
                            "title": passage.get("title") or passage["_id"],
                            "text": passage["text"],
                        })
                        assert response.status_code in (200, 202), response.text

            common.run_clients(upload, clients)
            _wait_idle(base, headers)
            after = meter.snapshot()
            stop.set()
            probe_thread.join()
            idle = _search_probe(base, headers, queries, threading.Event(),
                                 limit=max(50, len(probe)))
            chunks = _chunks(base, headers, collection)
        finally:
            server.stop()
    wall = after["at"] - before["at"]
    return {
        "docs": docs, "clients": clients, "server_workers": server_workers,
        "wall_s": round(wall, 1), "docs_per_s": round(docs / wall, 2),
        "chunks": chunks, "chunks_per_s": round(chunks / wall, 2),
        "loop_share": round((after["loop"] - before["loop"]) / wall, 3),
        "other_threads_share": round((after["other"] - before["other"]) / wall, 3),
        "children_share": round((after["children"] - before["children"]) / wall, 3),
        "search_during": common.latency_summary([x / 1000 for x in probe]),
        "search_idle": common.latency_summary([x / 1000 for x in idle]),
    }


def _wait_idle(base: str, headers: dict[str, str], hang_guard: float = 3600) -> None:
    deadline = time.monotonic() + hang_guard
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while time.monotonic() < deadline:
            busy = sum(
                len(client.get("/api/v1/jobs", params={"status": status, "limit": 1})
                    .json()["items"])
                for status in ("queued", "running")
            )
            if not busy:
                return
            time.sleep(0.5)
    raise RuntimeError("ingestion did not finish within the hang guard")


def _chunks(base: str, headers: dict[str, str], collection: str) -> int:
    total, cursor = 0, None
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while True:
            params: dict[str, Any] = {"collection_id": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/v1/documents", params=params).json()
            total += sum(item.get("chunk_count") or 0 for item in page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return total


def run(quick: bool = False, *, docs: int = 400, clients: int = 4, repeats: int = 3,
        server_workers: int = 1) -> dict[str, Any]:
    if quick:
        docs, repeats = 60, 1
    runs = [_one_run(docs, clients, server_workers) for _ in range(repeats)]

    def median(path: tuple[str, ...]) -> float:
        values = []
        for run_ in runs:
            value: Any = run_
            for key in path:
                value = value[key]
            values.append(float(value))
        return round(statistics.median(values), 3)

    result: dict[str, Any] = {
        "bench": NAME, "environment": common.environment(), "runs": runs,
        "median": {
            "docs_per_s": median(("docs_per_s",)), "chunks_per_s": median(("chunks_per_s",)),
            "loop_share": median(("loop_share",)),
            "other_threads_share": median(("other_threads_share",)),
            "children_share": median(("children_share",)),
            "search_during_p50_ms": median(("search_during", "p50_ms")),
            "search_during_p95_ms": median(("search_during", "p95_ms")),
            "search_idle_p50_ms": median(("search_idle", "p50_ms")),
            "search_idle_p95_ms": median(("search_idle", "p95_ms")),
        },
    }
    m = result["median"]
    note = f"median of {repeats} runs, {docs} docs, {clients} clients"
    result["summary"] = [
        common.row("ingestion through the API", m["docs_per_s"], "docs/s", note=note),
        common.row("ingestion through the API", m["chunks_per_s"], "chunks/s"),
        common.row("event-loop thread CPU / wall during ingestion", m["loop_share"], "cores"),
        common.row("other threads CPU / wall", m["other_threads_share"], "cores"),
        common.row("parser children CPU / wall", m["children_share"], "cores"),
        common.row("search p50 / p95 during ingestion",
                   f"{m['search_during_p50_ms']} / {m['search_during_p95_ms']}", "ms"),
        common.row("search p50 / p95 idle",
                   f"{m['search_idle_p50_ms']} / {m['search_idle_p95_ms']}", "ms"),
    ]
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = result["summary"]
    return rows


def render(result: dict[str, Any]) -> str:
    return common.summary_table(result["summary"], bench=NAME)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server-workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.quick, docs=args.docs, clients=args.clients, repeats=args.repeats,
                 server_workers=args.server_workers)
    table = render(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
