"""Loading of BEIR-format evaluation folders.

A dataset folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}`` per line),
``queries.jsonl`` (``{"_id", "text"}``), ``qrels/<split>.tsv`` (a ``query-id<TAB>corpus-id
<TAB>score`` header, then one judgement per line) and, optionally, ``answers.jsonl``
(``{"query_id", "answer", ...}``: the gold answer text, extra fields ignored).

Files are read as UTF-8 with an optional byte-order mark; blank lines are skipped but still
counted, so the line numbers in error messages are those an editor shows. Every problem is
reported as :class:`DatasetError` (a ``ValueError``) naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

__all__ = ["Dataset", "DatasetError", "Passage", "load_dataset"]

QRELS_HEADER = ("query-id", "corpus-id", "score")
_HEADER_TEXT = "\t".join(QRELS_HEADER)
# How many unknown ids an error message lists before it says "and N more".
_SHOWN_IDS = 5

_T = TypeVar("_T")


class DatasetError(ValueError):
    """A dataset folder is missing a file or holds a malformed or inconsistent one."""


class Passage(NamedTuple):
    """One corpus document: its title (possibly empty) and text."""

    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Dataset:
    """A loaded BEIR dataset. ``answers`` is empty when the folder has no ``answers.jsonl``."""

    name: str
    corpus: Mapping[str, Passage]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    answers: Mapping[str, str]


def load_dataset(path: Path, split: str = "test") -> Dataset:
    """Read and validate the dataset folder at ``path`` with the qrels of ``split``.

    Raises :class:`DatasetError` for a missing folder or file, a line that is not a JSON
    object with the expected string fields, a duplicate id, a malformed qrels line, or qrels
    and answers that refer to query or corpus ids the folder does not define.
    """
    if not path.is_dir():
        raise DatasetError(f"{path}: not a dataset folder (no such directory)")
    corpus = _read_jsonl(path / "corpus.jsonl", "_id", _passage)
    queries = _read_jsonl(path / "queries.jsonl", "_id", _query_text)
    qrels_path = path / "qrels" / f"{split}.tsv"
    qrels = _read_qrels(qrels_path)
    _check_known(qrels_path, "query", qrels.keys(), queries)
    _check_known(qrels_path, "corpus", (d for judged in qrels.values() for d in judged), corpus)
    answers: dict[str, str] = {}
    answers_path = path / "answers.jsonl"
    if answers_path.exists():
        answers = _read_jsonl(answers_path, "query_id", _answer_text)
        _check_known(answers_path, "query", answers.keys(), queries)
    return Dataset(path.name, corpus, queries, qrels, answers)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, line)`` for the non-blank lines of ``path``, BOM stripped."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing file")
    try:
        with path.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _read_jsonl(
    path: Path, id_field: str, value: Callable[[Mapping[str, Any], str], _T]
) -> dict[str, _T]:
    """Map each line's ``id_field`` to ``value(row, where)``; ids must be unique."""
    rows: dict[str, _T] = {}
    first_line: dict[str, int] = {}
    for number, line in _lines(path):
        where = f"{path.name}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        row_id = _string(row, id_field, where)
        if not row_id:
            raise DatasetError(f"{path}:{number}: empty {id_field!r}")
        if row_id in rows:
            raise DatasetError(
                f"{path}:{number}: duplicate id {row_id!r} (first on line {first_line[row_id]})"
            )
        rows[row_id] = value(row, where)
        first_line[row_id] = number
    return rows


def _string(row: Mapping[str, Any], field: str, where: str) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise DatasetError(f"{where}: field {field!r} must be a string, found {found}")
    return value


def _passage(row: Mapping[str, Any], where: str) -> Passage:
    # BEIR corpora often omit the title; treat a missing one as empty, but not a wrong type.
    title = row.get("title") or ""
    if not isinstance(title, str):
        raise DatasetError(f"{where}: field 'title' must be a string")
    return Passage(title, _string(row, "text", where))


def _query_text(row: Mapping[str, Any], where: str) -> str:
    return _string(row, "text", where)


def _answer_text(row: Mapping[str, Any], where: str) -> str:
    return _string(row, "answer", where)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    lines = _lines(path)
    header = next(lines, None)
    if header is None:
        raise DatasetError(f"{path}: empty file (expected the header {_HEADER_TEXT!r})")
    number, line = header
    if tuple(line.split("\t")) != QRELS_HEADER:
        raise DatasetError(f"{path}:{number}: expected the header {_HEADER_TEXT!r}, found {line!r}")
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != 3:
            raise DatasetError(
                f"{path}:{number}: expected 3 tab-separated fields, found {len(fields)}"
            )
        query_id, doc_id, score = (field.strip() for field in fields)
        if not query_id or not doc_id:
            raise DatasetError(f"{path}:{number}: empty query or corpus id")
        try:
            grade = int(score)
        except ValueError:
            raise DatasetError(
                f"{path}:{number}: score must be an integer, found {score!r}"
            ) from None
        judged = qrels.setdefault(query_id, {})
        if doc_id in judged:
            raise DatasetError(f"{path}:{number}: duplicate judgement {query_id} {doc_id}")
        judged[doc_id] = grade
    return qrels


def _check_known(path: Path, kind: str, ids: Iterable[str], known: Mapping[str, Any]) -> None:
    """Fail, listing a few of them, if some of ``ids`` are not keys of ``known``."""
    unknown = sorted({i for i in ids if i not in known})
    if unknown:
        shown = ", ".join(unknown[:_SHOWN_IDS])
        more = f" and {len(unknown) - _SHOWN_IDS} more" if len(unknown) > _SHOWN_IDS else ""
        raise DatasetError(f"{path}: {len(unknown)} unknown {kind} id(s): {shown}{more}")
