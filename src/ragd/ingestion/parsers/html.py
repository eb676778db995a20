"""HTML: main content only, headings h1-h6 as the heading path, blocks in document order.

Nothing visible is dropped without a word: site chrome (``<nav>``, ``<aside>``, a page's own
``<header>`` and ``<footer>``, navigation roles and classes), ``<noscript>`` fallbacks,
``<iframe>`` documents and the text outside the page's ``<main>`` (or its only ``<article>``)
are skipped with a warning that names them, when they hold any words. What a browser never
renders (``<head>``, ``<script>``, ``<style>``, ``<template>``, hidden inputs) goes silently.
Text hidden by the ``hidden`` attribute or CSS is read: pages hide FAQ answers until a click.
Form controls are read as they show: button labels, options, input values, text areas.

lxml's HTML parser never loads DTDs or external entities and does not expand internal
entity declarations, so billion-laughs and XXE documents come out as inert text. The tree
is walked with an explicit stack: deeply nested markup cannot exhaust Python's recursion.
"""

from __future__ import annotations

import re
from collections import Counter
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

__all__ = ["html_inline_text", "html_sections", "parse_html", "skipped_warnings"]

#: Never rendered by a browser: dropped without a warning.
_INVISIBLE = frozenset({"script", "style", "head", "template"})
#: Rendered, but not the page's content: dropped with a warning when it holds words.
_CHROME = frozenset({"nav", "aside", "noscript", "iframe"})
#: A <header> or <footer> inside one of these belongs to that content, not to the site.
_SECTIONING = frozenset({"article", "main", "section", "aside", "nav"})
_CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo"})
# Site chrome that is not marked up with <nav>: DocBook's navheader/navfooter, Sphinx's
# sidebars and "related" bars, and anything with an explicit navigation role.
_DROP_CLASSES = frozenset(
    {"navheader", "navfooter", "sphinxsidebar", "related", "headerlink", "toc", "breadcrumbs"}
)
#: <input> types that show their value as text.
_TEXT_INPUTS = frozenset(
    {"text", "search", "email", "url", "tel", "number", "button", "submit", "reset"}
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "p", "div", "section", "article", "main", "body", "li", "ul", "ol", "dl", "dt", "dd",
        "blockquote", "figure", "figcaption", "address", "details", "summary", "center",
        "hr", "fieldset", "caption", "legend", "dialog", "hgroup", "menu", "search", "form",
        "header", "footer", "option", "optgroup", "textarea", "tr", "td", "th",
    }
)  # fmt: skip
#: Inline elements that a browser sets apart from their neighbours.
_SPACED = frozenset({"br", "button", "input", "select", "label", "rt", "text"})
#: Elements whose text, inside a heading, code block or table cell, is a line of its own.
_BREAKS = _BLOCKS | _HEADINGS.keys() | {"br", "pre", "table"}
_BLOCK_KIND: dict[str, SectionKind] = {"li": "list", "option": "list", "blockquote": "quote"}
_ROW_GROUPS = frozenset({"thead", "tbody", "tfoot"})
_WORD = re.compile(r"\w")
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


def _skip_reason(element: Any, tag: str) -> str | None:
    """Why ``element`` is not read: "" when browsers never render it, a label naming it when
    it is site chrome or fallback content, None when it is read."""
    if tag in _INVISIBLE or (tag == "input" and (element.get("type") or "").lower() == "hidden"):
        return ""
    if tag in _CHROME:
        return f"<{tag}>"
    if tag in {"header", "footer"} and not any(
        _tag(ancestor) in _SECTIONING for ancestor in element.iterancestors()
    ):
        return f"<{tag}>"
    role = (element.get("role") or "").lower()
    if role in _CHROME_ROLES:
        return f'<{tag} role="{role}">'
    classes = sorted(set((element.get("class") or "").split()) & _DROP_CLASSES)
    return f'<{tag} class="{classes[0]}">' if classes else None


def _dropped(element: Any, tag: str) -> bool:
    return _skip_reason(element, tag) is not None


def _input_value(element: Any) -> str:
    """The text an ``<input>`` shows: its value, for the types that display it."""
    kind = (element.get("type") or "text").lower()
    return f" {element.get('value') or ''} " if kind in _TEXT_INPUTS else " "


def _text_of(element: Any, skip: Any = None) -> str:
    """All text under ``element`` (``skip`` and dropped descendants left out), each block on
    a line of its own; iterative."""
    parts: list[str] = []
    stack: list[tuple[Any, bool]] = [(element, False)]
    while stack:
        node, closing = stack.pop()
        tag = _tag(node)
        if closing:
            if tag in _BREAKS:
                parts.append("\n")
            if node is not element and node.tail:
                parts.append(node.tail)
            continue
        if tag is None or node is skip or _dropped(node, tag):
            if node is not element and node.tail:
                parts.append(node.tail)
            continue
        if tag in _BREAKS:
            parts.append("\n")
        elif tag == "input":
            parts.append(_input_value(node))
        if node.text:
            parts.append(node.text)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node))
    return "".join(parts)


def _row(row: Any) -> str:
    """A table row as "cell | cell"; text stray between the cells is a cell of its own."""
    parts = [row.text or ""]
    for child in row:
        parts += [_text_of(child), child.tail or ""]
    return " | ".join(cell for cell in map(clean_inline, parts) if cell)


