"""DOCX with python-docx: "Title"/"Heading N" styles build the heading path; paragraphs,
lists and tables (rows as "cell | cell") in body order.

Text is read from the XML itself, so nothing visible is left out: runs inside hyperlinks,
fields, content controls and tracked insertions, nested tables (as text in their cell),
text boxes (after the paragraph that anchors them), equations. Footnotes, endnotes, chart
and SmartArt text, then headers and footers follow the body. Comments and embedded objects
(OLE objects, imported chunks) are not read; a warning says how many there were.

python-docx parses the package XML with ``resolve_entities=False`` and lxml's default
``no_network=True``, so external entities are never loaded.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.office import drawing_text, not_read
from ragd.ingestion.parsers.text import clean_inline

__all__ = ["parse_docx"]

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_P, _TBL, _TR, _TC, _TXBX, _PPR = (
    f"{_W}{name}" for name in ("p", "tbl", "tr", "tc", "txbxContent", "pPr")
)
_TEXT = frozenset({f"{_W}t", "{http://schemas.openxmlformats.org/officeDocument/2006/math}t"})
_BREAKS = frozenset({f"{_W}br", f"{_W}cr", f"{_W}tab"})
_EMBEDDED = frozenset({f"{_W}object", f"{_W}altChunk"})
_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_OFFICE = "application/vnd.openxmlformats-officedocument."
#: The parts read after the body, in this order, by content type.
_EXTRA_PARTS = (
    f"{_OFFICE}wordprocessingml.footnotes+xml",
    f"{_OFFICE}wordprocessingml.endnotes+xml",
    f"{_OFFICE}drawingml.chart+xml",
    f"{_OFFICE}drawingml.diagramData+xml",
    f"{_OFFICE}wordprocessingml.header+xml",
    f"{_OFFICE}wordprocessingml.footer+xml",
)
_COMMENTS = f"{_OFFICE}wordprocessingml.comments+xml"


def _style_name(paragraph: Any) -> str:
    try:
        style = paragraph.style
    except (KeyError, ValueError):
        return ""
    return str(style.name or "") if style is not None else ""


def _is_list(paragraph: Any, style: str) -> bool:
    if style.lower().startswith("list"):
        return True
    properties = paragraph._p.pPr  # numbering lives in w:pPr/w:numPr
    return properties is not None and properties.numPr is not None


def _own_text(paragraph: Any) -> tuple[str, list[Any]]:
    """The text of a ``w:p`` (runs wherever they sit: hyperlinks, fields, content controls,
    insertions, equations) and the text boxes (``w:txbxContent``) anchored in it. The
    fallback copy of a drawing (``mc:Fallback``) is not read twice."""
    parts: list[str] = []
    boxes: list[Any] = []
    stack = list(reversed(paragraph))
    while stack:
        node = stack.pop()
        if not isinstance(node.tag, str) or node.tag in (_PPR, _FALLBACK):
            continue
        if node.tag == _TXBX:
            boxes.append(node)
        elif node.tag in _TEXT:
            parts.append(node.text or "")
        elif node.tag in _BREAKS:
            parts.append(" ")
        else:
            stack.extend(reversed(node))
    return "".join(parts), boxes


def _blocks(root: Any) -> Iterator[tuple[Any, str]]:
    """The paragraphs (with their text) and tables (with "") under ``root`` in reading
    order, through content controls and other wrappers; a text box's blocks follow the
    paragraph that anchors it."""
    stack = list(reversed(root))
    while stack:
        node = stack.pop()
        if not isinstance(node.tag, str) or node.tag == _FALLBACK:
            continue
        if node.tag == _P:
            text, boxes = _own_text(node)
            yield node, text
            for box in reversed(boxes):
                stack.extend(reversed(box))
        elif node.tag == _TBL:
            yield node, ""
        else:
            stack.extend(reversed(node))


def _owned(element: Any, tag: str, owner_tag: str) -> Iterator[Any]:
    """The ``tag`` descendants of ``element`` whose nearest ``owner_tag`` ancestor is it."""
    for node in element.iter(tag):
        if next(node.iterancestors(owner_tag), None) is element:
            yield node


def _in_fallback(node: Any, stop: Any) -> bool:
    """Whether ``node`` lies in a drawing's fallback copy (``mc:Fallback``) below ``stop``."""
    for ancestor in node.iterancestors():
        if ancestor is stop:
            return False
        if ancestor.tag == _FALLBACK:
            return True
    return False


