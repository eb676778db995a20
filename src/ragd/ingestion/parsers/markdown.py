"""Markdown with markdown-it-py: headings build the heading path; paragraphs, lists, code
fences, block quotes and tables become sections. Raw HTML blocks are dropped."""

from __future__ import annotations

from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, Section, SectionKind
from ragd.ingestion.parsers.text import clean_inline, clean_preformatted, decode

__all__ = ["parse_markdown"]


def _inline_text(token: Any) -> str:
    parts: list[str] = []
    for child in token.children or ():
        if child.type in {"text", "code_inline"}:
            parts.append(child.content)
        elif child.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return clean_inline("".join(parts))


def parse_markdown(data: bytes) -> ParsedDocument:
    from markdown_it import MarkdownIt

    source = decode(data).replace("\x00", "")
    # The commonmark preset caps nesting (maxNesting), so deep quotes or lists cannot recurse
    # without bound.
    tokens = MarkdownIt("commonmark").enable("table").parse(source)

    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    list_depth = quote_depth = 0
    list_items: list[str] = []
    table_rows: list[str] = []
    row: list[str] | None = None
    in_table = False
    pending_heading: int | None = None
    title: str | None = None

    def path() -> tuple[str, ...]:
        return tuple(text for _, text in headings)

    for token in tokens:
        kind = token.type
        if kind == "heading_open":
            pending_heading = int(token.tag[1:])
        elif kind == "inline":
            text = _inline_text(token)
            if pending_heading is not None:
                level, pending_heading = pending_heading, None
                if not text:
                    continue
                while headings and headings[-1][0] >= level:
                    headings.pop()
                headings.append((level, text))
                if title is None and level == 1:
                    title = text
                sections.append(Section(text=text, heading_path=path(), kind="heading"))
            elif row is not None:
                row.append(text)
            elif list_depth:
                if text:
                    list_items.append(f"{'  ' * (list_depth - 1)}- {text}")
            elif text:
                block: SectionKind = "quote" if quote_depth else "paragraph"
                sections.append(Section(text=text, heading_path=path(), kind=block))
        elif kind in {"bullet_list_open", "ordered_list_open"}:
            list_depth += 1
        elif kind in {"bullet_list_close", "ordered_list_close"}:
            list_depth -= 1
            if list_depth == 0 and list_items:
                sections.append(Section("\n".join(list_items), heading_path=path(), kind="list"))
                list_items = []
        elif kind == "blockquote_open":
            quote_depth += 1
        elif kind == "blockquote_close":
            quote_depth -= 1
        elif kind == "table_open":
            in_table, table_rows = True, []
        elif kind == "tr_open" and in_table:
            row = []
        elif kind == "tr_close" and row is not None:
            cells = [cell for cell in row if cell]
            if cells:
                table_rows.append(" | ".join(cells))
            row = None
        elif kind == "table_close":
            in_table = False
            if table_rows:
                sections.append(Section("\n".join(table_rows), heading_path=path(), kind="table"))
        elif kind in {"fence", "code_block"}:
            code = clean_preformatted(token.content)
            if code:
                sections.append(Section(text=code, heading_path=path(), kind="code"))
    return ParsedDocument(format="markdown", sections=tuple(sections), title=title)
