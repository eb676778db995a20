"""DOCX with python-docx: "Title"/"Heading N" styles build the heading path; paragraphs,
lists and tables (rows as "cell | cell") in body order.

python-docx parses the package XML with ``resolve_entities=False`` and lxml's default
``no_network=True``, so external entities are never loaded.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.text import clean_inline

__all__ = ["parse_docx"]

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.I)


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


def _table_rows(table: Any) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = clean_inline(cell.text)
            # Merged cells repeat the same cell object; keep its text once.
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def parse_docx(data: bytes) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

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

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            flush_list()
            table = _table_rows(block)
            if table:
                sections.append(Section(text=table, heading_path=path(), kind="table"))
            continue
        text = clean_inline(block.text)
        if not text:
            continue
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
    return ParsedDocument(format="docx", sections=tuple(sections), title=title)