def _cell_text(cell: Any) -> str:
    """All text of a ``w:tc`` on one line: its paragraphs, text boxes and nested tables."""
    texts = (_own_text(p)[0] for p in cell.iter(_P) if not _in_fallback(p, cell))
    return clean_inline(" ".join(texts))


def _table_rows(table: Any) -> str:
    rows: list[str] = []
    for row in _owned(table, _TR, _TBL):
        # A merged cell is one w:tc (gridSpan) or empty continuations (vMerge): no repeats.
        cells = [text for text in map(_cell_text, _owned(row, _TC, _TR)) if text]
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _story_text(root: Any) -> str:
    """The text of a header, footer, footnote or comment: its paragraphs and tables as
    lines."""
    lines = (
        _table_rows(block) if block.tag == _TBL else clean_inline(text)
        for block, text in _blocks(root)
    )
    return "\n".join(line for line in lines if line)


def _xml(blob: bytes) -> Any:
    """The XML of a part (python-docx leaves footnotes, charts and comments unparsed)."""
    from docx.oxml.parser import parse_xml

    try:
        return parse_xml(blob)
    except SyntaxError as exc:  # lxml.etree.XMLSyntaxError subclasses SyntaxError
        raise ParseError(f"The DOCX file contains malformed XML: {exc}") from exc


def _extra_sections(document: Any) -> list[Section]:
    """Footnotes, endnotes, charts, SmartArt, headers and footers as sections, each text
    once (a header repeated on several page styles is one)."""
    parts = sorted(document.part.package.iter_parts(), key=lambda part: str(part.partname))
    texts: list[str] = []
    for content_type in _EXTRA_PARTS:
        for part in parts:
            if part.content_type == content_type:
                root = _xml(part.blob)
                wordprocessing = "wordprocessingml" in content_type
                texts.append(_story_text(root) if wordprocessing else drawing_text(root))
    return [Section(text, kind="text") for text in dict.fromkeys(texts) if text]


def _unread_warnings(document: Any) -> list[str]:
    """Warnings for what is not read: comments, embedded objects (OLE, imported files)."""
    comments = sum(
        1
        for part in document.part.package.iter_parts()
        if part.content_type == _COMMENTS
        for comment in _xml(part.blob)
        if _story_text(comment)
    )
    embedded = sum(1 for node in document.element.body.iter() if node.tag in _EMBEDDED)
    warnings = [not_read(comments, "comment", "comments")] if comments else []
    if embedded:
        warnings.append(not_read(embedded, "embedded object", "embedded objects"))
    return warnings


def parse_docx(data: bytes) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(f"The DOCX file could not be read: {exc}") from exc
    except SyntaxError as exc:  # lxml.etree.XMLSyntaxError subclasses SyntaxError
        raise ParseError(f"The DOCX file contains malformed XML: {exc}") from exc

    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    list_items: list[str] = []
    title: str | None = clean_inline(document.core_properties.title or "") or None

    def path() -> tuple[str, ...]:
        return tuple(text for _, text in headings)

    def flush_list() -> None:
        if list_items:
            sections.append(Section("\n".join(list_items), heading_path=path(), kind="list"))
            list_items.clear()

    for element, raw in _blocks(document.element.body):
        if element.tag == _TBL:
            flush_list()
            table = _table_rows(element)
            if table:
                sections.append(Section(text=table, heading_path=path(), kind="table"))
            continue
        text = clean_inline(raw)
        if not text:
            continue
        block = Paragraph(element, document)
        style = _style_name(block)
        match = _HEADING_STYLE.match(style)
        level = 0 if style.lower() == "title" else int(match.group(1)) if match else None
        if level is not None:
            flush_list()
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, text))
            if level == 0 and title is None:
                title = text
            sections.append(Section(text=text, heading_path=path(), kind="heading"))
        elif _is_list(block, style):
            list_items.append(f"- {text}")
        else:
            flush_list()
            sections.append(Section(text=text, heading_path=path(), kind="paragraph"))
    flush_list()
    return ParsedDocument(
        format="docx",
        sections=(*sections, *_extra_sections(document)),
        title=title,
        warnings=tuple(_unread_warnings(document)),
    )
