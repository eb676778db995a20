"""End to end: the Python FAQ pages (real HTML) ingested, 20 FAQ questions asked through
``POST /api/v1/chat`` with the extractive provider.

Every answer must be extractive, cite only the chunks it was given (the hits, then the chunks
that continue the best of them), with quotes that occur in them, and never repeat the question
(a FAQ's question heading) as a paragraph. At least half of the answers must hold half of the
gold answer's words (``bench/answers.py`` measures the same over every question of both sets).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.ingestion.conftest import app_client, new_tenant, upload_file, wait_job
from tests.shared_data import EVAL

PYTHON = EVAL / "python-faq"
QUESTIONS = 20
_WORD = re.compile(r"\w+")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("eval_data")]


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _plain(text: str) -> str:
    return " ".join(w for w in _WORD.findall(text.lower()) if not w.isdigit())


def _questions() -> list[tuple[str, str, str]]:
    """(query id, question, gold answer) for questions whose source is a FAQ HTML page,
    every k-th so the sample spans all pages."""
    with (PYTHON / "source/query_sources.tsv").open(encoding="utf-8") as handle:
        sources = {row["query-id"]: row["source_file"]
                   for row in csv.DictReader(handle, delimiter="\t")}
    answers = {}
    for line in (PYTHON / "answers.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        answers[row["query_id"]] = row["answer"]
    questions = []
    for line in (PYTHON / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["_id"] in answers and sources.get(row["_id"], "").startswith("source/faq/"):
            questions.append((row["_id"], row["text"], answers[row["_id"]]))
    step = max(1, len(questions) // QUESTIONS)
    return questions[::step][:QUESTIONS]


async def test_faq_questions_get_extractive_answers_with_verified_citations(
    tmp_path: Path,
) -> None:
    pages = sorted((PYTHON / "source/faq").glob("*.html"))
    questions = _questions()
    assert len(pages) == 8 and len(questions) == QUESTIONS
    async with app_client(tmp_path / "data") as client:
        tenant = await new_tenant(client)
        jobs = []
        for page in pages:
            response = await upload_file(client, tenant, page.name, page.read_bytes())
            assert response.status_code == 202, response.text
            jobs.append(response.json()["job_id"])
        for job_id in jobs:
            assert (await wait_job(client, tenant, job_id, timeout=300))["status"] == "succeeded"

        hits = 0
        report: list[dict[str, Any]] = []
        for query_id, question, gold in questions:
            response = await client.post("/api/v1/chat", headers=tenant.headers,
                                         json={"question": question})
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["provider"] in ("extractive", None)
            if answer["grounded"]:
                assert answer["answer"].startswith("Extractive answer")
                assert answer["citations"] and answer["citations_dropped"] == 0
            texts = {block["chunk_id"]: block["text"] for block in answer["retrieval"]["context"]}
            for citation in answer["citations"]:
                assert citation["quote"] in texts[citation["chunk_id"]]
            context = answer["retrieval"]["context"]
            assert [b["n"] for b in context] == list(range(1, len(context) + 1))
            results = [hit["chunk_id"] for hit in answer["retrieval"]["results"]]
            given_hits = [b["chunk_id"] for b in context if b["chunk_id"] in results]
            assert [b["chunk_id"] for b in context[:len(given_hits)]] == given_hits
            paragraphs = {_plain(p) for p in answer["answer"].split("\n\n")}
            assert _plain(question) not in paragraphs
            hit = len(_words(gold) & _words(answer["answer"])) >= 0.5 * len(_words(gold))
            hits += hit
            report.append({"query_id": query_id, "hit": hit, "grounded": answer["grounded"]})
    grounded = sum(r["grounded"] for r in report)
    print(  # noqa: T201 - the measurement is this test's output
        f"\n[chat e2e] python-faq: {hits}/{len(questions)} extractive answers hold >= 50 % "
        f"of the gold answer's words; {grounded} grounded"
    )
    assert hits >= QUESTIONS // 2, report
    # The relevance gate must not turn away questions the pages do answer.
    assert sum(r["grounded"] for r in report) >= QUESTIONS // 2, report
