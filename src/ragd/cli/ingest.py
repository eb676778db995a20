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
  optionally wait for the jobs (reporting each one's queue position and stage as they
  change), and return an :class:`IngestSummary` (one :class:`FileResult` per file:
  ingested, duplicate, queued, processing, failed or skipped). A file is *queued* or
  *processing* at the end when the run did not wait for it (``--no-wait``) or stopped waiting
  (``--timeout``): its job carries on, and the result names it.

Rates are measured over the run's own work: from the moment the first of its jobs left the
queue, not from the start of the command, and the time spent waiting for that is reported
beside them.

Exit status (:attr:`IngestSummary.exit_status`): 0 when every file is ingested, a duplicate
or skipped; 1 when a file failed; 3 when the wait timed out with files still queued or
processing and none failed; 2 for errors that stop the whole run (unknown path, unreachable
server, refused credentials, unknown tenant), raised as :class:`IngestError`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

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

Outcome = Literal["ingested", "duplicate", "queued", "processing", "failed", "skipped"]
OUTCOMES: tuple[Outcome, ...] = (
    "ingested", "duplicate", "queued", "processing", "failed", "skipped",
)
#: Exit status: some file failed.
EXIT_FAILED = 1
#: Exit status: the run stopped on an error (bad input, server unreachable, credential refused).
EXIT_ERROR = 2
#: Exit status: the wait timed out with files still queued or processing (and none failed).
EXIT_PENDING = 3


class IngestError(Exception):
    """A problem that stops the whole run (the command exits with :data:`EXIT_ERROR`)."""

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
    """Every file's result and the run's times.

    ``waited`` runs from the first upload to the moment the first of the run's jobs was seen
    out of the queue, ``processing`` from then to the last job seen finished (or to the end of
    the wait); both are None when the run followed no job (``--no-wait``, only duplicates).
    They are measured at the polls, so to within the poll interval.
    """

    collection: str
    results: list[FileResult] = field(default_factory=list)
    elapsed: float = 0.0
    waited: float | None = None
    processing: float | None = None
    #: The wait ended at ``--timeout`` with files still queued or processing.
    timed_out: bool = False

    def count(self, outcome: Outcome) -> int:
        """How many files ended with ``outcome``."""
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def chunks(self) -> int:
        """Chunks created by the files ingested in this run."""
        return sum(r.chunks for r in self.results if r.outcome == "ingested")

    @property
    def documents_per_second(self) -> float:
        """Files ingested per second of processing."""
        return self.count("ingested") / self.processing if self.processing else 0.0

    @property
    def chunks_per_second(self) -> float:
        """Chunks created per second of processing."""
        return self.chunks / self.processing if self.processing else 0.0

    @property
    def any_failed(self) -> bool:
        """True when at least one file failed."""
        return any(r.outcome == "failed" for r in self.results)

    @property
    def pending(self) -> list[FileResult]:
        """The files whose jobs were still queued or processing when the wait timed out."""
        if not self.timed_out:
            return []
        return [r for r in self.results if r.outcome in ("queued", "processing")]

    @property
    def exit_status(self) -> int:
        """0, :data:`EXIT_FAILED` when a file failed (whatever else happened), else
        :data:`EXIT_PENDING` when the wait timed out with work pending."""
        if self.any_failed:
            return EXIT_FAILED
        if self.pending:
            return EXIT_PENDING
        return 0


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
    """A job's status; while queued, how many of the tenant's queued jobs are ahead of it
    (None when the server does not say); while running, its stage and the stage's progress;
    once failed, why."""

    status: str
    error: str | None = None
    stage: str | None = None
    done: int = 0
    total: int = 0
    position: int | None = None

    @property
    def finished(self) -> bool:
        """Nothing more will happen to the job."""
        return self.status in FINISHED_JOBS

    @property
    def label(self) -> str:
        """``queued``, ``processing`` (a running job) or the finished status."""
        return "processing" if self.status == "running" else self.status

    def detail(self) -> str:
        """Where it stands: ``12 jobs ahead``, ``next in line``, ``embed 3/10``, ``starting``;
        empty when there is nothing to add to the label."""
        if self.status == "queued":
            if self.position is None:
                return ""
            return "next in line" if self.position == 0 else (
                f"{_plural(self.position, 'job')} ahead"
            )
        if self.status == "running":
            if self.stage is None:
                return "starting"
            return f"{self.stage} {self.done}/{self.total}" if self.total else self.stage
        return ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


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
        """The current state of an ingestion job (with its queue position while queued)."""
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


