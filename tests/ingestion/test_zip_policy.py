"""One ZIP policy: the limits configured in :class:`ParseLimits` are the ones enforced.

Real DOCX files (written by python-docx from the Debian FAQ of ../shared/eval) go through the
real sandbox and the real parser: a configured limit just below the archive's entry count,
expanded size or compression ratio refuses it, and one at or above it lets it parse, also
where the configured limit is above the defaults (no second, hard-coded policy in the parser
child overrides it).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import pytest

from ragd.ingestion.limits import ParseLimits, check_zip
from ragd.ingestion.parsers.base import ParseError
from ragd.ingestion.sandbox import parse_in_sandbox
from tests.shared_data import EVAL

CORPUS = EVAL / "debian-faq" / "corpus.jsonl"
MIB = 1024 * 1024

pytestmark = pytest.mark.usefixtures("eval_data")  # fails, never skips, without the data


def _faq_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as lines:
        return [json.loads(line)["text"] for line, _ in zip(lines, range(40), strict=False)]


def _docx(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def faq_docx() -> bytes:
    """Forty FAQ answers: ordinary text, ordinary compression."""
    return _docx(_faq_texts())


@pytest.fixture(scope="module")
def repetitive_docx() -> bytes:
    """One FAQ sentence 10,000 times: a legitimate document that compresses above 200:1,
    the ratio the default limits (and the old hard-coded parser policy) refuse."""
    sentence = _faq_texts()[0].split(". ")[0] + "."
    return _docx([sentence] * 10_000)


def _infos(data: bytes) -> list[zipfile.ZipInfo]:
    return zipfile.ZipFile(io.BytesIO(data)).infolist()


def _largest_ratio(data: bytes) -> float:
    entry = max(_infos(data), key=lambda info: info.file_size)
    return entry.file_size / entry.compress_size


async def _parse(data: bytes, limits: ParseLimits) -> str:
    document = await parse_in_sandbox(
        data, filename="faq.docx", declared_type=None, limits=limits
    )
    return document.text


async def _refused(data: bytes, limits: ParseLimits) -> ParseError:
    with pytest.raises(ParseError) as caught:
        await _parse(data, limits)
    return caught.value


async def test_the_configured_ratio_decides_even_above_the_default(
    repetitive_docx: bytes,
) -> None:
    ratio = _largest_ratio(repetitive_docx)
    assert ratio > ParseLimits().zip_max_ratio  # the premise: the defaults refuse it

    for limits in (ParseLimits(), ParseLimits(zip_max_ratio=ratio * 0.99)):
        refused = await _refused(repetitive_docx, limits)
        assert refused.code == "archive_bomb"
        assert "word/document.xml" in refused.message

    text = await _parse(repetitive_docx, ParseLimits(zip_max_ratio=ratio * 1.01))
    assert text.count("frequently asked questions") == 10_000


async def test_the_configured_expanded_size_decides(repetitive_docx: bytes) -> None:
    total = sum(info.file_size for info in _infos(repetitive_docx))
    generous = ParseLimits(zip_max_ratio=1000.0)
    refused = await _refused(
        repetitive_docx, dataclasses.replace(generous, zip_max_total_uncompressed=total - 1)
    )
    assert refused.code == "archive_too_large"
    text = await _parse(
        repetitive_docx, dataclasses.replace(generous, zip_max_total_uncompressed=total)
    )
    assert "Debian" in text


async def test_the_configured_entry_count_decides(faq_docx: bytes) -> None:
    entries = len(_infos(faq_docx))
    refused = await _refused(faq_docx, ParseLimits(zip_max_entries=entries - 1))
    assert refused.code == "archive_too_large"
    assert f"{entries} entries" in refused.message
    assert "Debian" in await _parse(faq_docx, ParseLimits(zip_max_entries=entries))


def test_a_deflated_bomb_is_refused_by_the_default_limits() -> None:
    """64 MiB of spaces in word/document.xml, under 1 MiB on disk."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as entry:
            chunk = b" " * MIB
            for _ in range(64):
                entry.write(chunk)
    data = buffer.getvalue()
    assert len(data) < MIB
    with pytest.raises(ParseError) as caught:
        check_zip(data, ParseLimits())
    assert caught.value.code == "archive_bomb"
