"""Document parsers: ``parse(bytes) -> ParsedDocument`` for every format in ``FORMATS``.

The format comes from the content first (magic bytes, zip entries, HTML and CSV sniffing)
and the file name or declared MIME type second; content that contradicts a binary format's
extension, and everything that is not one of ``FORMATS``, is refused with
``ParseError(code="unsupported_type")``. A file named or declared as a text format whose
bytes are UTF-8 text is that format, whatever its first bytes resemble: a Makefile line
``PKG_CPPFLAGS = ...`` is not a damaged ZIP archive, nor a line ``%PDF-1.7 is ...`` a PDF.
"""

from __future__ import annotations

import codecs
import io
import zipfile
from collections.abc import Callable
from pathlib import PurePath

from ragd.ingestion.parsers.base import (
    FORMATS,
    ParsedDocument,
    ParseError,
    Section,
    cut_to_chars,
)
from ragd.ingestion.parsers.text import decode

__all__ = [
    "FORMATS",
    "ParseError",
    "ParsedDocument",
    "Section",
    "detect_format",
    "opens_archive",
    "parse",
]

_EXTENSIONS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "rst",
    ".rest": "rst",
    ".csv": "csv",
    ".tsv": "csv",
}
_MIME_TYPES = {mime: name for name, mime in FORMATS.items()} | {
    "application/xhtml+xml": "html",
    "text/x-markdown": "markdown",
    "text/tab-separated-values": "csv",
}
_BINARY_FORMATS = frozenset({"pdf", "docx", "pptx"})
_TEXT_FORMATS = frozenset({"html", "markdown", "rst", "text", "csv"})
_SNIFF_BYTES = 64 * 1024

def _unsupported(what: str) -> ParseError:
    supported = ", ".join(f"{name} ({mime})" for name, mime in FORMATS.items())
    return ParseError(f"{what}. Supported types: {supported}.", code="unsupported_type")


