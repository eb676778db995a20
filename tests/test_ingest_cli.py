"""`ragd ingest`: --local on a temp data dir, HTTP against a real `ragd serve` or the app
in-process, progress and the summary, bad input."""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from ragd.cli import app as cli
from ragd.cli.ingest import (
    EXIT_FAILED,
    EXIT_PENDING,
    ConsoleReporter,
    FileResult,
    HttpBackend,
    IngestError,
    IngestSummary,
    JobState,
    Outcome,
    discover,
    ingest_files,
    parse_metadata,
    render_summary,
)
from ragd.container import open_services
from tests.conftest import _MODEL_CACHE, STRONG_PASSWORD, TEST_SECRET, make_settings
from tests.fake_clock import FakeClock
from tests.ingestion.conftest import app_client, new_tenant, upload_text
from tests.processes import free_port, wait_ready
from tests.shared_data import EVAL
from tests.waiting import HANG_TIMEOUT, eventually

FAQ = EVAL / "debian-faq" / "source" / "faq"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGD_JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("RAGD_INGESTION__POLL_INTERVAL_SECONDS", "0.05")
    if _MODEL_CACHE:  # the session's prepared embedder, shared with the other tests
        monkeypatch.setenv("RAGD_MODELS__CACHE_DIR", str(_MODEL_CACHE[0]))


def _small_text(path: Path) -> Path:
    """The first ~40 lines of the FAQ's text version (real content, few chunks)."""
    lines = (FAQ / "txt" / "debian-faq.en.txt").read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    return path


def _no_traceback(output: str) -> None:
    assert "Traceback" not in output, output


