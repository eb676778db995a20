"""HTML: main content only, headings h1-h6 as the heading path, blocks in document order.

lxml's HTML parser never loads DTDs or external entities and does not expand internal
entity declarations, so billion-laughs and XXE documents come out as inert text. The tree
is walked with an explicit stack: deeply nested markup cannot exhaust Python's recursion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section, SectionKind
from ragd.ingestion.parsers.text import (
    clean_block,
    clean_inline,
    clean_preformatted,
    decode,
    detect_encoding,
)

__all__ = ["parse_html"]

_DROP = frozenset(
    {
        "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg",
        "template", "iframe", "object", "embed", "canvas", "button", "select", "head",
    }
)  # fmt: skip
# Site chrome that is not marked up with <nav>: DocBook's navheader/navfooter, Sphinx's
# sidebars and "related" bars, and anything with an explicit navigation role.
_DROP_CLASSES = frozenset(
    {"navheader", "navfooter", "sphinxsidebar", "related", "headerlink", "toc", "breadcrumbs"}
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "body", "li", "ul", "ol", "dl", "dt", "dd",
        "blockquote", "figure", "figcaption", "address", "details", "summary", "center",
        "hr", "fieldset", "caption",
    }
)  # fmt: skip
_BLOCK_KIND: dict[str, SectionKind] = {"li": "list", "blockquote": "quote"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)


@dataclass
class _Builder:
    sections: list[Section] = field(default_factory=list)
    headings: list[tuple[int, str]] = field(default_factory=list)
    buffer: list[str] = field(default_factory=list)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(text for _, text in self.headings)

    def add(self, section: Section) -> None:
        previous = self.sections[-1] if self.sections else None
        # Consecutive list items under one heading read best as one list section.
        if (
            section.kind == "list"
            and previous is not None
            and previous.kind == "list"
            and previous.heading_path == section.heading_path
        ):
            merged = Section(
                text=f"{previous.text}\n{section.text}",
                heading_path=section.heading_path,
                kind="list",
            )
            self.sections[-1] = merged
            return
        self.sections.append(section)

    def flush(self, kind: SectionKind) -> None:
        text = clean_inline("".join(self.buffer))
        self.buffer.clear()
        if not text:
            return
        if kind == "list":
            text = f"- {text}"
        self.add(Section(text=text, heading_path=self.path, kind=kind))

    def heading(self, level: int, text: str) -> None:
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, text))
        self.sections.append(Section(text=text, heading_path=self.path, kind="heading"))


def _tag(element: Any) -> str | None:
    tag = element.tag
    if not isinstance(tag, str):  # comments, processing instructions, entities
        return None
    return tag.rsplit("}", 1)[-1].lower()


def _dropped(element: Any, tag: str) -> bool:
    if tag in _DROP:
        return True
    if (element.get("role") or "").lower() in {"navigation", "banner", "contentinfo"}:
        return True
    classes = set((element.get("class") or "").split())
    return bool(classes & _DROP_CLASSES)


def _text_of(element: Any) -> str:
    """All text under ``element`` without dropped descendants, iteratively."""
    parts: list[str] = []
    stack: list[tuple[Any, bool]] = [(element, False)]
    while stack:
        node, closing = stack.pop()
        if closing:
            if node is not element and node.tail:
                parts.append(node.tail)
            continue
        tag = _tag(node)
        if tag is None or _dropped(node, tag):
            if node is not element and node.tail:
                parts.append(node.tail)
            continue
        if tag == "br":
            parts.append("\n")
        if node.text:
            parts.append(node.text)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node))
    return "".join(parts)


def _table(element: Any) -> str:
    rows: list[str] = []
    for row in element.iter("tr"):
        cells = [
            clean_inline(_text_of(cell))
            for cell in row
            if isinstance(cell.tag, str) and cell.tag.lower() in {"td", "th"}
        ]
        cells = [cell for cell in cells if cell]
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _content_root(root: Any) -> Any:
    articles = []
    for element in root.iter():
        tag = _tag(element)
        if tag == "main" or (element.get("role") or "").lower() == "main":
            return element
        if tag == "article":
            articles.append(element)
    if len(articles) == 1:
        return articles[0]
    body = root.find("body")
    return body if body is not None else root


def _to_text(data: bytes) -> str:
    match = _META_CHARSET.search(data[:4096])
    encoding = match.group(1).decode("ascii").lower() if match else detect_encoding(data)
    if encoding.startswith("utf-16") and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = detect_encoding(data)  # a <meta> that lies about UTF-16 in ASCII bytes
    text = decode(data, encoding)
    # lxml refuses str input that still carries an XML encoding declaration.
    return _XML_DECL.sub("", text, count=1)


def parse_html(data: bytes) -> ParsedDocument:
    import lxml.etree
    import lxml.html

    text = _to_text(data).replace("\x00", "")
    if not text.strip():
        raise ParseError("The HTML document is empty.", code="empty")
    parser = lxml.html.HTMLParser(
        no_network=True, huge_tree=False, remove_comments=True, remove_pis=True
    )
    try:
        root = lxml.html.document_fromstring(text, parser=parser)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError) as exc:
        raise ParseError(f"The HTML document could not be parsed: {exc}") from exc
    # libxml2 stops reading at 256 levels of nesting (no huge_tree), silently dropping the
    # rest of the document; a truncated document is refused rather than half-indexed.
    if any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log):
        raise ParseError(
            "The HTML document is nested too deeply (over 256 levels) to be read completely.",
            code="limit_exceeded",
        )

    title_element = root.find(".//title")
    title = clean_inline(title_element.text_content()) if title_element is not None else None

    builder = _Builder()
    kinds: list[SectionKind] = ["paragraph"]
    start = _content_root(root)
    stack: list[tuple[Any, bool]] = [(start, False)]
    while stack:
        element, closing = stack.pop()
        if closing:
            tag = _tag(element)
            if tag in _BLOCKS:
                builder.flush(kinds.pop())
            if element is not start and element.tail:
                builder.buffer.append(element.tail)
            continue
        tag = _tag(element)
        if tag is None or _dropped(element, tag):
            if element is not start and element.tail:
                builder.buffer.append(element.tail)
            continue
        if tag in _HEADINGS:
            builder.flush(kinds[-1])
            heading = clean_inline(_text_of(element)).rstrip("¶").strip()
            if heading:
                builder.heading(_HEADINGS[tag], heading)
        elif tag == "pre":
            builder.flush(kinds[-1])
            code = clean_preformatted(_text_of(element))
            if code:
                builder.add(Section(text=code, heading_path=builder.path, kind="code"))
        elif tag == "table":
            builder.flush(kinds[-1])
            table = _table(element)
            if table:
                builder.add(Section(text=table, heading_path=builder.path, kind="table"))
        else:
            if tag in _BLOCKS:
                builder.flush(kinds[-1])
                # A <p> inside an <li> or <blockquote> is still part of that list or quote.
                inherited: SectionKind = "paragraph"
                if kinds[-1] in {"list", "quote"}:
                    inherited = kinds[-1]
                kinds.append(_BLOCK_KIND.get(tag, inherited))
            elif tag == "br":
                builder.buffer.append(" ")
            if element.text:
                builder.buffer.append(element.text)
            stack.append((element, True))
            stack.extend((child, False) for child in reversed(element))
            continue
        if element is not start and element.tail:
            builder.buffer.append(element.tail)
    builder.flush(kinds[-1])
    if title is not None:
        title = clean_block(title) or None
    return ParsedDocument(format="html", sections=tuple(builder.sections), title=title)
