"""PDF: text per page with pypdf, page numbers kept.

Decompression and parsing limits are tightened well below pypdf's defaults so that a
nested-Flate "bomb" stops at a few tens of megabytes, and the external ``jbig2dec`` binary
is never run.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.text import clean_block, clean_inline

__all__ = ["PDF_LIMITS", "parse_pdf"]

_MB = 1024 * 1024

#: Overrides applied to ``pypdf.Configuration`` while a PDF is read.
PDF_LIMITS: dict[str, Any] = {
    "maximum_declared_stream_length": 20 * _MB,
    "array_based_stream_maximum_output_length": 20 * _MB,
    "zlib_maximum_output_length": 20 * _MB,
    "zlib_maximum_recovery_input_length": 2 * _MB,
    "lzw_maximum_output_length": 20 * _MB,
    "run_length_maximum_output_length": 20 * _MB,
    "jbig2_maximum_output_length": 20 * _MB,
    "brotli_maximum_output_length": 20 * _MB,
    "image_maximum_buffer_size": 20 * _MB,
    "stream_decoding_work_maximum_length": 100 * _MB,
    "stream_filters_maximum_length": 8,
    "xmp_maximum_input_length": 1 * _MB,
    "jbig2dec_binary": None,
    "disable_legacy_handling": True,
}


#: TJ offsets (thousandths of an em) at least this far left are word gaps. TeX's justified
#: output has no space glyphs, only gaps of ~0.17-0.35 em, which pypdf's own threshold (the
#: font's space width) misses, so such gaps are widened to a full em before extraction.
_WORD_GAP = -150
_HYPHENATED = re.compile(r"([a-z])-\n([a-z])")


def _widen_word_gaps(operator: bytes, operands: list[Any], cm: Any, tm: Any) -> None:
    from pypdf.generic import ArrayObject, FloatObject

    if operator != b"TJ" or not operands or not isinstance(operands[0], ArrayObject):
        return
    array = operands[0]
    for index, item in enumerate(array):
        if isinstance(item, int | float) and not isinstance(item, bool) and item <= _WORD_GAP:
            array[index] = FloatObject(-1000)


def _page_text(page: Any) -> str:
    # extract_text() swallows decoding errors and returns "", which would turn a
    # decompression bomb into an empty page; decoding the content first lets a
    # LimitReachedError reach the caller.
    page.get_contents()
    raw = page.extract_text(visitor_operand_before=_widen_word_gaps) or ""
    # Words hyphenated at a line end are joined again so they can be found.
    return clean_block(_HYPHENATED.sub(r"\1\2", raw))


def parse_pdf(data: bytes, *, max_pages: int = 2000) -> ParsedDocument:
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import DependencyError, LimitReachedError, PyPdfError

    # Corrupt PDFs surface as a variety of low-level errors from inside pypdf.
    corrupt = (
        PyPdfError, DependencyError, NotImplementedError, ValueError, KeyError, TypeError,
        AttributeError, IndexError, AssertionError, RecursionError, zlib.error, struct.error,
        UnicodeError, OverflowError,
    )  # fmt: skip
    warnings: list[str] = []
    sections: list[Section] = []
    try:
        with apply_configuration(**PDF_LIMITS):
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise ParseError("The PDF is password-protected.", code="encrypted")
            total = len(reader.pages)
            if total > max_pages:
                warnings.append(f"only the first {max_pages} of {total} pages were read")
            title = None
            if reader.metadata is not None and reader.metadata.title:
                title = clean_inline(str(reader.metadata.title)) or None
            for number in range(1, min(total, max_pages) + 1):
                text = _page_text(reader.pages[number - 1])
                if text:
                    sections.append(Section(text=text, page=number, kind="text"))
    except LimitReachedError as exc:
        raise ParseError(f"The PDF exceeds a safety limit: {exc}", code="limit_exceeded") from exc
    except corrupt as exc:
        raise ParseError(f"The PDF could not be read: {exc}") from exc
    if not sections:
        warnings.append("no text found (scanned PDF?)")
    return ParsedDocument(
        format="pdf", sections=tuple(sections), title=title, pages=total, warnings=tuple(warnings)
    )
