"""`ragd ingest`: --local on a temp data dir, HTTP against a real `ragd serve`, bad input."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ragd.cli import app as cli
from ragd.cli.ingest import IngestError, discover, parse_metadata
from ragd.container import open_services
from tests.conftest import _MODEL_CACHE, STRONG_PASSWORD, TEST_SECRET, make_settings
from tests.processes import free_port, wait_ready
from tests.shared_data import EVAL
from tests.waiting import HANG_TIMEOUT

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
    assert "ingested 2, duplicates 1, queued 0, failed 1, skipped 1" in result.output
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
    assert "ingested 0, duplicates 2, queued 0, failed 0" in again.output


# -- HTTP ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("eval_data")
def test_http_ingests_a_directory_with_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGD_")}
    env.update(
        RAGD_JWT_SECRET=TEST_SECRET, RAGD_BOOTSTRAP_ADMIN="false",
        RAGD_INGESTION__POLL_INTERVAL_SECONDS="0.05",
    )
    if _MODEL_CACHE:
        env["RAGD_MODELS__CACHE_DIR"] = str(_MODEL_CACHE[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragd", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    tree = tmp_path / "site"
    (tree / "sub").mkdir(parents=True)
    (tree / ".cache").mkdir()
    shutil.copy(FAQ / "html" / "basic-defs.en.html", tree / "basic-defs.html")
    shutil.copy(FAQ / "html" / "faqinfo.en.html", tree / "sub" / "faqinfo.html")
    shutil.copy(FAQ / "html" / "choosing.en.html", tree / ".cache" / "choosing.html")
    _small_text(tree / "sub" / "intro.txt")  # excluded by --glob
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=30) as http:
            registered = http.post("/api/v1/auth/register", json={
                "email": "cli@example.com", "password": STRONG_PASSWORD, "tenant_name": "CLI",
            })
            assert registered.status_code == 201, registered.text
            token = registered.json()["access_token"]
            created = http.post("/api/v1/auth/api-keys", json={"name": "ingest"},
                                headers={"Authorization": f"Bearer {token}"})
            assert created.status_code == 201, created.text
            key = created.json()["key"]

            monkeypatch.setenv("RAGD_URL", base)
            monkeypatch.setenv("RAGD_API_KEY", key)
            result = runner.invoke(cli, [
                "ingest", str(tree), "--collection", "web", "--recursive", "--glob", "*.html",
                "--metadata", "site=faq", "--wait",
            ])
            _no_traceback(result.output)
            assert result.exit_code == 0, result.output
            assert "ingested 2, duplicates 0, queued 0, failed 0, skipped 0" in result.output
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
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=HANG_TIMEOUT)


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
    import io

    from rich.console import Console

    from ragd.cli.ingest import ConsoleReporter, FileResult

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    reporter = ConsoleReporter(console)
    reporter.start(2, "somewhere")
    reporter.file_done(FileResult(Path("a.html"), "ingested", 12))
    reporter.file_done(FileResult(Path("b.bin"), "failed", reason="unsupported"))
    reporter.stop()
    text = buffer.getvalue()
    assert "2/2" in text and "12 chunks" in text and "chunks/s" in text
    assert "failed" in text and "unsupported" in text