def _table(table: Any) -> str:
    """The caption and rows of ``table`` as lines, in document order. Text stray between the
    rows (a browser shows it next to the table) is a line of its own; a nested table is text
    in its cell."""
    lines: list[str] = []
    stack: list[Any] = [table]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            lines.append(clean_inline(node))
            continue
        if node is not table and node.tail:
            stack.append(node.tail)
        if node is table or _tag(node) in _ROW_GROUPS:
            stack.extend(reversed(node))
            stack.append(node.text or "")
        elif _tag(node) == "tr":
            lines.append(_row(node))
        else:  # <caption>, <colgroup>, stray elements
            lines.append(clean_inline(_text_of(node)))
    return "\n".join(line for line in lines if line)


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
    return _body(root)


def _body(root: Any) -> Any:
    body = root.find("body")
    return body if body is not None else root


def _has_words(element: Any) -> bool:
    """Whether ``element`` holds any words: in its text or in an ``<iframe srcdoc>``."""
    if _WORD.search(element.text_content()):
        return True
    return any(_WORD.search(frame.get("srcdoc") or "") for frame in element.iter("iframe"))


def _skipped(body: Any, start: Any) -> Counter[str]:
    """What under ``body`` holds words and is not read: dropped elements by label, and the
    text outside the content root ``start``."""
    skipped: Counter[str] = Counter()
    stack = [body]
    while stack:
        element = stack.pop()
        tag = _tag(element)
        if tag is None:
            continue
        reason = _skip_reason(element, tag)
        if reason is None:
            stack.extend(reversed(element))
        elif reason and _has_words(element):
            skipped[reason] += 1
    if start is not body and _WORD.search(_text_of(body, skip=start)):
        role = "" if _tag(start) in {"main", "article"} else ' role="main"'
        skipped[f"text outside the <{_tag(start)}{role}>"] += 1
    return skipped


def skipped_warnings(skipped: Counter[str]) -> list[str]:
    """The document warnings that name what :func:`_skipped` counted: the elements skipped
    (at most one warning), then the text outside the content root."""
    elements = [f"{count} {label}" for label, count in skipped.items() if label.startswith("<")]
    outside = [f"skipped the {label} element" for label in skipped if label.startswith("text")]
    if not elements:
        return outside
    return [f"skipped page chrome and fallback content: {', '.join(elements)}", *outside]


def _read(start: Any, builder: _Builder) -> None:
    """Adds the blocks under ``start`` to ``builder``, in document order."""
    kinds: list[SectionKind] = ["paragraph"]
    stack: list[tuple[Any, bool]] = [(start, False)]
    while stack:
        element, closing = stack.pop()
        if closing:
            tag = _tag(element)
            if tag in _BLOCKS:
                builder.flush(kinds.pop())
            elif tag in _SPACED:
                builder.buffer.append(" ")
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
            elif tag == "input":
                builder.buffer.append(_input_value(element))
            elif tag in _SPACED:
                builder.buffer.append(" ")
            if element.text:
                builder.buffer.append(element.text)
            stack.append((element, True))
            stack.extend((child, False) for child in reversed(element))
            continue
        if element is not start and element.tail:
            builder.buffer.append(element.tail)
    builder.flush(kinds[-1])


def _to_text(data: bytes) -> str:
    match = _META_CHARSET.search(data[:4096])
    encoding = match.group(1).decode("ascii").lower() if match else detect_encoding(data)
    if encoding.startswith("utf-16") and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = detect_encoding(data)  # a <meta> that lies about UTF-16 in ASCII bytes
    return decode(data, encoding)


def _tree(text: str) -> Any:
    """The parsed document of ``text``; None when it holds no elements at all."""
    import lxml.etree
    import lxml.html

    parser = lxml.html.HTMLParser(
        no_network=True, huge_tree=False, remove_comments=True, remove_pis=True
    )
    # lxml refuses str input that still carries an XML encoding declaration.
    text = _XML_DECL.sub("", text.replace("\x00", ""), count=1)
    try:
        root = lxml.html.document_fromstring(text, parser=parser)
    except lxml.etree.ParserError:  # "Document is empty": nothing but comments or space
        return None
    except (lxml.etree.XMLSyntaxError, ValueError) as exc:
        raise ParseError(f"The HTML document could not be parsed: {exc}") from exc
    # libxml2 stops reading at 256 levels of nesting (no huge_tree), silently dropping the
    # rest of the document; a truncated document is refused rather than half-indexed.
    if any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log):
        raise ParseError(
            "The HTML document is nested too deeply (over 256 levels) to be read completely.",
            code="limit_exceeded",
        )
    return root


def html_sections(
    fragment: str, headings: list[tuple[int, str]]
) -> tuple[list[Section], Counter[str]]:
    """The sections of an HTML fragment (a raw HTML block of a Markdown file, or a whole
    page) under ``headings`` (level, text), which its own headings update in place; and what
    it skipped, for :func:`skipped_warnings`. There is no content root: all of it is read."""
    root = _tree(fragment)
    if root is None:
        return [], Counter()
    body = _body(root)
    builder = _Builder(headings=headings)
    _read(body, builder)
    return builder.sections, _skipped(body, body)


def html_inline_text(fragment: str) -> tuple[str, Counter[str]]:
    """The visible text of inline HTML on one line, and what it skipped."""
    root = _tree(fragment)
    if root is None:
        return "", Counter()
    body = _body(root)
    return clean_inline(_text_of(body)), _skipped(body, body)


def parse_html(data: bytes) -> ParsedDocument:
    root = _tree(_to_text(data))
    if root is None:
        raise ParseError("The HTML document is empty.", code="empty")

    title_element = root.find(".//title")
    title = clean_inline(title_element.text_content()) if title_element is not None else None

    builder = _Builder()
    start = _content_root(root)
    _read(start, builder)
    warnings = skipped_warnings(_skipped(_body(root), start))
    if title is not None:
        title = clean_block(title) or None
    return ParsedDocument(
        format="html", sections=tuple(builder.sections), title=title, warnings=tuple(warnings)
    )
