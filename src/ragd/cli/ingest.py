"""``ragd ingest``: send files to a collection, over HTTP or straight into the data dir.

This module holds the logic behind the command (no typer here):

* :func:`discover` turns the command's paths into :class:`Candidate` files. Directories
  contribute the regular files directly inside them (every level with ``recursive``);
  ``--glob`` patterns and the hidden-file rule apply to those directory contents only, a
  file named on the command line is always taken. Hidden directories are not entered.
  Hidden, empty and over-the-limit files are kept as *skipped* with a reason.
* :func:`parse_metadata` turns ``KEY=VALUE`` options into a metadata object. Values stay
  strings (``pages=12`` is ``{"pages": "12"}``); a repeated key keeps its last value.
* Two backends implement :class:`IngestBackend`: :class:`HttpBackend` talks to a running
  server, :class:`LocalBackend` opens the data dir and runs a worker pool in this process.
* :func:`ingest_files` drives a backend: find-or-create the collection, upload every file,
  optionally wait for the jobs, and return an :class:`IngestSummary` (one
  :class:`FileResult` per file: ingested, duplicate, queued, failed or skipped).

Errors that stop the whole run (unknown path, unreachable server, refused credentials,
unknown tenant) raise :class:`IngestError`; a problem with one file only fails that file.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ragd.errors import Conflict, RagdError
from ragd.stores.metadata import check_metadata

if TYPE_CHECKING:
    from types import TracebackType

    from ragd.container import Services
    from ragd.ingestion.worker import WorkerPool
    from ragd.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "RAGD_URL"
API_KEY_ENV = "RAGD_API_KEY"
TOKEN_ENV = "RAGD_TOKEN"  # noqa: S105 - a variable name, not a secret
API = "/api/v1"
MAX_COLLECTION_NAME = 200
#: Job states after which nothing more happens.
FINISHED_JOBS = ("succeeded", "failed", "cancelled")

Outcome = Literal["ingested", "duplicate", "queued", "failed", "skipped"]
OUTCOMES: tuple[Outcome, ...] = ("ingested", "duplicate", "queued", "failed", "skipped")


class IngestError(Exception):
    """A problem that stops the whole run (the command exits with status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- input ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One file found on disk; ``skip_reason`` is set when it will not be uploaded."""

    path: Path
    size: int
    skip_reason: str | None = None


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _matches(name: str, relative: str, globs: Sequence[str]) -> bool:
    return not globs or any(
        fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(relative, g) for g in globs
    )


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count / 1048576:.1f} MB"


def _candidate(path: Path, max_bytes: int, *, hidden_reason: bool) -> Candidate:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return Candidate(path, 0, f"cannot read: {exc.strerror or exc}")
    if hidden_reason and _hidden(path.name):
        return Candidate(path, size, "hidden file")
    if size == 0:
        return Candidate(path, size, "empty file")
    if size > max_bytes:
        return Candidate(path, size, f"{_size(size)} is over the {_size(max_bytes)} upload limit")
    return Candidate(path, size)


def _walk(root: Path, recursive: bool) -> list[tuple[Path, str]]:
    """(file, path relative to root) for the regular files under ``root``; hidden
    directories (and symlinked directories) are not entered."""
    found: list[tuple[Path, str]] = []
    for current, dirs, files in os.walk(root, followlinks=False):
        base = Path(current)
        dirs[:] = sorted(d for d in dirs if not _hidden(d)) if recursive else []
        for name in sorted(files):
            path = base / name
            if path.is_file():
                found.append((path, path.relative_to(root).as_posix()))
    return found


def discover(
    paths: Sequence[Path], *, recursive: bool, globs: Sequence[str], max_bytes: int
) -> list[Candidate]:
    """The files to ingest, in a stable order, each once (by resolved path).

    Raises :class:`IngestError` naming every path that does not exist.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise IngestError(f"no such file or directory: {', '.join(missing)}")
    seen: set[Path] = set()
    found: list[Candidate] = []

    def add(candidate: Candidate) -> None:
        key = candidate.path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(candidate)

    for path in paths:
        if path.is_dir():
            for file, relative in _walk(path, recursive):
                if _matches(file.name, relative, globs):
                    add(_candidate(file, max_bytes, hidden_reason=True))
        elif path.is_file():
            add(_candidate(path, max_bytes, hidden_reason=False))
        else:
            add(Candidate(path, 0, "not a regular file"))
    return found


def parse_metadata(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a metadata object (values stay strings; the last repeated
    key wins), checked against the server's metadata rules. Raises :class:`IngestError`."""

    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise IngestError(f"--metadata {pair!r}: expected KEY=VALUE")
        metadata[key] = value
    try:
        check_metadata(metadata)
    except RagdError as exc:
        raise IngestError(f"--metadata: {exc.message}") from None
    return metadata


def check_collection_name(name: str) -> str:
    """The stripped collection name, or :class:`IngestError` when blank or too long."""
    stripped = name.strip()
    if not stripped:
        raise IngestError("--collection must not be blank")
    if len(stripped) > MAX_COLLECTION_NAME:
        raise IngestError(f"--collection is longer than {MAX_COLLECTION_NAME} characters")
    return stripped


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileResult:
    """What happened to one file."""

    path: Path
    outcome: Outcome
    chunks: int = 0
    reason: str | None = None
    document_id: str | None = None
    job_id: str | None = None


@dataclass(slots=True)
class IngestSummary:
    """Every file's result and the run's duration."""

    collection: str
    results: list[FileResult] = field(default_factory=list)
    elapsed: float = 0.0

    def count(self, outcome: Outcome) -> int:
        """How many files ended with ``outcome``."""
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def chunks(self) -> int:
        """Chunks created by the files ingested in this run."""
        return sum(r.chunks for r in self.results if r.outcome == "ingested")

    @property
    def throughput(self) -> float:
        """Chunks per second over the whole run."""
        return self.chunks / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def any_failed(self) -> bool:
        """True when at least one file failed (the command then exits with status 1)."""
        return any(r.outcome == "failed" for r in self.results)


# -- backends ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to one upload: a new job, a duplicate, or an error for this file."""

    document_id: str | None = None
    job_id: str | None = None
    duplicate: bool = False
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JobState:
    """A job's status and, once it failed, why."""

    status: str
    error: str | None = None


class IngestBackend(Protocol):
    """Where the files go: a server (:class:`HttpBackend`) or the data dir
    (:class:`LocalBackend`). Methods raise :class:`IngestError` for run-stopping problems."""

    @property
    def target(self) -> str:
        """A short description of the destination, for messages."""
        ...

    async def ensure_collection(self, name: str) -> str:
        """The id of the collection named ``name`` (case-insensitive), created if missing."""
        ...

    async def submit(
        self, collection_id: str, filename: str, data: bytes, metadata: Mapping[str, str]
    ) -> Submitted:
        """Upload one file."""
        ...

    async def job_state(self, job_id: str) -> JobState:
        """The current state of an ingestion job."""
        ...

    async def chunk_count(self, document_id: str) -> int:
        """The number of chunks of a document's searchable version."""
        ...


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body["error"]["message"]
        if isinstance(message, str) and message:
            return message
    except (ValueError, KeyError, TypeError):
        pass
    text = response.text.strip()[:200]
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")


class HttpBackend:
    """Talks to a running ``ragd serve`` with an API key or an access token.

    The URL defaults to ``$RAGD_URL`` or ``http://127.0.0.1:8000``; the credential comes from
    ``$RAGD_API_KEY`` (sent as ``X-API-Key``) or ``$RAGD_TOKEN`` (``Authorization: Bearer``).
    Use it as an async context manager.
    """

    #: Retries of a 429/503 answer before the file is given up.
    RETRIES = 5

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise IngestError(f"--url must start with http:// or https:// (got {self.url!r})")
        api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        if api_key:
            headers = {"X-API-Key": api_key}
        elif token:
            headers = {"Authorization": f"Bearer {token}"}
        else:
            raise IngestError(
                f"no credential: set {API_KEY_ENV} (an API key) or {TOKEN_ENV} (an access "
                "token), or use --local with --tenant"
            )
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport,
            follow_redirects=False,
        )

    @property
    def target(self) -> str:
        """The server URL."""
        return self.url

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request, retrying 429/503; transport problems become IngestError."""
        for attempt in range(self.RETRIES + 1):
            try:
                response = await self._client.request(method, f"{API}{path}", **kwargs)
            except httpx.TransportError as exc:
                raise IngestError(
                    f"cannot reach the ragd server at {self.url}: {exc or type(exc).__name__}"
                    " (is `ragd serve` running? set --url or RAGD_URL)"
                ) from None
            if response.status_code in (401, 403):
                raise IngestError(
                    f"the server refused the credential ({_error_message(response)}); check "
                    f"{API_KEY_ENV} / {TOKEN_ENV}"
                )
            if response.status_code not in (429, 503) or attempt == self.RETRIES:
                return response
            try:
                delay = float(response.headers.get("retry-after", "1"))
            except ValueError:
                delay = 1.0
            await asyncio.sleep(min(max(delay, 0.1), 10.0))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, **kwargs)
        if response.status_code >= 400:
            raise IngestError(f"{method} {API}{path}: {_error_message(response)}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise IngestError(f"{method} {API}{path}: the answer is not a JSON object "
                              f"(is {self.url} a ragd server?)")
        return body

    async def _find_collection(self, name: str) -> str | None:
        key = name.strip().casefold()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = await self._json("GET", "/collections", params=params)
            for item in page.get("items", []):
                if str(item.get("name", "")).strip().casefold() == key:
                    return str(item["id"])
            cursor = page.get("next_cursor")
            if not cursor:
                return None

    async def ensure_collection(self, name: str) -> str:
        """Find the collection by name through the paginated list, or create it."""
        found = await self._find_collection(name)
        if found is not None:
            return found
        response = await self._request("POST", "/collections", json={"name": name})
        if response.status_code == 201:
            return str(response.json()["id"])
        if response.status_code == 409:  # created meanwhile by someone else
            found = await self._find_collection(name)
            if found is not None:
                return found
        raise IngestError(f"cannot create collection {name!r}: {_error_message(response)}")

    async def submit(
        self, collection_id: str, filename: str, data: bytes, metadata: Mapping[str, str]
    ) -> Submitted:
        """POST the file as multipart; the server sniffs its type."""
        form = {"collection_id": collection_id}
        if metadata:
            form["metadata"] = json.dumps(dict(metadata), ensure_ascii=False)
        response = await self._request(
            "POST", "/documents", data=form,
            files={"file": (filename, data, "application/octet-stream")},
        )
        if response.status_code not in (200, 202):
            return Submitted(error=_error_message(response))
        body = response.json()
        return Submitted(
            document_id=body.get("document_id"), job_id=body.get("job_id"),
            duplicate=bool(body.get("duplicate")),
        )

    async def job_state(self, job_id: str) -> JobState:
        """GET /jobs/{id}."""
        body = await self._json("GET", f"/jobs/{job_id}")
        return JobState(status=str(body.get("status")), error=body.get("error"))

    async def chunk_count(self, document_id: str) -> int:
        """GET /documents/{id}."""
        body = await self._json("GET", f"/documents/{document_id}")
        return int(body.get("chunk_count") or 0)


class LocalBackend:
    """Works on the data dir directly: opens the services, enqueues through the ingestion
    service and (``run_workers``) processes the jobs with a worker pool in this process.

    Several processes may share the data dir (``ragd serve``, ``ragd worker``); jobs are
    claimed under a lease, so whoever claims a job first runs it. With ``run_workers`` off
    the jobs stay queued for another process. Use it as an async context manager.
    """

    def __init__(self, settings: Settings, tenant: str, *, concurrency: int = 2,
                 run_workers: bool = True) -> None:
        self.settings = settings
        self.tenant = tenant
        self.concurrency = concurrency
        self.run_workers = run_workers
        self.tenant_id = ""
        self._stack = AsyncExitStack()
        self._services: Services | None = None
        self.pool: WorkerPool | None = None

    @property
    def target(self) -> str:
        """The data dir."""
        return str(self.settings.data_dir.resolve())

    @property
    def services(self) -> Services:
        """The open services (only inside ``async with``)."""
        if self._services is None:
            raise RuntimeError("LocalBackend is not open")
        return self._services

    async def __aenter__(self) -> LocalBackend:
        from ragd.container import build_workers, open_services, recover_indexes

        try:
            self._services = await self._stack.enter_async_context(open_services(self.settings))
            if not self.services.schema.ready:
                raise IngestError("the database schema is behind this version of ragd: run "
                                  "`ragd db upgrade` first")
            tenant = await self.services.store.get_tenant(self.tenant)
            if tenant is None:
                tenant = await self.services.store.get_tenant_by_name(self.tenant)
            if tenant is None:
                raise IngestError(f"no tenant named or with id {self.tenant!r} in {self.target}")
            if tenant.status != "active":
                raise IngestError(f"tenant {tenant.name!r} is {tenant.status}")
            self.tenant_id = tenant.id
            if self.run_workers:
                await recover_indexes(self.services)
                self.pool = build_workers(self.services, self.concurrency)
                self.pool.start()
                self._stack.push_async_callback(self.pool.stop)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def ensure_collection(self, name: str) -> str:
        """Find the collection in the tenant's catalog, or create it."""
        catalog = self.services.catalog
        found = await catalog.find_collection(self.tenant_id, name)
        if found is None:
            try:
                found = await catalog.create_collection(
                    self.tenant_id, name, description=None, metadata={}
                )
            except Conflict:
                found = await catalog.find_collection(self.tenant_id, name)
                if found is None:
                    raise
        return found.id

    async def submit(
        self, collection_id: str, filename: str, data: bytes, metadata: Mapping[str, str]
    ) -> Submitted:
        """``IngestionService.prepare`` then ``add``, as the upload route does."""
        ingestion = self.services.ingestion
        try:
            upload = await ingestion.prepare(
                data, filename=filename, declared_type=None, title=None,
                metadata=dict(metadata) or None,
            )
            accepted = await ingestion.add(self.tenant_id, collection_id, upload)
        except RagdError as exc:
            return Submitted(error=exc.message)
        job_id = accepted.job.id if accepted.job else accepted.document.job_id
        return Submitted(document_id=accepted.document.id, job_id=job_id,
                         duplicate=accepted.duplicate)

    async def job_state(self, job_id: str) -> JobState:
        """The job row from the queue."""
        job = await self.services.queue.get(self.tenant_id, job_id)
        if job is None:
            return JobState(status="failed", error="the job disappeared")
        return JobState(status=job.status, error=job.error)

    async def chunk_count(self, document_id: str) -> int:
        """The document row's chunk count."""
        document = await self.services.catalog.get_document(self.tenant_id, document_id)
        return 0 if document is None else document.chunk_count


# -- progress ------------------------------------------------------------------------------


class Reporter(Protocol):
    """Receives progress while :func:`ingest_files` runs."""

    def start(self, total: int, target: str) -> None:
        """The run begins with ``total`` files."""
        ...

    def file_done(self, result: FileResult) -> None:
        """A file reached its final state."""
        ...

    def stop(self) -> None:
        """The run is over."""
        ...


class SilentReporter:
    """Reports nothing."""

    def start(self, total: int, target: str) -> None:
        """Nothing."""

    def file_done(self, result: FileResult) -> None:
        """Nothing."""

    def stop(self) -> None:
        """Nothing."""


class ConsoleReporter:
    """A rich progress bar (files done/total, chunks, elapsed, chunks/s) on a terminal, or
    one plain line per file otherwise (pipes, CI, tests)."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.perf_counter
                 ) -> None:
        self.console = console
        self._clock = clock
        self._started = clock()
        self._done = 0
        self._total = 0
        self._chunks = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def _rate(self) -> float:
        elapsed = self._clock() - self._started
        return self._chunks / elapsed if elapsed > 0 else 0.0

    def start(self, total: int, target: str) -> None:
        """Open the bar (terminal) or print the plan (plain)."""
        self._started = self._clock()
        self._total = total
        if self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]ingest[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files"),
                TextColumn("{task.fields[chunks]} chunks"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[rate]:.1f} chunks/s"),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task("ingest", total=total, chunks=0, rate=0.0)
            self._progress.start()
        else:
            self.console.print(f"ingesting {total} file(s) into {target}", highlight=False,
                               soft_wrap=True)

    def file_done(self, result: FileResult) -> None:
        """Advance the bar, or print ``[done/total] outcome path (detail)``."""
        self._done += 1
        if result.outcome == "ingested":
            self._chunks += result.chunks
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, chunks=self._chunks, rate=self._rate())
            if result.outcome in ("failed", "skipped"):
                self._progress.console.print(
                    f"[yellow]{result.outcome}[/] {result.path}: {result.reason}",
                    highlight=False, soft_wrap=True,
                )
            return
        detail = {
            "ingested": f"{result.chunks} chunks",
            "duplicate": f"same content as document {result.document_id}",
            "queued": f"job {result.job_id}",
        }.get(result.outcome, result.reason or "")
        self.console.print(
            f"[{self._done}/{self._total}] {result.outcome:<9} {result.path} ({detail}) "
            f"{self._chunks} chunks, {self._rate():.1f} chunks/s",
            markup=False, highlight=False, soft_wrap=True,
        )

    def stop(self) -> None:
        """Close the bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def render_summary(summary: IngestSummary, console: Console) -> None:
    """Print the counts table, then a table of the failed and skipped files with reasons."""
    table = Table(title=f"ragd ingest: collection {summary.collection!r}", title_justify="left")
    table.add_column("result")
    table.add_column("files", justify="right")
    table.add_column("chunks", justify="right")
    for outcome in OUTCOMES:
        files = summary.count(outcome)
        if files or outcome in ("ingested", "duplicate", "failed"):
            chunks = str(summary.chunks) if outcome == "ingested" else ""
            table.add_row(outcome, str(files), chunks)
    table.add_section()
    table.add_row("total", str(len(summary.results)), str(summary.chunks))
    console.print(table)
    problems = [r for r in summary.results if r.outcome in ("failed", "skipped")]
    if problems:
        details = Table(title="not ingested", title_justify="left")
        details.add_column("file", overflow="fold")
        details.add_column("result")
        details.add_column("reason", overflow="fold")
        for r in problems:
            details.add_row(str(r.path), r.outcome, r.reason or "")
        console.print(details)
    console.print(
        f"ingested {summary.count('ingested')}, duplicates {summary.count('duplicate')}, "
        f"queued {summary.count('queued')}, failed {summary.count('failed')}, skipped "
        f"{summary.count('skipped')}; {summary.chunks} chunks in {summary.elapsed:.1f}s "
        f"({summary.throughput:.1f} chunks/s)",
        markup=False, highlight=False, soft_wrap=True,
    )


# -- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    index: int
    path: Path
    document_id: str
    job_id: str


async def ingest_files(
    backend: IngestBackend,
    collection: str,
    candidates: Sequence[Candidate],
    metadata: Mapping[str, str],
    *,
    wait: bool = True,
    wait_seconds: float | None = None,
    poll_interval: float = 0.25,
    reporter: Reporter | None = None,
) -> IngestSummary:
    """Upload ``candidates`` into ``collection`` and, with ``wait``, follow every job to its
    end (``wait_seconds`` at most; the files still running then count as failed).

    Files are uploaded one at a time while the server (or the local pool) already processes
    the earlier ones; finished jobs are collected between uploads.
    """
    reporter = reporter or SilentReporter()
    started = time.perf_counter()
    summary = IngestSummary(collection=collection)
    results: list[FileResult | None] = [None] * len(candidates)
    pending: list[_Pending] = []
    last_poll = time.perf_counter()

    def finish(index: int, result: FileResult) -> None:
        results[index] = result
        reporter.file_done(result)

    async def poll() -> None:
        nonlocal last_poll
        last_poll = time.perf_counter()
        for item in list(pending):
            state = await backend.job_state(item.job_id)
            if state.status not in FINISHED_JOBS:
                continue
            pending.remove(item)
            if state.status == "succeeded":
                chunks = await backend.chunk_count(item.document_id)
                finish(item.index, FileResult(item.path, "ingested", chunks,
                                              document_id=item.document_id, job_id=item.job_id))
            else:
                reason = state.error or f"job {state.status}"
                finish(item.index, FileResult(item.path, "failed", reason=reason,
                                              document_id=item.document_id, job_id=item.job_id))

    reporter.start(len(candidates), backend.target)
    try:
        collection_id = await backend.ensure_collection(collection)
        for index, candidate in enumerate(candidates):
            path = candidate.path
            if candidate.skip_reason is not None:
                finish(index, FileResult(path, "skipped", reason=candidate.skip_reason))
                continue
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                finish(index, FileResult(path, "failed", reason=f"cannot read: {exc}"))
                continue
            sent = await backend.submit(collection_id, path.name, data, metadata)
            if sent.error is not None or sent.document_id is None:
                finish(index, FileResult(path, "failed", reason=sent.error or "no document"))
            elif sent.duplicate:
                finish(index, FileResult(path, "duplicate", document_id=sent.document_id,
                                         job_id=sent.job_id))
            elif not wait or sent.job_id is None:
                finish(index, FileResult(path, "queued", document_id=sent.document_id,
                                         job_id=sent.job_id))
            else:
                pending.append(_Pending(index, path, sent.document_id, sent.job_id))
                if time.perf_counter() - last_poll >= poll_interval:
                    await poll()
        deadline = None if not wait_seconds else time.perf_counter() + wait_seconds
        while pending:
            await poll()
            if not pending:
                break
            if deadline is not None and time.perf_counter() >= deadline:
                for item in pending:
                    state = await backend.job_state(item.job_id)
                    finish(item.index, FileResult(
                        item.path, "failed",
                        reason=f"still {state.status} after {wait_seconds:g}s (job {item.job_id})",
                        document_id=item.document_id, job_id=item.job_id,
                    ))
                pending.clear()
                break
            await asyncio.sleep(poll_interval)
    finally:
        reporter.stop()
    summary.results = [r for r in results if r is not None]
    summary.elapsed = time.perf_counter() - started
    return summary