# -- local ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("eval_data")
def test_local_ingests_reports_duplicates_and_failures(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(FAQ / "html" / "basic-defs.en.html", docs / "basic-defs.html")
    shutil.copy(FAQ / "html" / "basic-defs.en.html", docs / "copy-of-basic-defs.html")
    _small_text(docs / "intro.txt")
    (docs / "blob.bin").write_bytes(b"\x00\x01\x02 not a document")
    (docs / ".hidden.txt").write_text("hidden")
    created = runner.invoke(cli, ["admin", "create-tenant", "Acme", "--data-dir", str(data_dir)])
    assert created.exit_code == 0, created.output

    result = runner.invoke(cli, [
        "ingest", str(docs), "--collection", "FAQ", "--local", "--tenant", "acme",
        "--data-dir", str(data_dir), "-m", "source=debian", "-m", "year=2024",
    ])
    _no_traceback(result.output)
    assert result.exit_code == 1, result.output  # one file failed
    assert "ingested 2, duplicates 1, queued 0, processing 0, failed 1, skipped 1" in result.output
    assert "blob.bin" in result.output and "not supported" in result.output
    assert "hidden file" in result.output
    assert "[5/5]" in result.output  # plain progress lines when not on a terminal

    async def documents() -> list[Any]:
        async with open_services(make_settings(data_dir)) as services:
            tenant = await services.store.get_tenant_by_name("Acme")
            assert tenant is not None
            collection = await services.catalog.find_collection(tenant.id, "faq")
            assert collection is not None
            page = await services.catalog.list_documents(
                tenant.id, collection_id=collection.id, status=None, limit=50, cursor=None
            )
            return list(page.items)

    found = asyncio.run(documents())
    assert sorted(d.filename for d in found) == ["basic-defs.html", "intro.txt"]
    for document in found:
        assert document.status == "ready" and document.chunk_count >= 1, document
        assert dict(document.metadata) == {"source": "debian", "year": "2024"}

    # Again with only good files: all duplicates now, nothing failed -> exit 0.
    again = runner.invoke(cli, [
        "ingest", str(docs / "basic-defs.html"), str(docs / "intro.txt"), "--collection",
        "faq", "--local", "--tenant", "Acme", "--data-dir", str(data_dir),
    ])
    assert again.exit_code == 0, again.output
    assert "ingested 0, duplicates 2, queued 0, processing 0, failed 0" in again.output


async def _jobs(data_dir: Path) -> dict[tuple[str, str], list[Any]]:
    """Every job in the data dir by (tenant name, collection name)."""
    found: dict[tuple[str, str], list[Any]] = {}
    async with open_services(make_settings(data_dir)) as services:
        for name in ("Acme", "Globex"):
            tenant = await services.store.get_tenant_by_name(name)
            assert tenant is not None
            names = {}
            for collection in ("faq", "archive", "theirs"):
                found_collection = await services.catalog.find_collection(tenant.id, collection)
                if found_collection is not None:
                    names[found_collection.id] = collection
            for job in (await services.queue.list(tenant.id, limit=500)).items:
                document = await services.catalog.get_document(
                    tenant.id, job.payload["document_id"]
                )
                assert document is not None
                found.setdefault((name, names[document.collection_id]), []).append(job)
    return found


@pytest.mark.usefixtures("eval_data")
def test_local_runs_only_the_jobs_it_queued(tmp_path: Path) -> None:
    """A backlog in the shared queue (another tenant's jobs, and this tenant's from an earlier
    run) is older than this run's jobs: --local neither runs nor waits for it."""
    data_dir = tmp_path / "data"
    html = sorted((FAQ / "html").glob("*.html"))
    for name in ("Acme", "Globex"):
        created = runner.invoke(cli, ["admin", "create-tenant", name, "--data-dir",
                                      str(data_dir)])
        assert created.exit_code == 0, created.output
    for tenant, collection, files in (("globex", "theirs", html[:3]),
                                      ("acme", "archive", html[3:4])):
        queued = runner.invoke(cli, [
            "ingest", *map(str, files), "--collection", collection, "--local", "--tenant",
            tenant, "--no-wait", "--data-dir", str(data_dir),
        ])
        assert queued.exit_code == 0, queued.output
        assert f"queued {len(files)}," in queued.output
        assert "the unfinished jobs run when `ragd serve` or `ragd worker`" in queued.output

    result = runner.invoke(cli, [
        "ingest", *map(str, html[4:6]), "--collection", "faq", "--local", "--tenant", "acme",
        "--data-dir", str(data_dir),
    ])
    _no_traceback(result.output)
    assert result.exit_code == 0, result.output
    assert "ingested 2, duplicates 0, queued 0, processing 0, failed 0" in result.output
    assert re.search(r"waited \d+\.\ds in the queue, then processed for \d+\.\ds: "
                     r"\d+\.\d\d docs/s, \d+\.\d chunks/s", result.output), result.output

    jobs = asyncio.run(_jobs(data_dir))
    assert [j.status for j in jobs[("Acme", "faq")]] == ["succeeded", "succeeded"]
    backlog = jobs[("Globex", "theirs")] + jobs[("Acme", "archive")]
    assert len(backlog) == 4
    assert all(j.status == "queued" and j.attempts == 0 for j in backlog), backlog


async def test_timeout_reports_files_still_queued_or_processing(tmp_path: Path) -> None:
    """No worker runs in the server, so nothing starts unless the test claims it, and the
    clock moves only when the test moves it: waits, positions and rates are exact."""
    files = []
    for i, source in enumerate(sorted((FAQ / "html").glob("*.html"))[:3]):
        files.append(tmp_path / f"{i}-{source.name}")
        shutil.copy(source, files[-1])
    candidates = discover(files, recursive=False, globs=[], max_bytes=10 << 20)
    clock = FakeClock(0.0)
    out = io.StringIO()
    reporter = ConsoleReporter(Console(file=out, width=300), clock=clock, interval=5)
    async with app_client(tmp_path / "data", ingestion={"workers": 0}) as client:
        queue = client.app.state.services.queue  # type: ignore[attr-defined]
        acme, globex = await new_tenant(client), await new_tenant(client)
        # The backlog: another tenant's job (never counted) and an older one of acme's own.
        await upload_text(client, globex, "g", "Globex text about valves.")
        older = (await upload_text(client, acme, "a", "Acme text about pumps.")).json()
        token = acme.headers["Authorization"].removeprefix("Bearer ")
        transport = httpx.ASGITransport(app=client.app, client=("203.0.113.7", 50000))
        async with HttpBackend("http://ragd.test", token=token, transport=transport) as http:
            run = asyncio.create_task(ingest_files(
                http, "faq", candidates, {}, wait_seconds=45, poll_interval=0.01,
                reporter=reporter, clock=clock,
            ))
            await eventually(lambda: out.getvalue().count("\nqueued ") == 3, what="3 queued")
            page = await queue.list(acme.tenant_id, status="queued")
            ids = [job.id for job in reversed(page.items) if job.id != older["job_id"]]
            for i, (path, job_id) in enumerate(zip(files, ids, strict=True)):
                ahead = "1 job ahead" if i == 0 else f"{i + 1} jobs ahead"
                assert f"queued     {path}: {ahead} (job {job_id})" in out.getvalue()

            # 30 s later a worker takes the first file and reports its stage.
            clock.now = 30.0
            claimed = await queue.claim("test-worker", ["ingest"], job_ids=ids[:1])
            assert claimed is not None
            assert await queue.set_stage(ids[0], "test-worker", "embed", 3, 10)
            await eventually(lambda: "embed 3/10" in out.getvalue(), what="stage shown")
            await eventually(lambda: "the first with 1 job ahead" in out.getvalue(),
                             what="the queue summary")

            clock.now = 50.0  # past the 45 s timeout
            summary = await run
        assert await queue.position(acme.tenant_id, older["job_id"]) == 0

    text = out.getvalue()
    assert f"processing {files[0]}: embed 3/10 (job {ids[0]})" in text
    assert "started after 30.0s in the queue" in text
    assert [(r.outcome, r.reason, r.job_id) for r in summary.results] == [
        ("processing", "still processing after 45s: embed 3/10", ids[0]),
        ("queued", "still queued after 45s, 1 job ahead", ids[1]),
        ("queued", "still queued after 45s, 2 jobs ahead", ids[2]),
    ]
    assert summary.timed_out and summary.exit_status == EXIT_PENDING == 3
    assert (summary.waited, summary.processing) == (30.0, 20.0)
    assert f"[1/3] processing {files[0]} (still processing after 45s: embed 3/10, job " in text

    rendered = io.StringIO()
    render_summary(summary, Console(file=rendered, width=300))
    table = rendered.getvalue()
    assert "ingested 0, duplicates 0, queued 2, processing 1, failed 0, skipped 0" in table
    assert "waited 30.0s in the queue, then processed for 20.0s: 0.00 docs/s" in table
    assert "not finished yet" in table and all(job_id in table for job_id in ids)


# -- HTTP ----------------------------------------------------------------------------------


@contextmanager
def _serve(data_dir: Path, **env_vars: str) -> Iterator[str]:
    """A real ``ragd serve`` on a free port (``env_vars``: more RAGD_* settings); yields its
    URL and stops it at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(
        RAGD_JWT_SECRET=TEST_SECRET, RAGD_BOOTSTRAP_ADMIN="false",
        RAGD_INGESTION__POLL_INTERVAL_SECONDS="0.05", **env_vars,
    )
    if _MODEL_CACHE:
        env["RAGD_MODELS__CACHE_DIR"] = str(_MODEL_CACHE[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragd", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=HANG_TIMEOUT)


def _api_key(http: httpx.Client, tenant: str) -> str:
    """Register a tenant and return a new API key of its admin."""
    registered = http.post("/api/v1/auth/register", json={
        "email": f"cli@{tenant.lower()}.example.com", "password": STRONG_PASSWORD,
        "tenant_name": tenant,
    })
    assert registered.status_code == 201, registered.text
    token = registered.json()["access_token"]
    created = http.post("/api/v1/auth/api-keys", json={"name": "ingest"},
                        headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


@pytest.mark.slow
@pytest.mark.usefixtures("eval_data")
def test_http_ingests_a_directory_with_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "site"
    (tree / "sub").mkdir(parents=True)
    (tree / ".cache").mkdir()
    shutil.copy(FAQ / "html" / "basic-defs.en.html", tree / "basic-defs.html")
    shutil.copy(FAQ / "html" / "faqinfo.en.html", tree / "sub" / "faqinfo.html")
    shutil.copy(FAQ / "html" / "choosing.en.html", tree / ".cache" / "choosing.html")
    _small_text(tree / "sub" / "intro.txt")  # excluded by --glob
    with _serve(tmp_path / "data") as base, httpx.Client(base_url=base, timeout=30) as http:
        key = _api_key(http, "CLI")

        monkeypatch.setenv("RAGD_URL", base)
        monkeypatch.setenv("RAGD_API_KEY", key)
        result = runner.invoke(cli, [
            "ingest", str(tree), "--collection", "web", "--recursive", "--glob", "*.html",
            "--metadata", "site=faq", "--wait",
        ])
        _no_traceback(result.output)
        assert result.exit_code == 0, result.output
        assert ("ingested 2, duplicates 0, queued 0, processing 0, failed 0, skipped 0"
                in result.output)
        assert key not in result.output

        headers = {"X-API-Key": key}
        collections = http.get("/api/v1/collections", headers=headers).json()["items"]
        assert [c["name"] for c in collections] == ["web"]
        listed = http.get("/api/v1/documents", headers=headers,
                          params={"collection_id": collections[0]["id"]}).json()["items"]
        assert sorted(d["filename"] for d in listed) == ["basic-defs.html", "faqinfo.html"]
        assert all(d["status"] == "ready" and d["chunk_count"] >= 1 for d in listed)
        assert all(d["metadata"] == {"site": "faq"} for d in listed)

        # --no-wait: the existing collection is found, the duplicate answered at once.
        quick = runner.invoke(cli, [
            "ingest", str(tree / "basic-defs.html"), "--collection", "WEB", "--no-wait",
        ])
        assert quick.exit_code == 0, quick.output
        assert "duplicates 1" in quick.output

        monkeypatch.setenv("RAGD_API_KEY", "ragd_not-a-real-key")
        refused = runner.invoke(cli, ["ingest", str(tree), "--collection", "web"])
        assert refused.exit_code == 2, refused.output
        assert "refused the credential" in refused.output
        _no_traceback(refused.output)


@pytest.mark.slow
@pytest.mark.usefixtures("eval_data")
def test_http_timeout_exits_3_naming_the_jobs_still_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server runs no worker, so the jobs cannot start: the timeout is certain to pass
    with both files queued, whatever the machine's speed."""
    files = sorted((FAQ / "html").glob("*.html"))[:2]
    with (_serve(tmp_path / "data", RAGD_INGESTION__WORKERS="0") as base,
          httpx.Client(base_url=base, timeout=30) as http):
        key = _api_key(http, "Waiting")
        monkeypatch.setenv("RAGD_URL", base)
        monkeypatch.setenv("RAGD_API_KEY", key)
        result = runner.invoke(cli, [
            "ingest", *map(str, files), "--collection", "faq", "--timeout", "0.5",
        ])
        _no_traceback(result.output)
        assert result.exit_code == EXIT_PENDING == 3, result.output
        assert "ingested 0, duplicates 0, queued 2, processing 0, failed 0" in result.output
        assert "still queued after 0.5s, next in line" in result.output
        assert "still queued after 0.5s, 1 job ahead" in result.output
        assert "no job left the queue" in result.output
        assert "follow them with GET /api/v1/jobs/<job id>" in result.output
        jobs = http.get("/api/v1/jobs", headers={"X-API-Key": key}).json()["items"]
        assert len(jobs) == 2
        for position, job in enumerate(reversed(jobs)):  # oldest first
            assert job["id"] in result.output
            detail = http.get(f"/api/v1/jobs/{job['id']}", headers={"X-API-Key": key}).json()
            assert (detail["status"], detail["queue_position"]) == ("queued", position)


# -- bad input -----------------------------------------------------------------------------


def test_nonexistent_path_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pdf"
    result = runner.invoke(cli, ["ingest", str(missing), "--collection", "c", "--local",
                                 "--tenant", "t", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert f"no such file or directory: {missing}" in result.output
    _no_traceback(result.output)


def test_local_needs_a_tenant(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["ingest", str(tmp_path), "--collection", "c", "--local"])
    assert result.exit_code == 2
    assert "--local needs --tenant" in result.output


def test_local_unknown_tenant_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello there")
    result = runner.invoke(cli, ["ingest", str(tmp_path / "a.txt"), "--collection", "c",
                                 "--local", "--tenant", "ghost", "--data-dir",
                                 str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert "no tenant named or with id 'ghost'" in result.output
    _no_traceback(result.output)


def test_unreachable_url_exits_2_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text("hello there")
    monkeypatch.setenv("RAGD_API_KEY", "ragd_whatever")
    url = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(cli, ["ingest", str(tmp_path / "a.txt"), "--collection", "c",
                                 "--url", url])
    assert result.exit_code == 2, result.output
    assert f"cannot reach the ragd server at {url}" in result.output
    _no_traceback(result.output)


def test_http_without_credential_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello there")
    result = runner.invoke(cli, ["ingest", str(tmp_path / "a.txt"), "--collection", "c"])
    assert result.exit_code == 2
    assert "RAGD_API_KEY" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "novalue"], "expected KEY=VALUE"),
        (["-m", "=x"], "expected KEY=VALUE"),
        (["--collection", "  "], "--collection must not be blank"),
        (["--url", "http://x", "--local", "--tenant", "t"], "exclude each other"),
        (["--tenant", "t"], "--tenant only applies with --local"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a.txt").write_text("hello there")
    base = ["ingest", str(tmp_path / "a.txt")]
    if "--collection" not in args:
        base += ["--collection", "c"]
    result = runner.invoke(cli, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_empty_directory_without_recursive_exits_2(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("hello")
    result = runner.invoke(cli, ["ingest", str(tmp_path), "--collection", "c", "--local",
                                 "--tenant", "t", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert "no files to ingest (add --recursive?)" in result.output


# -- discovery and metadata ----------------------------------------------------------------


def test_discover_applies_glob_hidden_recursion_and_size(tmp_path: Path) -> None:
    (tmp_path / "d" / "deep").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    for name in ["a.pdf", "b.txt", ".c.pdf", "d/e.pdf", "d/deep/f.PDF", ".git/g.pdf",
                 "big.pdf", "zero.pdf"]:
        (tmp_path / name).write_bytes(b"x" * (50 if name == "big.pdf" else 5)
                                      if name != "zero.pdf" else b"")
    flat = discover([tmp_path], recursive=False, globs=["*.pdf"], max_bytes=10)
    assert [(c.path.name, c.skip_reason) for c in flat] == [
        (".c.pdf", "hidden file"), ("a.pdf", None),
        ("big.pdf", "50 bytes is over the 10 bytes upload limit"),
        ("zero.pdf", "empty file"),
    ]
    deep = discover([tmp_path, tmp_path / "a.pdf"], recursive=True, globs=["*.pdf", "*.PDF"],
                    max_bytes=100)
    names = [c.path.relative_to(tmp_path).as_posix() for c in deep]
    assert names == [".c.pdf", "a.pdf", "big.pdf", "zero.pdf", "d/e.pdf", "d/deep/f.PDF"]
    # A file named explicitly is taken even when hidden or outside the glob.
    explicit = discover([tmp_path / ".c.pdf", tmp_path / "b.txt"], recursive=False,
                        globs=["*.pdf"], max_bytes=100)
    assert [(c.path.name, c.skip_reason) for c in explicit] == [(".c.pdf", None),
                                                               ("b.txt", None)]
    with pytest.raises(IngestError, match="no such file or directory"):
        discover([tmp_path / "missing"], recursive=False, globs=[], max_bytes=100)


def test_parse_metadata() -> None:
    assert parse_metadata(["a=1", "b=x=y", "a=2", "c="]) == {"a": "2", "b": "x=y", "c": ""}
    with pytest.raises(IngestError, match="keys must be"):
        parse_metadata(["k" * 65 + "=v"])


def test_progress_bar_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    reporter = ConsoleReporter(console)
    reporter.start(3, "somewhere")
    reporter.file_state(Path("c.pdf"), "jc", JobState("running", stage="embed", done=3, total=9))
    reporter.file_state(Path("d.pdf"), "jd", JobState("queued", position=7))
    reporter.file_done(FileResult(Path("a.html"), "ingested", 12))
    reporter.file_done(FileResult(Path("b.bin"), "failed", reason="unsupported"))
    reporter.stop()
    text = buffer.getvalue()
    assert "2/3" in text and "12 chunks" in text and "chunks/s" in text
    assert "failed" in text and "unsupported" in text
    assert "c.pdf: embed 3/9 | 1 file queued, the first with 7 jobs ahead" in text


def test_plain_progress_is_one_line_per_change_with_moving_counts_throttled() -> None:
    """For CI logs: a line when a file's job is first seen or changes status or stage; queue
    positions and stage progress, which move all the time, at most once per interval."""
    clock = FakeClock(0.0)
    buffer = io.StringIO()
    reporter = ConsoleReporter(Console(file=buffer, width=200), clock=clock, interval=5)
    a, b = Path("a.pdf"), Path("b.pdf")
    reporter.start(2, "http://there")
    reporter.file_state(a, "ja", JobState("queued", position=4))
    reporter.file_state(b, "jb", JobState("queued", position=5))
    reporter.file_state(a, "ja", JobState("queued", position=3))  # too soon: nothing
    clock.advance(5)
    reporter.file_state(a, "ja", JobState("queued", position=0))
    reporter.file_state(b, "jb", JobState("queued", position=1))  # same summary: nothing
    reporter.work_started(12.5)
    reporter.file_state(a, "ja", JobState("running"))
    reporter.file_state(a, "ja", JobState("running", stage="embed", done=0, total=40))
    reporter.file_state(a, "ja", JobState("running", stage="embed", done=8, total=40))
    clock.advance(5)
    reporter.file_state(a, "ja", JobState("running", stage="embed", done=16, total=40))
    clock.advance(3)
    reporter.file_done(FileResult(a, "ingested", 40, job_id="ja"))
    reporter.file_done(FileResult(b, "failed", reason="not a PDF", job_id="jb"))
    reporter.stop()
    assert buffer.getvalue().splitlines() == [
        "ingesting 2 files into http://there",
        "queued     a.pdf: 4 jobs ahead (job ja)",
        "queued     b.pdf: 5 jobs ahead (job jb)",
        "waiting: 2 files queued, the first next in line",
        "started after 12.5s in the queue",
        "processing a.pdf: starting (job ja)",
        "processing a.pdf: embed 0/40 (job ja)",
        "processing a.pdf: embed 16/40 (job ja)",
        "[1/2] ingested   a.pdf (40 chunks) 40 chunks, 5.0 chunks/s",  # 40 chunks in 8 s
        "[2/2] failed     b.pdf (not a PDF) 40 chunks, 5.0 chunks/s",
    ]


def test_exit_status() -> None:
    def summary(*outcomes: Outcome, timed_out: bool = False) -> IngestSummary:
        results = [FileResult(Path(f"{i}.txt"), o) for i, o in enumerate(outcomes)]
        return IngestSummary("c", results, timed_out=timed_out)

    assert summary("ingested", "duplicate", "skipped").exit_status == 0
    assert summary("ingested", "queued").exit_status == 0  # --no-wait: nothing waited for
    assert summary("ingested", "queued", "processing", timed_out=True).exit_status == 3
    assert summary("failed", "queued", timed_out=True).exit_status == EXIT_FAILED == 1
    assert summary("ingested", timed_out=False).pending == []
