"""End to end on the real FAQs of ../shared/eval: upload through the HTTP API, let the worker
parse (in the sandbox), chunk, embed and index them, then check that every gold answer can be
found in the *chunks* the API serves, for every format the FAQ ships in.

Coverage of one answer is measured on lower-cased ``\\w+`` tokens counted as a **multiset**:
``sum(min(answer[w], window[w])) / len(answer words)``. A set would let a window that merely
mentions "the", "debian" and "package" once cover an answer that repeats them twenty times;
the multiset demands that the text is really there, which is what a chunker that drops or
truncates text would break.

The window of text an answer is looked for in is a run of *consecutive* chunks of the
document the answer comes from (``source/query_sources.tsv``): an answer may straddle a chunk
boundary, so a short answer is allowed to lie in two adjacent chunks. Many gold answers
(up to ~600 words) are much longer than one chunk (220 embedder tokens, ~150 words), so a
run of chunks ``i..j`` is allowed as long as its *inner* chunks ``i+1..j-1`` hold no more words
than the answer itself: an answer that is a contiguous span of the document covers its inner
chunks completely and only straddles into the first and the last one. For an answer shorter
than a chunk that is exactly "one chunk or two adjacent chunks".

The Debian PDF needs two layout allowances, found when its first run failed the bar on four
answers (coverage 0.746-0.885) while the whole parsed PDF still held >= 99 % of their words
(so neither the parser nor the chunker drops text; see the report of this test's author):

* The gold answers come from the HTML, where the footnotes of a chapter are printed after its
  last answer, so that answer's gold text ends with ``[2] ...``, ``[3] ...`` paragraphs. The
  PDF prints each footnote at the bottom of the page that cites it, pages away. For the PDF
  the trailing footnotes are removed from the gold answer (``PDF_FOOTNOTE``).
* Conversely a footnote of *another* question, a running header and a page number sit in
  the middle of an answer that crosses a page break. For the PDF the inner chunks of a window
  may hold ``PDF_PAGE_FURNITURE_WORDS`` more words than the answer.

The 90 % bar itself is the same for every format.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.app import create_app
from tests.conftest import bearer, register
from tests.ingestion.conftest import (
    Tenant,
    all_chunks,
    ingest_settings,
    upload_file,
    wait_job,
)
from tests.shared_data import EVAL

DEBIAN = EVAL / "debian-faq"
PYTHON = EVAL / "python-faq"
MIN_COVERAGE = 0.90
#: The footnotes of an HTML chapter, as the last answer's gold text quotes them: from the first
#: paragraph "[2] When the present-day sid..." (footnotes can have several paragraphs) to the end.
PDF_FOOTNOTE = re.compile(r"(?ms)^\[\d+\] .*\Z")
PDF_PAGE_FURNITURE_WORDS = 150
_WORD = re.compile(r"\w+")

#: The test reads the shared eval data; without it the test fails (never skips).
needs_eval = pytest.mark.usefixtures("eval_data")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Format:
    """One collection: the FAQ in one format."""

    name: str
    files: tuple[Path, ...]
    #: The source file named in query_sources.tsv (always the HTML) -> the file in this format.
    source_to_file: dict[str, Path]


def _manifest(dataset: Path) -> list[dict[str, str]]:
    with (dataset / "source/MANIFEST.tsv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _sources(dataset: Path) -> dict[str, list[str]]:
    """query id -> source files (relative to the dataset); merged questions list several."""
    found: dict[str, list[str]] = defaultdict(list)
    with (dataset / "source/query_sources.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            found[row["query-id"]].append(row["source_file"])
    return found


def _answers(dataset: Path) -> dict[str, str]:
    with (dataset / "answers.jsonl").open(encoding="utf-8") as handle:
        return {r["query_id"]: r["answer"] for r in map(json.loads, handle) if r["answer"]}


def debian_formats() -> list[Format]:
    rows = [r for r in _manifest(DEBIAN) if r["role"] in ("faq", "faq-alt-format")]
    html = tuple(DEBIAN / "source" / r["path"] for r in rows if r["path"].startswith("faq/html/"))
    pdf = DEBIAN / "source/faq/pdf/debian-faq.en.pdf"
    txt = DEBIAN / "source/faq/txt/debian-faq.en.txt"
    html_map = {f"source/{p.relative_to(DEBIAN / 'source')}": p for p in html}
    return [
        Format("html", html, html_map),
        Format("pdf", (pdf,), {key: pdf for key in html_map}),
        Format("text", (txt,), {key: txt for key in html_map}),
    ]


def python_formats() -> list[Format]:
    rows = [r for r in _manifest(PYTHON) if r["role"] in ("faq", "faq-alt-format")]
    html = tuple(PYTHON / "source" / r["path"] for r in rows if r["path"].startswith("faq/"))
    rst = tuple(PYTHON / "source" / r["path"] for r in rows if r["path"].startswith("faq-rst/"))
    html_map = {f"source/{p.relative_to(PYTHON / 'source')}": p for p in html}
    rst_map = {
        key: PYTHON / "source/faq-rst" / f"{path.stem}.rst.txt" for key, path in html_map.items()
    }
    return [Format("html", html, html_map), Format("rst", rst, rst_map)]


def best_window_coverage(
    answer: str, chunks: list[list[str]], extra_inner_words: int = 0
) -> tuple[float, int, int]:
    """The best multiset coverage of ``answer`` by a run of consecutive chunks (see module
    docstring); returns (coverage, first ordinal, last ordinal)."""
    target = Counter(words(answer))
    total = sum(target.values())
    inner_budget = total + extra_inner_words
    counters = [Counter(chunk) for chunk in chunks]
    # Per-chunk matches bound a window's coverage from above: cheap pruning.
    matched = [sum(min(n, c[w]) for w, n in target.items()) for c in counters]
    best = (0.0, -1, -1)
    for first in range(len(chunks)):
        window: Counter[str] = Counter()
        inner = 0
        upper = 0
        for last in range(first, len(chunks)):
            if last - first >= 2:
                inner += len(chunks[last - 1])
                if inner > inner_budget:
                    break
            upper += matched[last]
            window.update(counters[last])
            if upper <= best[0] * total:
                continue
            hits = sum(min(n, window[w]) for w, n in target.items())
            if hits / total > best[0]:
                best = (hits / total, first, last)
            if best[0] == 1.0:
                return best
    return best


async def ingest_formats(
    client: httpx.AsyncClient, formats: list[Format]
) -> dict[str, dict[Path, list[dict[str, Any]]]]:
    """One tenant, one collection per format; every file uploaded, every job succeeded and
    every document ready. Returns format -> file -> its chunks in document order."""
    body = await register(client)
    headers = bearer(body["access_token"])
    tenant_id = (await client.get("/api/v1/auth/me", headers=headers)).json()["tenant_id"]
    pending: list[tuple[str, Tenant, Path, str, str]] = []
    for fmt in formats:
        response = await client.post(
            "/api/v1/collections", json={"name": f"faq-{fmt.name}"}, headers=headers
        )
        assert response.status_code == 201, response.text
        tenant = Tenant(headers=headers, tenant_id=tenant_id, collection_id=response.json()["id"])
        for path in fmt.files:
            response = await upload_file(client, tenant, path.name, path.read_bytes())
            assert response.status_code == 202, (path, response.text)
            accepted = response.json()
            pending.append((fmt.name, tenant, path, accepted["document_id"], accepted["job_id"]))

    result: dict[str, dict[Path, list[dict[str, Any]]]] = defaultdict(dict)
    for fmt_name, tenant, path, document_id, job_id in pending:
        job = await wait_job(client, tenant, job_id, timeout=300)
        assert job["status"] == "succeeded", (path, job)
        document = (
            await client.get(f"/api/v1/documents/{document_id}", headers=tenant.headers)
        ).json()
        assert document["status"] == "ready" and document["searchable"], document
        expected_format = "text" if fmt_name == "text" else fmt_name
        assert document["format"] == expected_format, document
        chunks = await all_chunks(client, tenant, document_id)
        assert chunks and len(chunks) == document["chunk_count"], (path, document["chunk_count"])
        assert [c["ordinal"] for c in chunks] == list(range(len(chunks)))
        result[fmt_name][path] = chunks
    return result


def check_coverage(
    dataset: Path, formats: list[Format], ingested: dict[str, dict[Path, list[dict[str, Any]]]]
) -> dict[str, tuple[float, float, str]]:
    """format -> (min, mean, worst query id); prints the numbers and the worst windows."""
    answers = _answers(dataset)
    sources = _sources(dataset)
    summary: dict[str, tuple[float, float, str]] = {}
    failures: list[str] = []
    for fmt in formats:
        tokenized = {path: [words(c["text"]) for c in chunks]
                     for path, chunks in ingested[fmt.name].items()}  # fmt: skip
        coverage: dict[str, float] = {}
        pdf = fmt.name == "pdf"
        for query_id, answer in answers.items():
            files = {fmt.source_to_file[source] for source in sources[query_id]}
            assert files, query_id
            if pdf:
                answer = PDF_FOOTNOTE.sub("", answer)
            extra = PDF_PAGE_FURNITURE_WORDS if pdf else 0
            coverage[query_id] = max(
                best_window_coverage(answer, tokenized[path], extra)[0] for path in files
            )
        worst = min(coverage, key=coverage.__getitem__)
        mean = sum(coverage.values()) / len(coverage)
        summary[fmt.name] = (coverage[worst], mean, worst)
        below = sorted((q for q, c in coverage.items() if c < MIN_COVERAGE), key=coverage.get)
        chunk_total = sum(len(c) for c in ingested[fmt.name].values())
        print(  # noqa: T201 - the coverage numbers are part of this test's output
            f"\n[e2e coverage] {dataset.name}/{fmt.name}: {len(coverage)} answers, "
            f"{len(fmt.files)} files, {chunk_total} chunks, min {coverage[worst]:.3f} "
            f"({worst}), mean {mean:.3f}, below {MIN_COVERAGE:.0%}: {len(below)}"
        )
        failures.extend(f"{fmt.name}:{q}={coverage[q]:.3f}" for q in below)
    assert not failures, failures
    return summary


async def _run(tmp_path: Path, dataset: Path, formats: list[Format]) -> None:
    # How long ingestion takes is bench/ingest.py's question, not this test's.
    # Keyword extraction (KeyBERT, one embedder pass per chunk and candidate phrase) is off:
    # it is not what this test checks and on a small, shared CPU it took minutes per FAQ.
    settings = ingest_settings(
        tmp_path / "data",
        ingestion={"workers": 2, "parse_concurrency": 2, "keywords_enabled": False},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ragd.test", timeout=300
        ) as client:
            ingested = await ingest_formats(client, formats)
    check_coverage(dataset, formats, ingested)


@needs_eval
async def test_debian_faq_html_pdf_and_text_answers_are_in_the_chunks(tmp_path: Path) -> None:
    await _run(tmp_path, DEBIAN, debian_formats())


@needs_eval
async def test_python_faq_html_and_rst_answers_are_in_the_chunks(tmp_path: Path) -> None:
    await _run(tmp_path, PYTHON, python_formats())


def test_window_rule_allows_two_adjacent_chunks_for_a_short_answer() -> None:
    chunks = [words("alpha beta gamma"), words("delta epsilon"), words("zeta eta theta")]
    assert best_window_coverage("gamma delta epsilon zeta", chunks)[0] == 1.0
    # Not the first and the last chunk without the one between them.
    assert (
        best_window_coverage("alpha theta", [*chunks[:1], words("x " * 50), *chunks[2:]])[0] == 0.5
    )
