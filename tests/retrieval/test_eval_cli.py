"""``ragd eval`` on a small slice of the real python-faq set: real ingestion, real search."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragd.cli import app
from ragd.cli.evaluate import answer_hit
from tests.conftest import TEST_SECRET
from tests.postgres import PostgresServer
from tests.shared_data import EVAL, require

PYTHON_FAQ = EVAL / "python-faq"


def _slice(target: Path, documents: int = 24) -> Path:
    """A BEIR folder with the first ``documents`` corpus entries and their queries."""
    require(PYTHON_FAQ)
    corpus = (PYTHON_FAQ / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:documents]
    ids = {json.loads(line)["_id"] for line in corpus}
    qrels = [line.split("\t") for line in
             (PYTHON_FAQ / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    keep = {query for query, doc, _ in qrels if doc in ids}
    (target / "qrels").mkdir(parents=True)
    (target / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    queries = [line for line in
               (PYTHON_FAQ / "queries.jsonl").read_text(encoding="utf-8").splitlines()
               if json.loads(line)["_id"] in keep]
    (target / "queries.jsonl").write_text("\n".join(queries) + "\n", encoding="utf-8")
    (target / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels if q in keep and d in ids),
        encoding="utf-8",
    )
    answers = [line for line in
               (PYTHON_FAQ / "answers.jsonl").read_text(encoding="utf-8").splitlines()
               if json.loads(line)["query_id"] in keep]
    (target / "answers.jsonl").write_text("\n".join(answers) + "\n", encoding="utf-8")
    return target


def _env(tmp_path: Path) -> dict[str, str]:
    from tests.conftest import _MODEL_CACHE  # the session's prepared model

    env = {"RAGD_JWT_SECRET": TEST_SECRET, "RAGD_DATA_DIR": str(tmp_path / "base")}
    if _MODEL_CACHE:
        env["RAGD_MODELS__CACHE_DIR"] = str(_MODEL_CACHE[0])
    return env


@pytest.mark.slow
def test_eval_reports_every_mode_and_writes_json(tmp_path: Path) -> None:
    dataset = _slice(tmp_path / "slice")
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["eval", str(dataset), "--json", str(out)], env=_env(tmp_path)
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["documents"] == 24 and report["chunks"] >= 24 and report["failed"] == []
    assert [m["mode"] for m in report["modes"]] == ["hybrid", "dense", "lexical"]
    for mode in report["modes"]:
        assert set(mode["metrics"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
        assert all(0.0 <= value <= 1.0 for value in mode["metrics"].values())
        assert mode["queries"] > 10 and mode["latency_ms"]["p95"] >= mode["latency_ms"]["p50"]
    by_mode = {m["mode"]: m["metrics"] for m in report["modes"]}
    # On 24 FAQ answers the right one is nearly always first.
    assert by_mode["dense"]["ndcg@10"] > 0.8 and by_mode["hybrid"]["ndcg@10"] > 0.8
    assert by_mode["hybrid"]["recall@100"] == 1.0
    assert "ndcg@10" in result.output  # the table


@pytest.mark.slow
def test_eval_from_source_scores_chunks_by_gold_answers(tmp_path: Path) -> None:
    dataset = _slice(tmp_path / "slice")
    source = dataset / "source"
    faq = PYTHON_FAQ / "source" / "faq"
    page = sorted(faq.glob("general*.html"))[0]
    source.mkdir()
    shutil.copy(page, source / page.name)
    (source / "MANIFEST.tsv").write_text(f"path\trole\n{page.name}\tfaq\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["eval", str(dataset), "--from-source", "--mode", "hybrid",
              "--json", str(tmp_path / "r.json")], env=_env(tmp_path),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    metrics = report["modes"][0]["metrics"]
    assert set(metrics) == {"hit@1", "hit@5", "hit@10", "mrr@10"}
    assert metrics["hit@1"] <= metrics["hit@5"] <= metrics["hit@10"]
    assert metrics["hit@10"] > 0.5  # the general FAQ holds most of these answers


def test_eval_rejects_a_missing_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nope")], env=_env(tmp_path))
    assert result.exit_code == 2
    assert "error:" in result.output


def test_answer_hit_needs_half_of_the_answer_words() -> None:
    answer = "Python is an interpreted, interactive, object-oriented language."
    assert answer_hit("Python is interpreted and interactive.", answer)
    assert not answer_hit("Python is fun.", answer)
    assert not answer_hit("anything", "")


def test_eval_rejects_a_bad_mode_and_a_malformed_dataset(tmp_path: Path) -> None:
    dataset = _slice(tmp_path / "slice", documents=3)
    result = CliRunner().invoke(app, ["eval", str(dataset), "--mode", "magic"],
                                env=_env(tmp_path))
    assert result.exit_code == 2 and "--mode" in result.output
    result = CliRunner().invoke(app, ["eval", str(dataset), "--k", "0"], env=_env(tmp_path))
    assert result.exit_code == 2
    (dataset / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\nnot json\n',
                                           encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(dataset)], env=_env(tmp_path))
    assert result.exit_code == 2 and "queries.jsonl:2" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_eval_on_postgresql_runs_in_a_throwaway_database_there(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """``--database-url``: the run's database is made on that server, search runs in
    PostgreSQL, and the database is dropped afterwards (its name is said, never the URL).
    No RAGD_JWT_SECRET is needed: the throwaway database is the run's alone."""
    dataset = _slice(tmp_path / "slice", documents=12)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["eval", str(dataset), "--json", str(out), "--database-url", postgres.url()],
        env={**_env(tmp_path), "RAGD_JWT_SECRET": None},
    )
    assert result.exit_code == 0, result.output
    assert "[eval] database ragd_eval_" in result.output
    assert postgres.url() not in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["documents"] == 12 and report["failed"] == []
    by_mode = {m["mode"]: m["metrics"] for m in report["modes"]}
    assert by_mode["dense"]["ndcg@10"] > 0.8 and by_mode["hybrid"]["ndcg@10"] > 0.8
    assert by_mode["lexical"]["recall@100"] > 0.8
    left = asyncio.run(_eval_databases(postgres))
    assert left == []


async def _eval_databases(postgres: PostgresServer) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(postgres.dsn())
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'ragd_eval_%'")
    finally:
        await conn.close()
    return [row["datname"] for row in rows]


def test_eval_refuses_a_database_url_of_another_backend(tmp_path: Path) -> None:
    dataset = _slice(tmp_path / "slice", documents=3)
    result = CliRunner().invoke(
        app, ["eval", str(dataset), "--database-url", f"sqlite+aiosqlite:///{tmp_path}/x.db"],
        env=_env(tmp_path),
    )
    assert result.exit_code == 2 and "postgresql+asyncpg" in result.output


def test_eval_uploads_each_entry_as_a_client_does() -> None:
    """The text is the body and the title the document's title, given once: what a client
    of the API sends, so ``ragd eval`` measures what users get."""
    from ragd.cli.evaluate import corpus_uploads
    from ragd.retrieval.beir import Dataset, Passage

    dataset = Dataset(name="t", corpus={
        "a": Passage("General FAQ", "Python is a programming language."),
        "b": Passage("", "No title here."),
        "c": Passage("Only a title", "   "),
    }, queries={}, qrels={}, answers={})
    uploads = dict(corpus_uploads(dataset))
    assert uploads["a"].content == b"Python is a programming language."
    assert uploads["a"].title == "General FAQ"
    assert uploads["b"].content == b"No title here." and uploads["b"].title == "b"
    assert uploads["c"].content == b"Only a title"  # never an empty document
    assert all(u.metadata == {"beir_id": key} for key, u in uploads.items())
