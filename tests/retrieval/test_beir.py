"""Loading BEIR folders: the two real evaluation sets and malformed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragd.retrieval.beir import Dataset, DatasetError, Passage, load_dataset
from tests.shared_data import EVAL, require

HEADER = "query-id\tcorpus-id\tscore\n"


@pytest.mark.parametrize(
    ("name", "documents", "queries", "judgements"),
    [("python-faq", 3977, 170, 171), ("debian-faq", 3049, 119, 119)],
)
def test_real_datasets_load(name: str, documents: int, queries: int, judgements: int) -> None:
    dataset = load_dataset(require(EVAL / name))
    assert dataset.name == name
    assert len(dataset.corpus) == documents
    assert len(dataset.queries) == queries
    # Every query is judged, with grade 1 only; answers cover exactly the queries.
    assert dataset.qrels.keys() == dataset.queries.keys()
    assert sum(len(judged) for judged in dataset.qrels.values()) == judgements
    assert {g for judged in dataset.qrels.values() for g in judged.values()} == {1}
    assert dataset.answers.keys() == dataset.queries.keys()
    assert all(p.text.strip() for p in dataset.corpus.values())


def test_python_faq_contents() -> None:
    dataset = load_dataset(require(EVAL / "python-faq"))
    assert dataset.queries["pyfaq-general-001"] == "What is Python?"
    # "What is Python?" is asked in two FAQs, so it has two relevant passages.
    assert len(dataset.qrels["pyfaq-general-001"]) == 2
    assert dataset.qrels["pyfaq-general-002"] == {"py-faq-general-q002": 1}
    passage = dataset.corpus["py-faq-general-q001"]
    assert passage.title == "General Python FAQ"
    assert passage.text.startswith("Python is an interpreted, interactive")
    assert dataset.answers["pyfaq-general-001"] == passage.text


# --- a small folder in tmp_path -----------------------------------------------------------


def write_jsonl(path: Path, rows: list[Any]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def make_dataset(root: Path, *, answers: bool = True) -> Path:
    root.mkdir(exist_ok=True)
    write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "T1", "text": "first passage"},
            {"_id": "d2", "title": "T2", "text": "second passage"},
            {"_id": "d3", "text": "no title"},
        ],
    )
    write_jsonl(
        root / "queries.jsonl", [{"_id": "q1", "text": "one?"}, {"_id": "q2", "text": "two?"}]
    )
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text(HEADER + "q1\td1\t1\nq1\td2\t2\nq2\td3\t0\n")
    if answers:
        write_jsonl(root / "answers.jsonl", [{"query_id": "q1", "answer": "first", "extra": 1}])
    return root


def test_small_dataset_loads(tmp_path: Path) -> None:
    dataset = load_dataset(make_dataset(tmp_path / "tiny"))
    assert dataset == Dataset(
        name="tiny",
        corpus={
            "d1": Passage("T1", "first passage"),
            "d2": Passage("T2", "second passage"),
            "d3": Passage("", "no title"),
        },
        queries={"q1": "one?", "q2": "two?"},
        qrels={"q1": {"d1": 1, "d2": 2}, "q2": {"d3": 0}},
        answers={"q1": "first"},
    )


def test_answers_are_optional(tmp_path: Path) -> None:
    assert load_dataset(make_dataset(tmp_path / "tiny", answers=False)).answers == {}


def test_bom_blank_lines_and_crlf_are_tolerated(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    corpus = root / "corpus.jsonl"
    corpus.write_bytes(b"\xef\xbb\xbf\r\n" + corpus.read_bytes().replace(b"\n", b"\r\n\n  \n"))
    qrels = root / "qrels" / "test.tsv"
    qrels.write_bytes(b"\xef\xbb\xbf" + qrels.read_bytes().replace(b"\n", b"\r\n") + b"\n\n")
    dataset = load_dataset(root)
    assert len(dataset.corpus) == 3
    assert dataset.qrels["q1"] == {"d1": 1, "d2": 2}


def test_split_selects_the_qrels_file(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / "qrels" / "dev.tsv").write_text(HEADER + "q2\td1\t1\n")
    assert load_dataset(root, split="dev").qrels == {"q2": {"d1": 1}}


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("corpus.jsonl", r"corpus\.jsonl: missing file"),
        ("queries.jsonl", r"queries\.jsonl: missing file"),
        ("qrels/test.tsv", r"test\.tsv: missing file"),
    ],
)
def test_missing_file(tmp_path: Path, relative: str, message: str) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / relative).unlink()
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a dataset folder"):
        load_dataset(tmp_path / "nowhere")


def test_dataset_error_is_a_value_error() -> None:
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        # Line 3 (after a blank line 2) is cut short.
        ('{"_id": "d1", "text": "a"}\n\n{"_id": "d2", "te\n', r"corpus\.jsonl:3: invalid JSON"),
        ('["d1", "a"]\n', r"corpus\.jsonl:1: expected a JSON object"),
        ('{"text": "a"}\n', r"corpus\.jsonl:1: field '_id' must be a string, found missing"),
        (
            '{"_id": 7, "text": "a"}\n',
            r"corpus\.jsonl:1: field '_id' must be a string, found a int",
        ),
        ('{"_id": "", "text": "a"}\n', r"corpus\.jsonl:1: empty '_id'"),
        ('{"_id": "d1"}\n', r"corpus\.jsonl:1: field 'text' must be a string"),
        ('{"_id": "d1", "title": 3, "text": "a"}\n', r"corpus\.jsonl:1: field 'title'"),
        (
            '{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n',
            r"corpus\.jsonl:2: duplicate id 'd1' \(first on line 1\)",
        ),
    ],
)
def test_malformed_corpus(tmp_path: Path, lines: str, message: str) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / "corpus.jsonl").write_text(lines)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_malformed_query(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "one?"}\n{"_id": "q2"}\n')
    with pytest.raises(DatasetError, match=r"queries\.jsonl:2: field 'text' must be a string"):
        load_dataset(root)


def test_not_utf8(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"queries\.jsonl: not UTF-8"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"empty file \(expected the header"),
        ("\n\n", r"empty file"),
        ("q1\td1\t1\n", r"test\.tsv:1: expected the header 'query-id\\tcorpus-id\\tscore'"),
        (HEADER + "q1\td1\n", r"test\.tsv:2: expected 3 tab-separated fields, found 2"),
        (HEADER + "q1 d1 1\n", r"test\.tsv:2: expected 3 tab-separated fields, found 1"),
        (HEADER + "\nq1\td1\thigh\n", r"test\.tsv:3: score must be an integer, found 'high'"),
        (HEADER + "q1\t\t1\n", r"test\.tsv:2: empty query or corpus id"),
        (HEADER + "q1\td1\t1\nq1\td1\t2\n", r"test\.tsv:3: duplicate judgement q1 d1"),
    ],
)
def test_malformed_qrels(tmp_path: Path, content: str, message: str) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / "qrels" / "test.tsv").write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root)


def test_qrels_with_unknown_ids_list_a_few(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    rows = "".join(f"q1\tmissing-{i}\t1\n" for i in range(8))
    (root / "qrels" / "test.tsv").write_text(HEADER + rows)
    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    message = str(caught.value)
    assert "8 unknown corpus id(s)" in message
    assert "missing-0, missing-1, missing-2, missing-3, missing-4 and 3 more" in message


def test_qrels_with_unknown_query(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    (root / "qrels" / "test.tsv").write_text(HEADER + "q1\td1\t1\nq9\td1\t1\n")
    with pytest.raises(DatasetError, match=r"1 unknown query id\(s\): q9$"):
        load_dataset(root)


def test_answers_with_unknown_query_or_bad_field(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "tiny")
    write_jsonl(root / "answers.jsonl", [{"query_id": "q7", "answer": "x"}])
    with pytest.raises(DatasetError, match=r"answers\.jsonl: 1 unknown query id\(s\): q7"):
        load_dataset(root)
    write_jsonl(root / "answers.jsonl", [{"query_id": "q1", "answer": None}])
    with pytest.raises(DatasetError, match=r"answers\.jsonl:1: field 'answer' must be a string"):
        load_dataset(root)
