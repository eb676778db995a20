"""Authenticated request overhead, over HTTP and in-process.

**HTTP** (a real ``ragd serve`` on 127.0.0.1, temporary data dir): register a tenant, then
drive ``GET /health/live`` (unauthenticated baseline) and ``GET /api/v1/auth/me`` (bearer
token) with N concurrent keep-alive clients for a fixed number of requests, and report
client-side latency p50/p95/p99, throughput and the server's CPU time per request. Then
revoke many sessions (log in and log out repeatedly, so the server's in-memory revoked set is
non-trivial) and measure ``/auth/me`` again. ``/auth/me`` also does two DB reads, so its
difference from ``/health/live`` is auth + those reads + a larger response.

**In-process** (no HTTP, no DB on the hot path): build the services with
``ragd.container.open_services`` and time (a) ``tokens.verify_access(token)`` alone and
(b) ``await auth.authenticate(token)`` (verify + marker-file stat + revocation lookup), with
0 and with 10,000 revoked sessions. The revocation check costs (b) - (a); target: < 0.1 ms
at p50 (reported, never enforced).

**In-process ASGI** (the full FastAPI stack, no sockets, one client): CPU time per request of
``/health/live``, of a bench-only route that depends on nothing but the current principal
(the auth dependency chain without any DB read), and of ``/auth/me``; this splits the HTTP
difference into "auth through FastAPI" and "the DB reads of /auth/me".

    .venv/bin/python bench/auth_overhead.py [--requests 4000] [--concurrency 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "auth_overhead"
PASSWORD = "violet-harbour-trumpet-42"
EMAIL = "bench-owner@example.com"
TENANT = "bench-tenant"
REVOCATION_TARGET_MS = 0.1

DEFAULTS: dict[str, int] = {
    "requests": 4000,  # measured requests per HTTP phase
    "concurrency": 8,
    "warmup": 200,  # unmeasured requests before each HTTP phase
    "revoked_sessions": 200,  # login + logout cycles before the second /auth/me phase
    "micro_iterations": 5000,  # calls per timed pass, in-process
    "micro_repeats": 5,  # timed passes; the median pass is reported
    "micro_revoked": 10_000,  # revoked sessions inserted for the in-process "many" case
    "asgi_requests": 300,  # sequential requests per path and round, in-process ASGI
    "asgi_rounds": 5,  # rounds (paths interleaved); the median round is reported
}
QUICK: dict[str, int] = {
    "requests": 1000,
    "warmup": 100,
    "revoked_sessions": 50,
    "micro_iterations": 2000,
    "micro_repeats": 3,
    "asgi_requests": 100,
    "asgi_rounds": 3,
}
LIMITS: dict[str, int] = {  # hard caps, so every loop stops by itself
    "requests": 1_000_000,
    "concurrency": 256,
    "warmup": 100_000,
    "revoked_sessions": 10_000,
    "micro_iterations": 1_000_000,
    "micro_repeats": 100,
    "micro_revoked": 10_000_000,
    "asgi_requests": 100_000,
    "asgi_rounds": 100,
}
PHASE_DEADLINE_S = 300.0  # a phase stops at this wall time even if requests remain
#: Without these, the 50-logins-per-IP limit stops the revocation set-up after 50 logins.
SERVER_ENV = {
    "RAGD_BOOTSTRAP_ADMIN": "false",
    "RAGD_AUTH__LOGIN_ATTEMPTS_PER_IP": "1000000",
    "RAGD_AUTH__LOGIN_ATTEMPTS_PER_ACCOUNT": "1000000",
}


# -- HTTP ---------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def http_phase(
    base_url: str,
    path: str,
    *,
    headers: dict[str, str] | None,
    total: int,
    concurrency: int,
    warmup: int,
    server_pid: int,
    expected_status: int = 200,
) -> dict[str, Any]:
    """``total`` GETs of ``path`` from ``concurrency`` keep-alive clients (one connection each)."""
    clients = [
        httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=10.0,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(concurrency)
    ]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    remaining = total
    per_worker_warmup = -(-warmup // concurrency)
    try:
        async def warm(client: httpx.AsyncClient) -> None:
            for _ in range(per_worker_warmup):
                await client.get(path)

        await asyncio.gather(*(warm(client) for client in clients))

        stop_at = time.perf_counter() + PHASE_DEADLINE_S

        async def work(client: httpx.AsyncClient) -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < stop_at:
                remaining -= 1
                started = time.perf_counter_ns()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter_ns() - started
                statuses[response.status_code] += 1
                if response.status_code == expected_status:
                    latencies.append(elapsed / 1e9)

        me = psutil.Process()
        client_cpu = me.cpu_times()
        server_cpu = _cpu_seconds(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(work(client) for client in clients))
        wall = time.perf_counter() - started
        server_cpu = _cpu_seconds(server_pid) - server_cpu
        after = me.cpu_times()
        client_cpu_s = (after.user + after.system) - (client_cpu.user + client_cpu.system)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    done = sum(statuses.values())
    return {
        "path": path,
        "requests": done,
        "ok": len(latencies),
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "errors": dict(errors),
        "wall_s": round(wall, 3),
        "throughput_rps": round(done / wall, 1) if wall > 0 else None,
        "latency": common.latency_summary(latencies),
        "server_cpu_us_per_request": round(server_cpu / done * 1e6, 1) if done else None,
        "client_cpu_us_per_request": round(client_cpu_s / done * 1e6, 1) if done else None,
        "stopped_by_deadline": remaining > 0,
    }


async def revoke_sessions(base_url: str, count: int, *, parallel: int = 4) -> dict[str, Any]:
    """Log in and out ``count`` times; every logout adds one session to the revoked set."""
    outcomes: Counter[str] = Counter()
    last_revoked: str | None = None
    semaphore = asyncio.Semaphore(parallel)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as client:

        async def cycle() -> None:
            nonlocal last_revoked
            async with semaphore:
                login = await client.post(
                    "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}
                )
                if login.status_code != 200:
                    outcomes[f"login_{login.status_code}"] += 1
                    return
                token = login.json()["access_token"]
                logout = await client.post(
                    "/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"}
                )
                if logout.status_code == 204:
                    outcomes["revoked"] += 1
                    last_revoked = token
                else:
                    outcomes[f"logout_{logout.status_code}"] += 1

        await asyncio.gather(*(cycle() for _ in range(count)))
        probe = None
        if last_revoked is not None:  # a revoked token must now be refused (expect 401)
            response = await client.get(
                "/api/v1/auth/me", headers={"Authorization": f"Bearer {last_revoked}"}
            )
            probe = response.status_code
    return {
        "attempted": count,
        "outcomes": dict(outcomes),
        "revoked": outcomes["revoked"],
        "seconds": round(time.perf_counter() - started, 2),
        "revoked_token_status": probe,
    }


async def _register(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as client:
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": EMAIL, "password": PASSWORD, "tenant_name": TENANT},
        )
        if response.status_code != 201:
            raise RuntimeError(f"register failed: {response.status_code} {response.text[:300]}")
        token: str = response.json()["access_token"]
        me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        if me.status_code != 200:
            raise RuntimeError(f"/auth/me with the new token: {me.status_code} {me.text[:300]}")
        return token


async def http_bench(cfg: dict[str, int], *, log_level: str | None) -> dict[str, Any]:
    extra = dict(SERVER_ENV)
    if log_level:
        extra["RAGD_LOG_LEVEL"] = log_level
    with tempfile.TemporaryDirectory(prefix="ragd-bench-auth-") as tmp:
        root = Path(tmp)
        server = common.ServerProcess(
            data_dir=root / "data", log_path=root / "server.log", env=common.server_env(extra)
        )
        with server:
            server.start()
            ready = await asyncio.to_thread(server.wait_ready)
            if not ready.ready:
                raise RuntimeError(f"server not ready: {server.log_tail()}")
            base = server.base_url
            token = await _register(base)
            auth = {"Authorization": f"Bearer {token}"}
            phase = {
                "total": cfg["requests"], "concurrency": cfg["concurrency"],
                "warmup": cfg["warmup"], "server_pid": server.pid,
            }
            live = await http_phase(base, "/health/live", headers=None, **phase)
            me = await http_phase(base, "/api/v1/auth/me", headers=auth, **phase)
            revocation = await revoke_sessions(base, cfg["revoked_sessions"])
            me_revoked = await http_phase(base, "/api/v1/auth/me", headers=auth, **phase)
            live_after = await http_phase(base, "/health/live", headers=None, **phase)
            rss = common.bytes_to_mb(server.rss_bytes())
            stop = server.stop()
    return {
        "server_env": {"RAGD_JWT_SECRET": "<random, 64 chars>", **extra},
        "log_level": log_level or "ragd default (INFO: one access-log line per request)",
        "health_live": live,
        "auth_me": me,
        "revocation_setup": revocation,
        "auth_me_revoked": me_revoked,
        "health_live_after": live_after,
        "server_rss_mb_end": rss,
        "server_exit_code": stop.exit_code,
    }


# -- in-process ---------------------------------------------------------------------------


def _timer_overhead_ns(samples: int = 20_000) -> float:
    clock = time.perf_counter_ns
    deltas = []
    for _ in range(samples):
        started = clock()
        deltas.append(clock() - started)
    return float(statistics.median(deltas))


async def _per_call_async(fn: Callable[[], Awaitable[Any]], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        started = clock()
        await fn()
        out.append(clock() - started)
    return out


async def _batch_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(n):
        await fn()
    return (clock() - started) / n


def _per_call(fn: Callable[[], Any], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        started = clock()
        fn()
        out.append(clock() - started)
    return out


def _batch(fn: Callable[[], Any], n: int) -> float:
    clock = time.perf_counter_ns
    started = clock()
    for _ in range(n):
        fn()
    return (clock() - started) / n


def _us(values_ns: list[int] | list[float], *, batch: list[float]) -> dict[str, Any]:
    """Per-call p50/p99/max (each call timed alone) and the median of the batch means, in µs.

    Batch mean = one timed loop of n calls / n; it includes rare slow calls (a periodic
    revocation sync, GC) that the per-call p50 ignores.
    """
    return {
        "p50_us": round(common.percentile(values_ns, 50) / 1000, 2),
        "p99_us": round(common.percentile(values_ns, 99) / 1000, 2),
        "max_us": round(max(values_ns) / 1000, 1),
        "batch_mean_us_median": round(statistics.median(batch) / 1000, 2),
        "batch_mean_us_all": [round(value / 1000, 2) for value in batch],
    }


async def _time_sync(fn: Callable[[], Any], n: int, repeats: int) -> dict[str, Any]:
    for _ in range(min(n, 500)):
        fn()  # warm-up
    batch = []
    for _ in range(repeats):
        gc.collect()
        batch.append(_batch(fn, n))
    gc.collect()
    return _us(_per_call(fn, n), batch=batch)


async def _time_async(fn: Callable[[], Awaitable[Any]], n: int, repeats: int) -> dict[str, Any]:
    for _ in range(min(n, 500)):
        await fn()
    batch = []
    for _ in range(repeats):
        gc.collect()
        batch.append(await _batch_async(fn, n))
    gc.collect()
    return _us(await _per_call_async(fn, n), batch=batch)


async def _time_pair(
    sync_fn: Callable[[], Any], async_fn: Callable[[], Awaitable[Any]], n: int, repeats: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time ``sync_fn`` (a) and ``async_fn`` (b) in alternating passes, so drift hits both."""
    for _ in range(min(n, 500)):
        sync_fn()
        await async_fn()
    batch_a: list[float] = []
    batch_b: list[float] = []
    calls_a: list[int] = []
    calls_b: list[int] = []
    for _ in range(repeats):
        gc.collect()
        batch_a.append(_batch(sync_fn, n))
        gc.collect()
        batch_b.append(await _batch_async(async_fn, n))
        gc.collect()
        calls_a += _per_call(sync_fn, n)
        gc.collect()
        calls_b += await _per_call_async(async_fn, n)
    return _us(calls_a, batch=batch_a), _us(calls_b, batch=batch_b)


