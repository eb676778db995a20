"""Retrieval quality through the HTTP API, to check that ``ragd eval`` measures what users get.

    .venv/bin/python bench/api_eval.py [--sets python-faq debian-faq] [--scoped]
        [--eval-json SET=ragd-eval-report.json ...] [--json out.json]

A real ``ragd serve`` (default settings, a throwaway data dir, a tenant per set) gets each
BEIR corpus entry as a client uploads it (``POST /api/v1/documents``: the entry's text as the
body, its title once, as the title), every query through ``POST /api/v1/search`` (top_k 100,
each mode, no rerank; ``--scoped`` also names the set's collection), and the chunk hits are
folded into documents at their best chunk, exactly as ``ragd eval`` folds them. nDCG@10,
Recall@10, Recall@100 and MRR@10 per set and mode come out beside ``ragd eval``'s figures
when ``--eval-json`` names its report for the set.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

try:
    from bench import _common as common
except ImportError:
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "api_eval"
EVAL = common.REPO_ROOT.parent / "shared" / "eval"
SETS = ("python-faq", "debian-faq")
MODES = ("hybrid", "dense", "lexical")
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
EMAIL = "api-eval@example.com"
PASSWORD = "Api-eval-passphrase-4-bench!"  # noqa: S105 - a throwaway bench account
UPLOADERS = 4
DEPTH = 100
FINISHED = {"succeeded", "failed", "cancelled"}
TOO_MANY = 429


class Client:
    """One tenant's HTTP client; waits out 429s as a well-behaved client does."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=300)
        self.headers = headers or {}

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        while True:
            r = self.http.request(method, path, headers=self.headers, **kwargs)
            if r.status_code == TOO_MANY:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code >= 300:  # noqa: PLR2004
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            result: dict[str, Any] = r.json()
            return result


def _register(client: Client, name: str) -> None:
    """A tenant of its own per set: BM25's statistics are a tenant's, as in ``ragd eval``'s
    throwaway data dir per set."""
    body = client.call("POST", "/api/v1/auth/register", json={
        "email": f"{name}-{EMAIL}", "password": PASSWORD, "tenant_name": f"api-eval-{name}"})
    client.headers = {"Authorization": f"Bearer {body['access_token']}"}


def _upload(base_url: str, client: Client, collection_id: str,
            corpus: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Every entry uploaded from :data:`UPLOADERS` threads and awaited; document id -> corpus
    id, and the entries that failed."""
    labels: dict[str, str] = {}
    jobs: dict[str, str] = {}
    lock = threading.Lock()
    items = list(corpus.items())

    def upload(index: int) -> None:
        uploader = Client(base_url, client.headers)
        try:
            for doc_id, passage in items[index::UPLOADERS]:
                text = passage.text if passage.text.strip() else passage.title or doc_id
                accepted = uploader.call("POST", "/api/v1/documents", json={
                    "collection_id": collection_id, "title": passage.title or doc_id,
                    "text": text})
                with lock:
                    labels[accepted["document_id"]] = doc_id
                    jobs[accepted["job_id"]] = doc_id
        finally:
            uploader.close()

    common.run_clients(upload, UPLOADERS)
    failed = []
    for job_id, doc_id in jobs.items():
        while (job := client.call("GET", f"/api/v1/jobs/{job_id}"))["status"] not in FINISHED:
            time.sleep(0.5)
        if job["status"] != "succeeded":
            failed.append(doc_id)
    return labels, failed


def _search(client: Client, collection_id: str, queries: dict[str, str], mode: str,
            labels: dict[str, str], *, scoped: bool) -> dict[str, list[str]]:
    run: dict[str, list[str]] = {}
    for query_id, text in queries.items():
        request: dict[str, Any] = {"query": text, "top_k": DEPTH, "mode": mode, "rerank": False}
        if scoped:
            request["collection_ids"] = [collection_id]
        body = client.call("POST", "/api/v1/search", json=request)
        seen: dict[str, None] = {}
        for hit in body["results"]:
            label = labels.get(hit["document_id"])
            if label is not None:
                seen.setdefault(label, None)
        run[query_id] = list(seen)
    return run


def run(sets: list[str], eval_reports: dict[str, Path], *, scoped: bool = False
        ) -> dict[str, Any]:
    from ragd.cli.evaluate import mode_metrics
    from ragd.retrieval.beir import load_dataset

    result: dict[str, Any] = {"bench": NAME, "environment": common.environment(),
                              "scoped": scoped, "sets": {}}
    with tempfile.TemporaryDirectory(prefix="ragd-api-eval-") as scratch:
        root = Path(scratch)
        env = {"RAGD_JWT_SECRET": secrets.token_urlsafe(48), "RAGD_BOOTSTRAP_ADMIN": "false",
               "RAGD_ALLOW_REGISTRATION": "true", "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE),
               "RAGD_LOG_LEVEL": "WARNING"}
        with common.running_server(root / "ragd", root / "server.log", env) as server:
            client = Client(server.base_url)
            try:
                for name in sets:
                    _register(client, name)
                    dataset = load_dataset(EVAL / name)
                    collection = client.call("POST", "/api/v1/collections",
                                             json={"name": name})["id"]
                    started = time.perf_counter()
                    labels, failed = _upload(server.base_url, client, collection,
                                             dataset.corpus)
                    ingest_s = time.perf_counter() - started
                    modes = {}
                    for mode in MODES:
                        found = _search(client, collection, dataset.queries, mode, labels,
                                        scoped=scoped)
                        modes[mode] = mode_metrics(dataset, found, 10)
                    entry: dict[str, Any] = {"documents": len(labels), "failed": failed,
                                             "ingest_s": round(ingest_s, 1), "api": modes}
                    report = eval_reports.get(name)
                    if report is not None:
                        entry["ragd_eval"] = {
                            item["mode"]: item["metrics"]
                            for item in json.loads(report.read_text(encoding="utf-8"))["modes"]
                        }
                    result["sets"][name] = entry
                    print(f"[api_eval] {name}: {json.dumps(modes)}", file=sys.stderr,
                          flush=True)
            finally:
                client.close()
    return result


def render(result: dict[str, Any]) -> str:
    lines = ["| set | mode | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | ragd eval nDCG@10 |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in result["sets"].items():
        for mode, scores in entry["api"].items():
            evaluated = entry.get("ragd_eval", {}).get(mode, {})
            lines.append(
                f"| {name} | {mode} | {scores['ndcg@10']:.4f} | {scores['recall@10']:.4f} | "
                f"{scores['recall@100']:.4f} | {scores['mrr@10']:.4f} | "
                f"{evaluated.get('ndcg@10', '-')} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--eval-json", nargs="*", default=[], metavar="SET=PATH",
                        help="ragd eval --json reports to show beside, as SET=PATH")
    parser.add_argument("--scoped", action="store_true",
                        help="name the set's collection in every search (collection_ids)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    reports = {}
    for item in args.eval_json:
        name, _, path = item.partition("=")
        reports[name] = Path(path)
    result = run(args.sets, reports, scoped=args.scoped)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
