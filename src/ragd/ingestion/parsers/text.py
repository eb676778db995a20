"""Plain text: encoding detection to UTF-8, paragraphs split on blank lines.

Also home of the text clean-up every parser shares (NFC, control characters, whitespace).
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from ragd.ingestion.parsers.base import ParsedDocument, Section

__all__ = [
    "clean_block",
    "clean_inline",
    "clean_preformatted",
    "decode",
    "detect_encoding",
    "parse_text",
]

# Tab, LF and CR are kept (whitespace); every other C0/C1 control character goes, NUL included.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n")
_ANY_SPACE = re.compile(r"\s+")
#: charset detection looks at this much of the file; decoding then covers all of it.
_DETECT_PREFIX = 256 * 1024

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def detect_encoding(data: bytes) -> str:
    """The most likely encoding of ``data``: a BOM, else UTF-8 if it decodes, else a guess."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    prefix = data[:_DETECT_PREFIX]
    try:
        prefix.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the prefix end is still UTF-8.
        if exc.start < len(prefix) - 4:
            return _guess_encoding(prefix)
    return "utf-8"


def _guess_encoding(prefix: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(prefix).best()
    if best is None:
        return "cp1252"
    return str(best.encoding)


def decode(data: bytes, encoding: str | None = None) -> str:
    """Bytes to text; undecodable bytes become U+FFFD instead of failing."""
    name = encoding or detect_encoding(data)
    try:
        return data.decode(name, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _strip_controls(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def clean_block(text: str) -> str:
    """NFC, no control characters, runs of spaces collapsed in each line, at most one blank
    line between paragraphs, no leading or trailing blank lines."""
    text = _strip_controls(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    joined = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", joined).strip()


def clean_inline(text: str) -> str:
    """Like :func:`clean_block` but every whitespace run (newlines too) becomes one space."""
    return _ANY_SPACE.sub(" ", _strip_controls(text)).strip()


def clean_preformatted(text: str) -> str:
    """For code: keeps indentation, drops control characters and trailing spaces."""
    text = _strip_controls(text).replace("\t", "    ")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def parse_text(data: bytes) -> ParsedDocument:
    """Paragraphs (split on blank lines) in file order; nothing is dropped or reordered, so
    FAQ-style text keeps each question next to its answer."""
    text = decode(data)
    sections = tuple(
        Section(text=paragraph, kind="paragraph")
        for paragraph in (clean_block(part) for part in _BLANK_LINES.split(text))
        if paragraph
    )
    # No title of its own: :func:`~ragd.ingestion.parsers.base.document_title` takes a first
    # line that reads as one.
    return ParsedDocument(format="text", sections=sections)
