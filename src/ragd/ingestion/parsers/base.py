"""What every parser returns: the document's text as ordered sections that keep structure.

Parsers are pure functions ``bytes -> ParsedDocument`` that run inside the parsing sandbox
(``ragd.ingestion.sandbox``), never in the server process. They must not read other files,
touch the network, or resolve XML entities.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

SectionKind = Literal[
    "heading", "paragraph", "list", "table", "code", "quote", "slide", "notes", "row", "text"
]

#: MIME types ragd accepts, by format name.
FORMATS: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "html": "text/html",
    "markdown": "text/markdown",
    "rst": "text/x-rst",
    "text": "text/plain",
    "csv": "text/csv",
}


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path.

    ``heading_path`` is the chain of headings above the text (outermost first); ``page`` is
    the 1-based page (PDF) or slide (PPTX) number when the format has them.
    """

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    kind: SectionKind = "paragraph"


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """Parser output. ``text`` is the sections' texts joined by blank lines ("\\n\\n"), and
    chunk character offsets refer to it."""

    format: str  # a key of FORMATS
    sections: tuple[Section, ...]
    title: str | None = None
    pages: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections)


#: A first line longer than this (in words) is a sentence, not a title.
_TITLE_WORDS = 14


def document_title(document: ParsedDocument) -> str | None:
    """The title a document gives itself: its own (HTML ``<title>``, PDF, DOCX or PPTX
    properties, a Markdown or reST top heading), else its first heading, else a first line
    that reads as a title (short, no terminal punctuation; not for CSV, whose first line is
    a header row); None when it has none (the file name is then the title)."""
    if document.title and document.title.strip():
        return " ".join(document.title.split())
    for section in document.sections:
        if section.heading_path and section.heading_path[0].strip():
            return " ".join(section.heading_path[0].split())
    if document.format == "csv":
        return None
    first = next((line.strip() for line in document.text.splitlines() if line.strip()), "")
    words = first.split()
    if (
        0 < len(words) <= _TITLE_WORDS and first[-1] not in ".,;:!?" and any(
            c.isalpha() for c in first
        )
    ):
        return " ".join(words)
    return None


def cut_to_chars(document: ParsedDocument, max_chars: int) -> ParsedDocument:
    """``document`` with its text (:attr:`ParsedDocument.text`) kept to the first
    ``max_chars`` characters, the sections past that dropped and a warning saying so; the
    document itself when it is not longer."""
    total = sum(len(section.text) for section in document.sections)
    total += 2 * max(len(document.sections) - 1, 0)  # the blank lines that join them
    if total <= max_chars:
        return document
    kept: list[Section] = []
    used = 0
    for section in document.sections:
        room = max_chars - used - (2 if kept else 0)
        if room <= 0:
            break
        if len(section.text) > room:
            kept.append(replace(section, text=section.text[:room]))
            break
        kept.append(section)
        used += len(section.text) + (2 if len(kept) > 1 else 0)
    warning = f"only the first {max_chars:,} of {total:,} characters were read"
    return replace(document, sections=tuple(kept), warnings=(*document.warnings, warning))


class ParseError(Exception):
    """The file cannot be parsed (corrupt, unsupported, over a limit); the message is shown
    to the user as the job's error, so it says what is wrong in plain words."""

    def __init__(self, message: str, *, code: str = "parse_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