def _zip_format(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _unsupported("The file is a damaged or unsupported zip archive") from exc
    if "word/document.xml" in names:
        return "docx"
    if "ppt/presentation.xml" in names:
        return "pptx"
    raise _unsupported("The zip archive is not a DOCX or PPTX document")


def _looks_binary(prefix: bytes) -> bool:
    if prefix.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return False
    # A stray NUL or control byte does not make a text file binary; 6 % of them does.
    controls = sum(1 for byte in prefix if byte < 32 and byte not in (9, 10, 12, 13))
    return controls > max(4, len(prefix) // 16)


def _sniff_text(prefix_text: str, extension: str | None) -> str:
    head = prefix_text.lstrip()[:1024].lower()
    looks_html = head.startswith(("<!doctype html", "<html")) or (
        head.startswith("<") and any(tag in head for tag in ("<html", "<head", "<body"))
    )
    if extension is None and looks_html:
        return "html"
    if extension is not None:
        # Text formats overlap (an HTML snippet is valid plain text): the name decides.
        return extension
    from ragd.ingestion.parsers.csv import sniff_dialect

    if sniff_dialect(prefix_text) is not None:
        return "csv"
    lines = prefix_text.splitlines()[:200]
    if any(line.startswith(("# ", "## ", "```")) for line in lines):
        return "markdown"
    return "text"


def _is_utf8(prefix: bytes) -> bool:
    """Whether ``prefix`` (the start of a file, maybe cut inside a character) is UTF-8."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(prefix, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _expected(filename: str | None, declared_type: str | None) -> tuple[str | None, str | None]:
    """The format the name (else the declared MIME type) announces, and the file name's
    suffix when it is one no format has."""
    extension_format: str | None = None
    unknown_suffix: str | None = None
    if filename:
        suffixes = [s.lower() for s in PurePath(filename).suffixes]
        # Sphinx ships its sources as "name.rst.txt": reST, whatever the last suffix says.
        suffix = ".rst" if suffixes[-2:] == [".rst", ".txt"] else PurePath(filename).suffix.lower()
        if suffix:
            extension_format = _EXTENSIONS.get(suffix)
            if extension_format is None:
                # ".copyright", ".log", ".conf"...: plain text is still welcome; the
                # content decides (binary content is refused below).
                unknown_suffix = suffix
    declared = (declared_type or "").split(";", 1)[0].strip().lower()
    return extension_format or _MIME_TYPES.get(declared), unknown_suffix


def _declared_text(prefix: bytes, expected: str | None) -> bool:
    """Named or declared as a text format, and text it is."""
    return expected in _TEXT_FORMATS and _is_utf8(prefix)


def opens_archive(data: bytes, filename: str | None, declared_type: str | None) -> bool:
    """Whether :func:`detect_format` would open ``data`` as a ZIP archive (the sandbox
    checks those against the limits before a parser sees them)."""
    prefix = data[:_SNIFF_BYTES]
    return prefix.startswith(b"PK\x03\x04") and not _declared_text(
        prefix, _expected(filename, declared_type)[0]
    )


def detect_format(
    data: bytes, filename: str | None, declared_type: str | None, *,
    check_archive: Callable[[bytes], None] | None = None,
) -> str:
    """The key of ``FORMATS`` that ``data`` is, or ``ParseError(code="unsupported_type")``.

    ``check_archive(data)`` runs before a ZIP archive is opened to tell DOCX from PPTX (the
    upload path bounds the archive's directory with it; it raises :class:`ParseError`)."""
    expected, unknown_suffix = _expected(filename, declared_type)
    if not data:
        raise ParseError("The file is empty.", code="empty")

    prefix = data[:_SNIFF_BYTES]
    if _declared_text(prefix, expected):
        # A signature-like start (``PK``, ``%PDF-``) does not make text anything else.
        return _sniff_text(decode(prefix), expected)
    # Readers accept junk before the PDF header (up to 1 KB); a text file that merely
    # mentions "%PDF-" near its top stays text.
    if prefix.lstrip().startswith(b"%PDF-") or (
        b"%PDF-" in prefix[:1024] and expected not in _TEXT_FORMATS
    ):
        content = "pdf"
    elif prefix.startswith(b"PK\x03\x04"):
        if check_archive is not None:
            check_archive(data)
        content = _zip_format(data)
    elif _looks_binary(prefix) or (unknown_suffix is not None and b"\x00" in prefix):
        # An unknown extension gets no benefit of the doubt: one NUL byte means binary.
        if unknown_suffix is not None:
            raise _unsupported(f"Files of type {unknown_suffix!r} are not supported")
        raise _unsupported("The file is binary data of an unsupported type")
    else:
        content = _sniff_text(decode(prefix), expected if expected in _TEXT_FORMATS else None)

    if unknown_suffix is not None and content not in _TEXT_FORMATS:
        raise _unsupported(f"Files of type {unknown_suffix!r} are not supported")
    if expected is not None and expected != content:
        text_pair = expected in _TEXT_FORMATS and content in _TEXT_FORMATS
        if not text_pair:
            raise _unsupported(
                f"The file's content ({content}) does not match its declared type ({expected})"
            )
    return content


def parse(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None = None,
    max_pages: int = 2000,
    max_chars: int | None = None,
    max_csv_rows: int | None = None,
    max_csv_columns: int | None = None,
) -> ParsedDocument:
    """Detects the format of ``data`` and parses it; raises :class:`ParseError`.

    The caps cut rather than refuse: PDF pages and PPTX slides past ``max_pages``, CSV rows
    past ``max_csv_rows`` (after the header) and cells past ``max_csv_columns`` are not read,
    and the text is kept to its first ``max_chars`` characters (None: no cap); each cut adds
    a warning to the document that says what was left out.

    Resource limits are not applied here: untrusted bytes reach this function only through
    :mod:`ragd.ingestion.sandbox`, whose parent checks ZIP archives (DOCX, PPTX) against the
    configured :class:`~ragd.ingestion.limits.ParseLimits` with
    :func:`~ragd.ingestion.limits.check_zip` before this runs in a resource-limited child.
    """
    fmt = detect_format(data, filename, declared_type)
    parser = _parsers(max_pages, csv_rows=max_csv_rows, csv_columns=max_csv_columns)[fmt]
    document = parser(data)
    return document if max_chars is None else cut_to_chars(document, max_chars)


def _parsers(
    max_pages: int, *, csv_rows: int | None = None, csv_columns: int | None = None
) -> dict[str, Callable[[bytes], ParsedDocument]]:
    # Imported here: each pulls in a heavy third-party library only when its format is used.
    from ragd.ingestion.parsers.csv import parse_csv
    from ragd.ingestion.parsers.docx import parse_docx
    from ragd.ingestion.parsers.html import parse_html
    from ragd.ingestion.parsers.markdown import parse_markdown
    from ragd.ingestion.parsers.pdf import parse_pdf
    from ragd.ingestion.parsers.pptx import parse_pptx
    from ragd.ingestion.parsers.rst import parse_rst
    from ragd.ingestion.parsers.text import parse_text

    return {
        "pdf": lambda data: parse_pdf(data, max_pages=max_pages),
        "docx": parse_docx,
        "pptx": lambda data: parse_pptx(data, max_pages=max_pages),
        "html": parse_html,
        "markdown": parse_markdown,
        "rst": parse_rst,
        "text": parse_text,
        "csv": lambda data: parse_csv(data, max_rows=csv_rows, max_columns=csv_columns),
    }
