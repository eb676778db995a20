"""PPTX with python-pptx: one section per slide (page = slide number, title as heading)
holding its text frames and tables, then the speaker notes as a "notes" section.

python-pptx parses the package XML with ``resolve_entities=False`` and no network.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.text import clean_block, clean_inline

__all__ = ["parse_pptx"]


def _shape_texts(shapes: Any, skip: Any) -> list[str]:
    from pptx.shapes.group import GroupShape

    texts: list[str] = []
    stack = list(reversed(list(shapes)))
    while stack:  # group shapes nest; walk them with a stack, not recursion
        shape = stack.pop()
        if shape is skip or (skip is not None and shape.shape_id == skip.shape_id):
            continue
        if isinstance(shape, GroupShape):
            stack.extend(reversed(list(shape.shapes)))
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            lines = [clean_inline(p.text) for p in shape.text_frame.paragraphs]
            text = "\n".join(line for line in lines if line)
            if text:
                texts.append(text)
        if getattr(shape, "has_table", False) and shape.has_table:
            rows = []
            for row in shape.table.rows:
                cells = [clean_inline(cell.text) for cell in row.cells]
                cells = [cell for cell in cells if cell]
                if cells:
                    rows.append(" | ".join(cells))
            if rows:
                texts.append("\n".join(rows))
    return texts


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
    for number, slide in enumerate(slides[:max_pages], start=1):
        title_shape = slide.shapes.title
        slide_title = clean_inline(title_shape.text_frame.text) if title_shape is not None else ""
        path = (slide_title,) if slide_title else ()
        body = "\n\n".join(_shape_texts(slide.shapes, title_shape))
        text = clean_block(body) or slide_title
        if text:
            sections.append(Section(text=text, heading_path=path, page=number, kind="slide"))
        if slide.has_notes_slide:
            notes_frame = slide.notes_slide.notes_text_frame
            notes = clean_block(notes_frame.text) if notes_frame is not None else ""
            if notes:
                sections.append(Section(text=notes, heading_path=path, page=number, kind="notes"))
    if title is None and sections and sections[0].heading_path:
        title = sections[0].heading_path[0]
    return ParsedDocument(
        format="pptx",
        sections=tuple(sections),
        title=title,
        pages=len(slides),
        warnings=tuple(warnings),
    )