async def micro_bench(cfg: dict[str, int]) -> dict[str, Any]:
    from ragd.container import open_services
    from ragd.db.sequence import AUTH_EVENTS
    from ragd.errors import AuthenticationFailed
    from ragd.ops.signals import build_change_signal
    from ragd.settings import load_settings

    n, repeats = cfg["micro_iterations"], cfg["micro_repeats"]
    with tempfile.TemporaryDirectory(prefix="ragd-bench-micro-") as tmp:
        settings = load_settings(
            None, data_dir=Path(tmp) / "data", jwt_secret=common.bench_secret(),
            bootstrap_admin=False,
        )
        async with open_services(settings) as services:
            revocation = services.revocation
            session_id = secrets.token_urlsafe(18)
            ids = {"user_id": "bench-user", "tenant_id": "bench-tenant"}
            token, _ = services.tokens.issue_access(
                user_id=ids["user_id"], tenant_id=ids["tenant_id"], session_id=session_id,
                role="member", is_superuser=False,
            )
            revoked_session = secrets.token_urlsafe(18)
            revoked_token, _ = services.tokens.issue_access(
                user_id=ids["user_id"], tenant_id=ids["tenant_id"], session_id=revoked_session,
                role="member", is_superuser=False,
            )
            # The same signal (a marker file on SQLite) the revocation list checks per request.
            signal = build_change_signal(services.settings, AUTH_EVENTS, services.listener)
            revocation.revoked_sessions.clear()
            rows: dict[str, Any] = {}
            expires = _far_future()
            for count in (0, cfg["micro_revoked"]):
                # Other sessions' revocations, as logouts would leave them (same id format).
                while len(revocation.revoked_sessions) < count:
                    revocation.revoked_sessions[secrets.token_urlsafe(18)] = expires
                principal = await services.auth.authenticate(token)  # must be accepted
                verify, authenticate = await _time_pair(
                    lambda: services.tokens.verify_access(token),
                    lambda: services.auth.authenticate(token),
                    n, repeats,
                )
                rows[str(count)] = {
                    "revoked_sessions": len(revocation.revoked_sessions),
                    "accepted_as": principal.method,
                    "verify_access": verify,
                    "authenticate": authenticate,
                    "revocation_cost_p50_us": round(
                        authenticate["p50_us"] - verify["p50_us"], 2),
                    "revocation_cost_batch_us": round(
                        authenticate["batch_mean_us_median"] - verify["batch_mean_us_median"],
                        2),
                }

            # Pieces of (b) - (a), with the larger revoked set in place.
            parts = {
                "marker_stat (signal.changed)": await _time_sync(signal.changed, n, repeats),
                "revocation.check": await _time_sync(
                    lambda: revocation.check(**ids, session_id=session_id), n, repeats),
                "revocation.refresh_if_changed": await _time_async(
                    revocation.refresh_if_changed, n, repeats),
                # What the first request after any auth change (or every
                # revocation_sync_seconds) pays: one events query, nothing new.
                "revocation.sync (DB query)": await _time_async(
                    revocation.sync, max(50, n // 20), repeats),
            }
            revocation.revoked_sessions[revoked_session] = expires

            async def rejected() -> None:
                try:
                    await services.auth.authenticate(revoked_token)
                except AuthenticationFailed:
                    return
                raise RuntimeError("a revoked session was accepted")

            parts["authenticate, revoked token (rejected)"] = await _time_async(
                rejected, n, repeats)
    return {
        "iterations": n,
        "repeats": repeats,
        "timer_overhead_ns": _timer_overhead_ns(),
        "revocation_sync_seconds": settings.auth.revocation_sync_seconds,
        "by_revoked_count": rows,
        "parts": parts,
    }


def _far_future() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


# -- in-process ASGI ----------------------------------------------------------------------

AUTH_ONLY_PATH = "/_bench/auth-only"


async def asgi_bench(cfg: dict[str, int]) -> dict[str, Any]:
    """CPU per request through the whole FastAPI app, without sockets or a second process."""
    from fastapi import Depends

    from ragd.api.deps import get_principal
    from ragd.app import create_app
    from ragd.settings import load_settings

    n, rounds = cfg["asgi_requests"], cfg["asgi_rounds"]
    with tempfile.TemporaryDirectory(prefix="ragd-bench-asgi-") as tmp:
        settings = load_settings(
            None, data_dir=Path(tmp) / "data", jwt_secret=common.bench_secret(),
            bootstrap_admin=False,
        )
        app = create_app(settings)

        # Bench-only route: the same auth dependency as every protected route, nothing else.
        @app.get(AUTH_ONLY_PATH, include_in_schema=False)
        async def auth_only(principal: Any = Depends(get_principal)) -> dict[str, str]:  # noqa: B008
            return {"user_id": principal.user_id}

        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ragd.bench"
        ) as client:
            response = await client.post(
                "/api/v1/auth/register",
                json={"email": EMAIL, "password": PASSWORD, "tenant_name": TENANT},
            )
            if response.status_code != 201:
                raise RuntimeError(f"register failed: {response.status_code}")
            auth = {"Authorization": f"Bearer {response.json()['access_token']}"}
            paths = {
                "health_live": ("/health/live", None),
                "auth_only": (AUTH_ONLY_PATH, auth),
                "auth_me": ("/api/v1/auth/me", auth),
            }
            cpu: dict[str, list[float]] = {key: [] for key in paths}
            wall: dict[str, list[float]] = {key: [] for key in paths}
            statuses: Counter[int] = Counter()
            for path, headers in paths.values():  # warm-up
                for _ in range(min(n, 50)):
                    statuses[(await client.get(path, headers=headers)).status_code] += 1
            for _ in range(rounds):
                for key, (path, headers) in paths.items():
                    gc.collect()
                    cpu_started, started = time.process_time(), time.perf_counter()
                    for _ in range(n):
                        statuses[(await client.get(path, headers=headers)).status_code] += 1
                    cpu[key].append((time.process_time() - cpu_started) / n * 1e6)
                    wall[key].append((time.perf_counter() - started) / n * 1e6)
    result: dict[str, Any] = {
        "requests_per_round": n,
        "rounds": rounds,
        "statuses": {str(code): count for code, count in sorted(statuses.items())},
        "note": "process CPU (all threads, incl. the aiosqlite worker) per request; "
                "access log not configured in-process",
    }
    for key in paths:
        result[key] = {
            "path": paths[key][0],
            "cpu_us_per_request": round(statistics.median(cpu[key]), 1),
            "wall_us_per_request": round(statistics.median(wall[key]), 1),
            "cpu_us_all_rounds": [round(value, 1) for value in cpu[key]],
        }
    return result


# -- entry points -------------------------------------------------------------------------


def _config(quick: bool, overrides: dict[str, int | None]) -> dict[str, int]:
    cfg = dict(DEFAULTS)
    if quick:
        cfg.update(QUICK)
    for key, value in overrides.items():
        if value is not None:
            cfg[key] = value
    return {key: max(1 if key in ("requests", "concurrency", "micro_iterations",
                                  "micro_repeats", "asgi_requests", "asgi_rounds") else 0,
                     min(value, LIMITS[key]))
            for key, value in cfg.items()}


def run(
    quick: bool = False,
    *,
    log_level: str | None = None,
    skip_http: bool = False,
    skip_micro: bool = False,
    skip_asgi: bool = False,
    **overrides: int | None,
) -> dict[str, Any]:
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown options: {sorted(unknown)}")
    cfg = _config(quick, overrides)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "bench": NAME,
        "config": {**cfg, "quick": quick, "password": PASSWORD},
        "environment": common.environment(),
        "targets": {"revocation_check_p50_ms_max": REVOCATION_TARGET_MS},
    }
    if not skip_http:
        result["http"] = asyncio.run(http_bench(cfg, log_level=log_level))
    if not skip_micro:
        result["in_process"] = asyncio.run(micro_bench(cfg))
    if not skip_asgi:
        result["asgi"] = asyncio.run(asgi_bench(cfg))
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result["summary"] = summary_rows(result)
    return result