def _count(value: object) -> int | None:
    """A non-negative integer from a JSON answer, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


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
        """GET /jobs/{id} (``queue_position`` is missing from servers before it existed)."""
        body = await self._json("GET", f"/jobs/{job_id}")
        progress = body.get("progress")
        if not isinstance(progress, dict):
            progress = {}
        stage = body.get("stage")
        return JobState(
            status=str(body.get("status")), error=body.get("error"),
            stage=stage if isinstance(stage, str) else None,
            done=_count(progress.get("done")) or 0, total=_count(progress.get("total")) or 0,
            position=_count(body.get("queue_position")),
        )

    async def chunk_count(self, document_id: str) -> int:
        """GET /documents/{id}."""
        body = await self._json("GET", f"/documents/{document_id}")
        return int(body.get("chunk_count") or 0)


class LocalBackend:
    """Works on the data dir directly: opens the services, enqueues through the ingestion
    service and (``run_workers``) processes the jobs with a worker pool in this process.

    The pool claims only the jobs this backend enqueued (its claims are restricted to their
    ids), so a backlog in the shared queue, other tenants' or an earlier run's, is neither
    waited for nor processed here: it stays for ``ragd serve`` and ``ragd worker``, which
    may also claim this run's jobs (jobs are claimed under a lease: whoever claims a job
    first runs it). With ``run_workers`` off the jobs stay queued for another process. Use
    it as an async context manager.
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
        #: The unfinished jobs this backend enqueued, oldest first (a dict keeps the order),
        #: and how many of them one claim may name.
        self._own: dict[str, None] = {}
        self._claim_limit = 0

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
        from ragd.jobs.queue import MAX_CLAIM_IDS

        self._claim_limit = MAX_CLAIM_IDS

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
                self.pool = build_workers(self.services, self.concurrency, only=self._claimable)
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

    def _claimable(self) -> list[str]:
        """What the pool may claim: this backend's oldest unfinished jobs (claim order)."""
        return list(itertools.islice(self._own, self._claim_limit))

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
        if accepted.job is not None and self.pool is not None:
            self._own[accepted.job.id] = None
            self.pool.wake()  # the enqueue woke it before the id was claimable
        return Submitted(document_id=accepted.document.id, job_id=job_id,
                         duplicate=accepted.duplicate)

    async def job_state(self, job_id: str) -> JobState:
        """The job row from the queue, with its position while queued."""
        queue = self.services.queue
        position = await queue.position(self.tenant_id, job_id)
        job = await queue.get(self.tenant_id, job_id)
        if job is None:
            self._own.pop(job_id, None)
            return JobState(status="failed", error="the job disappeared")
        state = JobState(
            status=job.status, error=job.error, stage=job.stage, done=job.progress_done,
            total=job.progress_total, position=position if job.status == "queued" else None,
        )
        if state.finished:
            self._own.pop(job_id, None)
        return state

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

    def file_state(self, path: Path, job_id: str, state: JobState) -> None:
        """The job of a file being waited for changed: status, stage, progress or queue
        position (called once when first seen, then on every change)."""
        ...

    def work_started(self, waited: float) -> None:
        """The first of the run's jobs left the queue, ``waited`` seconds after the first
        upload: rates count from now."""
        ...

    def file_done(self, result: FileResult) -> None:
        """A file reached its final state (or the run stopped following it)."""
        ...

    def stop(self) -> None:
        """The run is over."""
        ...


class SilentReporter:
    """Reports nothing."""

    def start(self, total: int, target: str) -> None:
        """Nothing."""

    def file_state(self, path: Path, job_id: str, state: JobState) -> None:
        """Nothing."""

    def work_started(self, waited: float) -> None:
        """Nothing."""

    def file_done(self, result: FileResult) -> None:
        """Nothing."""

    def stop(self) -> None:
        """Nothing."""


class _Bar(Progress):
    """The progress bar with a status line under it (the files in flight)."""

    status = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        if self.status:
            yield Text(self.status, no_wrap=True, overflow="ellipsis")


