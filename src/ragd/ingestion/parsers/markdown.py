"""Markdown with markdown-it-py: headings build the heading path; paragraphs, lists, code
fences, block quotes and tables become sections. Raw HTML keeps its visible text: an HTML
block is read by the HTML parser under the current heading path (its headings join it, so
an HTML page uploaded as Markdown reads as one), inline HTML shows as a browser shows it."""

from __future__ import annotations

import re
from collections import Counter
from html import escape
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, Section, SectionKind
from ragd.ingestion.parsers.html import html_inline_text, html_sections, skipped_warnings
from ragd.ingestion.parsers.text import clean_block, clean_inline, clean_preformatted, decode

__all__ = ["parse_markdown"]

#: The commonmark preset's cap on nesting (``maxNesting``): deeper quotes or lists cannot
#: recurse without bound, but markdown-it drops what lies below it.
_MAX_NESTING = 20
_CONTAINERS = frozenset({"blockquote_open", "list_item_open"})


def _inline_text(token: Any, skipped: Counter[str]) -> str:
    """The text of an inline token; with inline HTML, what a browser shows of it (what that
    skips is counted into ``skipped``)."""
    plain: list[str] = []
    markup: list[str] = []
    for child in token.children or ():
        if child.type in {"text", "code_inline", "image"}:  # an image's content is its alt
            plain.append(child.content)
            markup.append(escape(child.content, quote=False))
        elif child.type in {"softbreak", "hardbreak"}:
            plain.append(" ")
            markup.append(" ")
        elif child.type == "html_inline":
            markup.append(child.content)
    if len(markup) == len(plain):
        return clean_inline("".join(plain))
    text, skips = html_inline_text("".join(markup))
    skipped.update(skips)
    return text


def _too_deep(token: Any, lines: list[str]) -> str:
    """The source of a quote or list item that markdown-it left unread because it is nested
    past ``_MAX_NESTING`` (with the rest of its list, to the end of the file), as plain text;
    "" for any other token."""
    # A container opened at level 19 holds its content at level 20, which is not parsed.
    if token.type not in _CONTAINERS or token.level < _MAX_NESTING - 1 or not token.map:
        return ""
    start, end = token.map
    return clean_block("\n".join(lines[start:end]))


def parse_markdown(data: bytes) -> ParsedDocument:
    from markdown_it import MarkdownIt

    source = decode(data).replace("\x00", "")
    # The commonmark preset caps nesting (maxNesting), so deep quotes or lists cannot recurse
    # without bound.
    parser = MarkdownIt("commonmark", {"maxNesting": _MAX_NESTING}).enable("table")
    tokens = parser.parse(source)
    lines = re.sub(r"\r\n?", "\n", source).split("\n")  # as markdown-it counts them

    sections: list[Section] = []
    headings: list[tuple[int, str]] = []
    list_depth = quote_depth = 0
    list_items: list[str] = []
    table_rows: list[str] = []
    row: list[str] | None = None
    in_table = False
    pending_heading: int | None = None
    title: str | None = None
    skipped: Counter[str] = Counter()
    too_deep = 0

    def path() -> tuple[str, ...]:
        return tuple(text for _, text in headings)

    for token in tokens:
        kind = token.type
        if kind == "heading_open":
            pending_heading = int(token.tag[1:])
        elif kind == "inline":
            text = _inline_text(token, skipped)
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
        elif kind == "html_block":
            found, skips = html_sections(token.content, headings)
            sections.extend(found)
            skipped.update(skips)
            if title is None and headings and headings[0][0] == 1:
                title = headings[0][1]

        if deep := _too_deep(token, lines):
            too_deep += 1
            sections.append(Section(text=deep, heading_path=path(), kind="text"))
    warnings = skipped_warnings(skipped)
    if too_deep:
        warnings.append(
            f"{too_deep} quote or list item nested over {_MAX_NESTING} levels deep "
            "was read as plain text"
        )
    return ParsedDocument(
        format="markdown", sections=tuple(sections), title=title, warnings=tuple(warnings)
    )