def _http_note(phase: dict[str, Any]) -> str:
    note = (f"{phase['throughput_rps']} req/s, server CPU "
            f"{phase['server_cpu_us_per_request']} us/req")
    bad = {code: count for code, count in phase["statuses"].items() if code != "200"}
    if bad or phase["errors"]:
        note += f", non-200 {bad} errors {phase['errors']}"
    return note


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    http = result.get("http")
    if http:
        revoked = http["revocation_setup"]["revoked"]
        phases = (
            ("health_live", "GET /health/live (no auth)"),
            ("auth_me", "GET /auth/me (0 revoked)"),
            ("auth_me_revoked", f"GET /auth/me ({revoked} revoked)"),
            ("health_live_after", "GET /health/live (again, drift check)"),
        )
        for key, label in phases:
            phase = http[key]
            latency = phase["latency"]
            rows.append(common.row(
                f"{label} p50", latency.get("p50_ms"), "ms",
                note=f"p95 {latency.get('p95_ms')} / p99 {latency.get('p99_ms')} ms; "
                     + _http_note(phase),
            ))
        base, me, me_rev = (http[key]["latency"].get("p50_ms")
                            for key in ("health_live", "auth_me", "auth_me_revoked"))
        if None not in (base, me, me_rev):
            rows.append(common.row(
                "/auth/me - /health/live, p50", round(me - base, 3), "ms",
                note="auth + 2 DB reads + bigger body (0 revoked)"))
            rows.append(common.row(
                f"/auth/me with {revoked} revoked - with 0, p50", round(me_rev - me, 3), "ms",
                note="a dict lookup: expect ~0; compare the drift-check row for noise"))
        cpu = [http[key]["server_cpu_us_per_request"]
               for key in ("health_live", "auth_me", "auth_me_revoked")]
        if None not in cpu:
            rows.append(common.row(
                "server CPU /auth/me - /health/live", round(cpu[1] - cpu[0], 1), "us/req",
                note=f"with {revoked} revoked: {round(cpu[2] - cpu[0], 1)} us/req"))
        setup = http["revocation_setup"]
        rows.append(common.row(
            "revocation set-up (login+logout cycles)", setup["revoked"], "sessions",
            note=f"{setup['seconds']} s; revoked token -> HTTP {setup['revoked_token_status']}"
                 " (expect 401)",
            status="" if setup["revoked_token_status"] == 401 else "CHECK"))
    micro = result.get("in_process")
    if micro:
        for count, data in micro["by_revoked_count"].items():
            label = f"{int(count):,} revoked"
            rows.append(common.row(
                f"in-process verify_access ({label}) p50", data["verify_access"]["p50_us"],
                "us", note=f"p99 {data['verify_access']['p99_us']} us; batch mean "
                           f"{data['verify_access']['batch_mean_us_median']} us"))
            rows.append(common.row(
                f"in-process authenticate ({label}) p50", data["authenticate"]["p50_us"],
                "us", note=f"p99 {data['authenticate']['p99_us']} us; batch mean "
                           f"{data['authenticate']['batch_mean_us_median']} us"))
            cost = data["revocation_cost_p50_us"]
            rows.append(common.row(
                f"revocation check cost ({label}) p50", cost, "us",
                target=f"< {REVOCATION_TARGET_MS * 1000:.0f} us",
                status=common.verdict(cost / 1000, REVOCATION_TARGET_MS),
                note=f"authenticate - verify_access; batch means: "
                     f"{data['revocation_cost_batch_us']} us"))
        for name, data in micro["parts"].items():
            rows.append(common.row(f"  part: {name} p50", data["p50_us"], "us",
                                   note=f"p99 {data['p99_us']} us"))
    asgi = result.get("asgi")
    if asgi:
        live, only, me = (asgi[key]["cpu_us_per_request"]
                          for key in ("health_live", "auth_only", "auth_me"))
        rows.append(common.row("ASGI CPU: GET /health/live", live, "us/req",
                               note="in-process, whole FastAPI app, 1 client"))
        rows.append(common.row("ASGI CPU: auth-only route", only, "us/req",
                               note="bench route depending only on the current principal"))
        rows.append(common.row("ASGI CPU: GET /auth/me", me, "us/req"))
        rows.append(common.row("ASGI CPU: auth through FastAPI", round(only - live, 1),
                               "us/req", note="auth-only route - /health/live"))
        rows.append(common.row("ASGI CPU: /auth/me DB reads + body", round(me - only, 1),
                               "us/req", note="/auth/me - auth-only route"))
    return rows


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    head = (f"auth overhead: {cfg['requests']} requests, {cfg['concurrency']} clients per "
            f"HTTP phase; in-process {cfg['micro_iterations']} calls x "
            f"{cfg['micro_repeats']} passes; {result['environment']['cpu_count']} CPU(s), "
            f"{result['elapsed_s']} s")
    parts = [head]
    http = result.get("http")
    if http:
        lines = []
        for key in ("health_live", "auth_me", "auth_me_revoked", "health_live_after"):
            phase = http[key]
            latency = phase["latency"]
            lines.append([key, phase["requests"], latency.get("p50_ms"), latency.get("p95_ms"),
                          latency.get("p99_ms"), latency.get("max_ms"), phase["throughput_rps"],
                          phase["server_cpu_us_per_request"],
                          phase["client_cpu_us_per_request"]])
        parts.append(common.format_table(
            ["phase", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s",
             "srv CPU us/req", "cli CPU us/req"], lines))
    parts.append(common.summary_table(result["summary"]))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    for key, default in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None,
                            help=f"default {default} (quick: {QUICK.get(key, default)})")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="server RAGD_LOG_LEVEL (default: ragd's, INFO)")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--skip-asgi", action="store_true")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, key) for key in DEFAULTS}
    result = run(args.quick, log_level=args.log_level, skip_http=args.skip_http,
                 skip_micro=args.skip_micro, skip_asgi=args.skip_asgi, **overrides)
    common.emit(result, render(result), json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
