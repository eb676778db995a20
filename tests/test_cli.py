"""The `ragd` command line, run in-process with typer's runner on real data dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragd import __version__
from ragd.cli import app as cli
from tests.conftest import STRONG_PASSWORD, TEST_SECRET

runner = CliRunner()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGD_JWT_SECRET", TEST_SECRET)


def test_version() -> None:
    result = runner.invoke(cli, ["version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"ragd {__version__}"


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["admin"], ["admin", "create-superuser"], ["admin", "create-tenant"],
     ["config"], ["config", "show"], ["db"], ["db", "upgrade"], ["version"]],
)
def test_help_everywhere(command: list[str]) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize(("workers", "bound"), [
    ("0", "greater than or equal to 1"), ("-1", "greater than or equal to 1"),
    ("65", "less than or equal to 64"),
])
def test_serve_refuses_a_process_count_out_of_range_before_anything_starts(
    tmp_path: Path, workers: str, bound: str
) -> None:
    data_dir = tmp_path / "data"
    result = runner.invoke(cli, ["serve", "--workers", workers, "--port", "1",
                                 "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--workers'" in result.output and bound in result.output
    assert not data_dir.exists()


def test_create_superuser_reads_password_from_stdin(tmp_path: Path) -> None:
    result = runner.invoke(
        cli,
        ["admin", "create-superuser", "--email", "Root@Example.com", "--password-stdin",
         "--data-dir", str(tmp_path)],
        input=STRONG_PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["email"] == "root@example.com"
    assert STRONG_PASSWORD not in result.output


def test_create_superuser_rejects_weak_password_and_duplicates(tmp_path: Path) -> None:
    args = ["admin", "create-superuser", "--email", "root@example.com", "--password-stdin",
            "--data-dir", str(tmp_path)]
    weak = runner.invoke(cli, args, input="password1234\n")
    assert weak.exit_code == 2
    assert "too easy to guess" in weak.output
    assert runner.invoke(cli, args, input=STRONG_PASSWORD + "\n").exit_code == 0
    again = runner.invoke(cli, args, input=STRONG_PASSWORD + "\n")
    assert again.exit_code == 2
    assert "email" in again.output


def test_create_tenant_and_duplicate(tmp_path: Path) -> None:
    first = runner.invoke(cli, ["admin", "create-tenant", "Acme", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["name"] == "Acme"
    dup = runner.invoke(cli, ["admin", "create-tenant", "ACME", "--data-dir", str(tmp_path)])
    assert dup.exit_code == 2
    assert "already exists" in dup.output
    blank = runner.invoke(cli, ["admin", "create-tenant", "  ", "--data-dir", str(tmp_path)])
    assert blank.exit_code == 2


@pytest.mark.parametrize("command", [["models", "prepare"], ["models", "list"]])
def test_models_commands_reject_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, command: list[str]
) -> None:
    monkeypatch.setenv("RAGD_MODELS__EMBEDDER", "bogus")
    result = runner.invoke(cli, [*command, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "models.embedder" in result.output
    assert "Traceback" not in result.output
    unknown = runner.invoke(cli, [*command, "--quantise"])
    assert unknown.exit_code == 2
    assert "No such option" in unknown.output


def test_eval_rerank_without_a_reranker_fails_before_ingesting(tmp_path: Path) -> None:
    """Said at once, not by the first query after ingesting the whole dataset (the dataset
    directory does not even exist: the check comes first)."""
    result = runner.invoke(cli, ["eval", str(tmp_path / "no-dataset"), "--rerank"])
    assert result.exit_code == 2
    assert "--rerank needs a reranker: set RAGD_MODELS__RERANKER=onnx" in result.output
    assert "Traceback" not in result.output