class ConsoleReporter:
    """Progress on a console.

    On a terminal: a bar (files done/total, chunks, elapsed, chunks/s) with a status line
    under it: how many files are queued and how many jobs are ahead of the next one, and
    each running file's stage. Otherwise (pipes, CI logs, tests) plain lines, one per change,
    never a redrawn bar:

    * a file's job first seen, or its status or stage changed:
      ``queued     a.pdf: 12 jobs ahead (job <id>)``,
      ``processing a.pdf: embed 0/40 (job <id>)``;
    * counts that move without a change of stage are throttled to one line per ``interval``
      seconds: a running file's progress (``embed 32/40``), and for the queued files one
      summary (``waiting: 14 files queued, the first with 3 jobs ahead``);
    * the first job leaving the queue (``started after 12.3s in the queue``), and each
      file's end (``[done/total] outcome path (detail) chunks, chunks/s``).

    Rates count from the moment the run's first job left the queue; ``clock`` is injected
    for tests.
    """

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.perf_counter,
                 interval: float = 5.0) -> None:
        self.console = console
        self._clock = clock
        self._interval = interval
        self._work_started: float | None = None
        self._done = 0
        self._total = 0
        self._chunks = 0
        self._progress: _Bar | None = None
        self._task: TaskID | None = None
        #: The files being waited for: job id -> (path, latest state), in upload order.
        self._flight: dict[str, tuple[Path, JobState]] = {}
        #: When each file's last line was printed; the last queue summary, and when a line
        #: about the queued files was printed last.
        self._printed: dict[str, float] = {}
        self._waiting: str | None = None
        self._waiting_at: float | None = None

    def _rate(self) -> float:
        if self._work_started is None:
            return 0.0
        elapsed = self._clock() - self._work_started
        return self._chunks / elapsed if elapsed > 0 else 0.0

    def _say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def start(self, total: int, target: str) -> None:
        """Open the bar (terminal) or print the plan (plain)."""
        self._total = total
        if self.console.is_terminal:
            self._progress = _Bar(
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
            self._say(f"ingesting {_plural(total, 'file')} into {target}")

    def _queue_summary(self) -> str | None:
        positions = [
            state.position for _, state in self._flight.values() if state.status == "queued"
        ]
        if not positions:
            return None
        known = [p for p in positions if p is not None]
        ahead = ""
        if known:
            first = min(known)
            ahead = (", the first next in line" if first == 0
                     else f", the first with {_plural(first, 'job')} ahead")
        return f"{_plural(len(positions), 'file')} queued{ahead}"

    def _status_line(self) -> str:
        parts = [
            f"{path.name}: {state.detail()}"
            for path, state in self._flight.values() if state.status == "running"
        ]
        queued = self._queue_summary()
        if queued:
            parts.append(queued)
        return " | ".join(parts)

    def file_state(self, path: Path, job_id: str, state: JobState) -> None:
        """Update the status line (terminal) or print the change (plain)."""
        previous = self._flight.get(job_id)
        self._flight[job_id] = (path, state)
        if self._progress is not None:
            self._progress.status = self._status_line()
            self._progress.refresh()
            return
        now = self._clock()
        moved = previous is None or (previous[1].status, previous[1].stage) != (
            state.status, state.stage
        )
        if moved or (state.status == "running"
                     and now - self._printed.get(job_id, now) >= self._interval):
            detail = state.detail()
            self._say(f"{state.label:<10} {path}{': ' + detail if detail else ''} "
                      f"(job {job_id})")
            self._printed[job_id] = now
            if state.status == "queued":
                self._waiting_at = now
            return
        summary = self._queue_summary() if state.status == "queued" else None
        last = now if self._waiting_at is None else self._waiting_at
        if summary and summary != self._waiting and now - last >= self._interval:
            self._say(f"waiting: {summary}")
            self._waiting, self._waiting_at = summary, now

    def work_started(self, waited: float) -> None:
        """Rates count from now."""
        self._work_started = self._clock()
        if self._progress is None:
            self._say(f"started after {waited:.1f}s in the queue")

    def file_done(self, result: FileResult) -> None:
        """Advance the bar, or print ``[done/total] outcome path (detail)``."""
        self._done += 1
        if result.job_id is not None:
            self._flight.pop(result.job_id, None)
        if result.outcome == "ingested":
            self._chunks += result.chunks
        if self._progress is not None and self._task is not None:
            self._progress.status = self._status_line()
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
        }.get(result.outcome, result.reason or "")
        if result.outcome in ("queued", "processing"):
            detail = ", ".join(x for x in (result.reason, f"job {result.job_id}") if x)
        self._say(
            f"[{self._done}/{self._total}] {result.outcome:<10} {result.path} ({detail}) "
            f"{self._chunks} chunks, {self._rate():.1f} chunks/s"
        )

    def stop(self) -> None:
        """Close the bar."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def render_summary(summary: IngestSummary, console: Console) -> None:
    """Print the counts table, a table of the failed and skipped files with reasons, one of
    the files still pending at the timeout with their job ids, then the counts and times."""
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
    if summary.pending:
        pending = Table(title="not finished yet (their jobs carry on)", title_justify="left")
        pending.add_column("file", overflow="fold")
        pending.add_column("job", overflow="fold")
        pending.add_column("state", overflow="fold")
        for r in summary.pending:
            pending.add_row(str(r.path), r.job_id or "", r.reason or r.outcome)
        console.print(pending)
    counts = ", ".join(
        f"{'duplicates' if outcome == 'duplicate' else outcome} {summary.count(outcome)}"
        for outcome in OUTCOMES
    )
    console.print(f"{counts}; {summary.chunks} chunks", markup=False, highlight=False,
                  soft_wrap=True)
    if summary.waited is not None and summary.processing is not None:
        console.print(
            f"waited {summary.waited:.1f}s in the queue, then processed for "
            f"{summary.processing:.1f}s: {summary.documents_per_second:.2f} docs/s, "
            f"{summary.chunks_per_second:.1f} chunks/s ({summary.elapsed:.1f}s in all)",
            markup=False, highlight=False, soft_wrap=True,
        )
    elif summary.timed_out:
        console.print(
            f"no job left the queue in {summary.elapsed:.1f}s", markup=False, highlight=False,
            soft_wrap=True,
        )


# -- the run -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    index: int
    path: Path
    document_id: str
    job_id: str
    state: JobState | None = None


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
    clock: Callable[[], float] = time.perf_counter,
) -> IngestSummary:
    """Upload ``candidates`` into ``collection`` and, with ``wait``, follow every job to its
    end, ``wait_seconds`` at most after the last upload: the files whose jobs are then still
    queued or running end as ``queued`` or ``processing`` (their jobs carry on) and the
    summary is ``timed_out``.

    Files are uploaded one at a time while the server (or the local pool) already processes
    the earlier ones; the jobs are polled between uploads, each change of a job's state goes
    to the reporter.
    """
    reporter = reporter or SilentReporter()
    started = clock()
    summary = IngestSummary(collection=collection)
    results: list[FileResult | None] = [None] * len(candidates)
    pending: list[_Pending] = []
    last_poll = clock()
    first_upload: float | None = None
    work_started: float | None = None
    last_finished: float | None = None

    def finish(index: int, result: FileResult) -> None:
        results[index] = result
        reporter.file_done(result)

    async def poll() -> None:
        nonlocal last_poll, work_started, last_finished
        last_poll = clock()
        for item in list(pending):
            state = await backend.job_state(item.job_id)
            if work_started is None and state.status != "queued":
                work_started = clock()
                reporter.work_started(work_started - (first_upload or started))
            if not state.finished:
                if state != item.state:
                    item.state = state
                    reporter.file_state(item.path, item.job_id, state)
                continue
            pending.remove(item)
            last_finished = clock()
            if state.status == "succeeded":
                chunks = await backend.chunk_count(item.document_id)
                finish(item.index, FileResult(item.path, "ingested", chunks,
                                              document_id=item.document_id, job_id=item.job_id))
            else:
                reason = state.error or f"job {state.status}"
                finish(item.index, FileResult(item.path, "failed", reason=reason,
                                              document_id=item.document_id, job_id=item.job_id))

    def give_up(item: _Pending) -> None:
        """The wait is over and the job is not: say where it stands."""
        state = item.state or JobState(status="queued")
        outcome: Outcome = "queued" if state.status == "queued" else "processing"
        reason = f"still {outcome} after {wait_seconds:g}s"
        if state.detail():
            reason += (", " if outcome == "queued" else ": ") + state.detail()
        finish(item.index, FileResult(item.path, outcome, reason=reason,
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
            if first_upload is None:
                first_upload = clock()
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
                if clock() - last_poll >= poll_interval:
                    await poll()
        deadline = None if not wait_seconds else clock() + wait_seconds
        while pending:
            await poll()
            if not pending:
                break
            if deadline is not None and clock() >= deadline:
                summary.timed_out = True
                for item in pending:
                    give_up(item)
                pending.clear()
                break
            await asyncio.sleep(poll_interval)
    finally:
        reporter.stop()
    end = clock()
    summary.results = [r for r in results if r is not None]
    summary.elapsed = end - started
    if work_started is not None:
        summary.waited = work_started - (first_upload or started)
        until = end if summary.timed_out or last_finished is None else last_finished
        summary.processing = until - work_started
    return summary
