"""What the DOCX and PPTX parsers share: DrawingML text (charts, SmartArt) and the wording
of the warnings for parts they do not read."""

from __future__ import annotations

from typing import Any

from ragd.ingestion.parsers.text import clean_inline

__all__ = ["drawing_text", "not_read"]

_DRAWING = {
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "c": "http://schemas.openxmlformats.org/drawingml/2006/chart",
}


def drawing_text(root: Any) -> str:
    """The text of a chart or SmartArt part: DrawingML paragraphs (titles, shapes) and a
    chart's series and category names."""
    lines = [
        "".join(t.text or "" for t in p.iterfind(".//a:t", _DRAWING))
        for p in root.iterfind(".//a:p", _DRAWING)
    ]
    lines += [v.text or "" for v in root.iterfind(".//c:strCache//c:v", _DRAWING)]
    return "\n".join(line for line in map(clean_inline, lines) if line)


def not_read(count: int, one: str, many: str) -> str:
    """The warning for ``count`` parts of a kind that were not read."""
    return f"1 {one} was not read" if count == 1 else f"{count:,} {many} were not read"
