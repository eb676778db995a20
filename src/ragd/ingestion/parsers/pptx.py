"""PPTX with python-pptx: one section per slide (page = slide number, title as heading)
holding its text frames, tables, charts (title, axis, series and category names) and
SmartArt, group shapes included; then the speaker notes as a "notes" section. Text that
slide layouts and masters put on every slide (outside their placeholders) follows the last
slide, once. Comments and embedded objects (OLE) are not read; a warning counts them.

python-pptx parses the package XML with ``resolve_entities=False`` and no network.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.office import drawing_text, not_read
from ragd.ingestion.parsers.text import clean_block, clean_inline

__all__ = ["parse_pptx"]

_SMARTART_IDS = "{http://schemas.openxmlformats.org/drawingml/2006/diagram}relIds"
_SMARTART_DATA = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}dm"
_COMMENTS = frozenset(
    {
        "application/vnd.openxmlformats-officedocument.presentationml.comments+xml",
        "application/vnd.ms-powerpoint.comments+xml",
    }
)


def _text(frame: Any) -> str:
    """The text of a text frame or paragraph; a line break (a vertical tab) is a newline,
    not a control character that the clean-up would delete, gluing two words."""
    return str(frame.text).replace("\v", "\n")


def _xml(blob: bytes) -> Any:
    """The XML of a part (python-pptx leaves SmartArt data and comments unparsed)."""
    from pptx.oxml import parse_xml

    try:
        return parse_xml(blob)
    except SyntaxError as exc:  # lxml.etree.XMLSyntaxError subclasses SyntaxError
        raise ParseError(f"The PPTX file contains malformed XML: {exc}") from exc


def _table_text(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells = [clean_inline(_text(cell)) for cell in row.cells]
        cells = [cell for cell in cells if cell]
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _graphic_text(shape: Any) -> str | None:
    """The text of a table, chart or SmartArt graphic frame; "" for other shapes, None for
    an embedded object, which cannot be read."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    if getattr(shape, "has_table", False) and shape.has_table:
        return _table_text(shape.table)
    if getattr(shape, "has_chart", False) and shape.has_chart:
        return drawing_text(_xml(shape.chart_part.blob))
    smartart = shape.element.find(f".//{_SMARTART_IDS}")
    if smartart is not None and smartart.get(_SMARTART_DATA):
        try:
            return drawing_text(_xml(shape.part.related_part(smartart.get(_SMARTART_DATA)).blob))
        except KeyError:  # a dangling relationship: there is no data to read
            return ""
    try:
        kind = shape.shape_type
    except NotImplementedError:
        return ""
    return None if kind == MSO_SHAPE_TYPE.EMBEDDED_OLE_OBJECT else ""


def _shape_texts(shapes: Any, skip: Any) -> tuple[list[str], int]:
    """The texts of ``shapes`` but ``skip`` (group shapes walked), and how many embedded
    objects there were."""
    from pptx.shapes.group import GroupShape

    texts: list[str] = []
    embedded = 0
    stack = list(reversed(list(shapes)))
    while stack:  # group shapes nest; walk them with a stack, not recursion
        shape = stack.pop()
        if shape is skip or (skip is not None and shape.shape_id == skip.shape_id):
            continue
        if isinstance(shape, GroupShape):
            stack.extend(reversed(list(shape.shapes)))
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            lines = [clean_inline(_text(p)) for p in shape.text_frame.paragraphs]
            texts.append("\n".join(line for line in lines if line))
        graphic = _graphic_text(shape)
        if graphic is None:
            embedded += 1
        else:
            texts.append(graphic)
    return [text for text in texts if text], embedded


def _backdrop_texts(slides: list[Any]) -> list[str]:
    """The text the layouts and masters of ``slides`` show on them: their shapes that are
    not placeholders (a placeholder's own text is a prompt the slide replaces), once each."""
    sources: dict[Any, Any] = {}  # by part: the slide objects are not hashable
    for slide in slides:
        for source in (slide.slide_layout.slide_master, slide.slide_layout):
            sources.setdefault(source.part, source)
    texts: dict[str, None] = {}
    for source in sources.values():
        shapes = [shape for shape in source.shapes if not shape.is_placeholder]
        texts.update(dict.fromkeys(_shape_texts(shapes, None)[0]))
    return list(texts)


def _comments(presentation: Any) -> int:
    """How many comments (with any text) the presentation has."""
    return sum(
        1
        for part in presentation.part.package.iter_parts()
        if part.content_type in _COMMENTS
        for comment in _xml(part.blob)
        if "".join(comment.itertext()).strip()
    )


def parse_pptx(data: bytes, *, max_pages: int = 2000) -> ParsedDocument:
    import pptx
    from pptx.exc import PackageNotFoundError

    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(f"The PPTX file could not be read: {exc}") from exc
    except SyntaxError as exc:  # lxml.etree.XMLSyntaxError subclasses SyntaxError
        raise ParseError(f"The PPTX file contains malformed XML: {exc}") from exc

    sections: list[Section] = []
    warnings: list[str] = []
    slides = list(presentation.slides)
    if len(slides) > max_pages:
        warnings.append(f"only the first {max_pages} of {len(slides)} slides were read")
    title: str | None = clean_inline(presentation.core_properties.title or "") or None
    embedded = 0
    for number, slide in enumerate(slides[:max_pages], start=1):
        title_shape = slide.shapes.title
        slide_title = clean_inline(_text(title_shape.text_frame)) if title_shape is not None else ""
        path = (slide_title,) if slide_title else ()
        texts, count = _shape_texts(slide.shapes, title_shape)
        embedded += count
        text = clean_block("\n\n".join(texts)) or slide_title
        if text:
            sections.append(Section(text=text, heading_path=path, page=number, kind="slide"))
        if slide.has_notes_slide:
            notes_frame = slide.notes_slide.notes_text_frame
            notes = clean_block(_text(notes_frame)) if notes_frame is not None else ""
            if notes:
                sections.append(Section(text=notes, heading_path=path, page=number, kind="notes"))
    sections += [Section(text, kind="text") for text in _backdrop_texts(slides[:max_pages])]
    if title is None and sections and sections[0].heading_path:
        title = sections[0].heading_path[0]
    comments = _comments(presentation)
    if comments:
        warnings.append(not_read(comments, "comment", "comments"))
    if embedded:
        warnings.append(not_read(embedded, "embedded object", "embedded objects"))
    return ParsedDocument(
        format="pptx",
        sections=tuple(sections),
        title=title,
        pages=len(slides),
        warnings=tuple(warnings),
    )
