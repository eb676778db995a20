"""No silent content loss: every parser either indexes all visible text of a document or the
document carries a warning that names what was skipped.

The property tests generate documents in every format with unique canary words in all the
parts a reader sees (nested HTML elements, raw HTML inside Markdown, table cells, text boxes,
footnotes, speaker notes, charts...). Each canary must be searchable, that is a word of the
parsed text or of a heading path (the lexical index and the embedder see both, see
:func:`ragd.stores.catalog.embed_text`), unless a warning of the document names the part it
was in. Text no browser renders (scripts, styles, templates, comments) must not be read,
unless a warning says that markup was read as plain text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from ragd.ingestion.parsers import ParsedDocument, parse
from tests.ingestion.generated import pdf_of

_WORD = re.compile(r"\w+")
_FILLER = ("alpha", "beta", "gamma", "delta", "omega")
#: Words placed where nothing is visible; they must never be read.
_INVISIBLE = "invisibleword"
Draw = Callable[[st.SearchStrategy[Any]], Any]


def _letters(number: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "ba": a distinct run of letters for every number."""
    letters = ""
    while True:
        number, digit = divmod(number, 26)
        letters = chr(ord("a") + digit) + letters
        if not number:
            return letters


@dataclass
class Canaries:
    """Hands out unique canary words and remembers the warning labels that may excuse each
    one (none: it must be searchable)."""

    suffix: str
    placed: dict[str, frozenset[str]] = field(default_factory=dict)

    def word(self, excuses: frozenset[str] = frozenset()) -> str:
        word = f"canary{_letters(len(self.placed))}q{self.suffix}"
        self.placed[word] = excuses
        return word


def _canaries(draw: Draw) -> Canaries:
    return Canaries(draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=4)))


def _words(draw: Draw, canaries: Canaries, excuses: frozenset[str] = frozenset()) -> str:
    """One or two canaries, maybe with a filler word between them."""
    words = [canaries.word(excuses)]
    if draw(st.booleans()):
        words += [draw(st.sampled_from(_FILLER)), canaries.word(excuses)]
    return " ".join(words)


def assert_no_silent_loss(document: ParsedDocument, canaries: Canaries) -> None:
    note(f"parsed: {document}")
    searchable = set(_WORD.findall(document.text))
    for section in document.sections:
        searchable.update(
            word for heading in section.heading_path for word in _WORD.findall(heading)
        )
    for word, excuses in canaries.placed.items():
        if word in searchable:
            continue
        named = [w for w in document.warnings if any(label in w for label in excuses)]
        assert named, (
            f"{word} (excused by {sorted(excuses)}) is lost silently",
            document.warnings,
            document.text,
        )
    if not any("read as plain text" in warning for warning in document.warnings):
        assert _INVISIBLE not in searchable, document.text


# --- HTML ---------------------------------------------------------------------------------

#: Flow content; {w} is one or two canaries, {i} phrasing content, {b} flow content.
_HTML_BLOCKS = (
    "<p>{i}</p>", "<div>{b}</div>", "<section>{b}</section>", "<blockquote>{b}</blockquote>",
    "<ul><li>{i}</li><li>{b}</li></ul>", "<ol><li>{b}</li></ol>", "<menu><li>{i}</li></menu>",
    "<dl><dt>{i}</dt><dd>{b}</dd></dl>", "<h1>{i}</h1>", "<h3>{i}</h3>", "<h6>{i}</h6>",
    "<pre>{w}\n  {w}</pre>", "<details><summary>{i}</summary>{b}</details>",
    "<figure>{b}<figcaption>{i}</figcaption></figure>",
    "<fieldset><legend>{i}</legend>{b}</fieldset>",
    "<p>{w} <select><option>{w}</option><option>{w}</option></select></p>",
    "<textarea>{w}</textarea>", '<svg><text x="0" y="9">{w}</text></svg>',
    "<math><mi>{w}</mi></math>", "<div>{w}<br>{w}</div>", "<div>{w} <b>{i}</b> {b} {i}</div>",
    "<div hidden>{b}</div>", '<div style="display:none">{b}</div>',
    '<object data="movie.swf">{w}</object>', "<dialog open>{b}</dialog>",
    # The <header> and <footer> of a section or article are its content, not site chrome.
    "<section><header>{b}</header>{b}<footer>{i}</footer></section>",
)  # fmt: skip
#: Needs code: tables, chrome, iframes, invisible elements, deep nesting, a lone <article>.
_HTML_SPECIAL = ("table", "chrome", "iframe", "invisible", "deep", "article")
#: Phrasing content.
_HTML_INLINE = (
    "{w}", "{w}<br>{w}", '<input type="text" value="{w}">', '<input type="submit" value="{w}">',
    '<input type="search" value="{w}">', "<button>{i}</button>",
    f'<input type="hidden" value="{_INVISIBLE}"><img src="x.png" alt="">',
)  # fmt: skip
_INLINE_TAGS = ("b", "i", "em", "strong", "span", "a", "code", "q", "small", "mark", "abbr",
                "label", "kbd", "sub", "sup", "cite", "s", "u", "del", "ins", "time")  # fmt: skip
#: Site chrome and fallback content, which may be skipped with a warning naming it.
_CHROME = {
    "nav": "<nav>",
    "aside": "<aside>",
    "noscript": "<noscript>",
    'div role="navigation"': '<div role="navigation">',
    'div class="toc"': '<div class="toc">',
    'div class="sphinxsidebar"': '<div class="sphinxsidebar">',
}
_INVISIBLE_ELEMENTS = (
    f"<script>var {_INVISIBLE} = 1;</script>",
    f"<style>.{_INVISIBLE} {{ color: red }}</style>",
    f"<template><p>{_INVISIBLE}</p></template>",
)
_FILL = re.compile(r"\{([wib])\}")


@dataclass
class _Html:
    """Draws HTML with canaries, ``depth`` levels of elements deep."""

    draw: Draw
    canaries: Canaries
    articles: bool = True  # False: a lone <article> would be the page's content root

    def fill(self, template: str, excuses: frozenset[str], depth: int) -> str:
        makers: dict[str, Callable[[], str]] = {
            "w": lambda: _words(self.draw, self.canaries, excuses),
            "i": lambda: self.inline(excuses, depth - 1),
            "b": lambda: self.blocks(excuses, depth - 1),
        }
        return _FILL.sub(lambda match: makers[match.group(1)](), template)

    def inline(self, excuses: frozenset[str], depth: int) -> str:
        if depth <= 0:
            return self.fill("{w}", excuses, depth)
        if self.draw(st.booleans()):
            return self.fill(self.draw(st.sampled_from(_HTML_INLINE)), excuses, depth)
        tag = self.draw(st.sampled_from(_INLINE_TAGS))
        return self.fill(f"{{w}} <{tag}>{{i}} {{i}}</{tag}> {{w}}", excuses, depth)

    def blocks(self, excuses: frozenset[str], depth: int) -> str:
        count = self.draw(st.integers(1, 3))
        return "\n".join(self.block(excuses, depth) for _ in range(count))

    def block(self, excuses: frozenset[str], depth: int) -> str:
        if depth <= 0:
            return self.fill("<p>{w}</p>", excuses, depth)
        template: str = self.draw(st.sampled_from(_HTML_BLOCKS + _HTML_SPECIAL))
        if template == "table":
            return self.table(excuses, depth)
        if template == "chrome":
            opening: str = self.draw(st.sampled_from(sorted(_CHROME)))
            inner = self.blocks(excuses | {_CHROME[opening]}, depth - 1)
            return f"<{opening}>{inner}</{opening.split()[0]}>"
        if template == "iframe":
            document = escape(self.fill("<p>{w}</p>", excuses | {"<iframe>"}, depth))
            return f'<iframe srcdoc="{document}"></iframe>'
        if template == "invisible":
            return str(self.draw(st.sampled_from(_INVISIBLE_ELEMENTS)))
        if template == "deep":  # libxml2 reads up to 256 levels
            levels: int = self.draw(st.integers(20, 120))
            return "<div>" * levels + self.fill("{w}", excuses, depth) + "</div>" * levels
        if template == "article":
            tag = "article" if self.articles else "section"
            template = f"<{tag}><header>{{b}}</header>{{b}}<footer>{{i}}</footer></{tag}>"
        return self.fill(template, excuses, depth)

    def table(self, excuses: frozenset[str], depth: int) -> str:
        """A table of inline content, blocks or nested tables; maybe a caption, a head."""
        rows = []
        for row in range(self.draw(st.integers(1, 3))):
            tag = "th" if row == 0 and self.draw(st.booleans()) else "td"
            cells = []
            for _ in range(self.draw(st.integers(1, 3))):
                content = self.draw(st.sampled_from(["{i}", "{b}", "table"]))
                if content == "table" and depth > 1:
                    cells.append(f"<{tag}>{self.table(excuses, depth - 1)}</{tag}>")
                else:
                    cells.append(f"<{tag}>{self.fill(content, excuses, depth)}</{tag}>")
            rows.append(f"<tr>{''.join(cells)}</tr>")
        caption = (
            self.fill("<caption>{w}</caption>", excuses, depth) if self.draw(st.booleans()) else ""
        )
        body = "".join(rows)
        if self.draw(st.booleans()):
            body = f"<thead>{rows[0]}</thead><tbody>{''.join(rows[1:])}</tbody>"
        return f"<table>{caption}{body}</table>"


@st.composite
def html_pages(draw: Draw) -> tuple[bytes, Canaries]:
    """A page of generated content, maybe in a <main> with text outside it, maybe with page
    chrome around it."""
    canaries = _canaries(draw)
    main = draw(st.booleans())
    html = _Html(draw, canaries, articles=main)
    content = html.blocks(frozenset(), 3)
    chrome = [
        f"<{tag}>{html.blocks(frozenset({f'<{tag}>'}), 1)}</{tag}>"
        for tag in draw(st.lists(st.sampled_from(["header", "nav", "footer", "aside"]), max_size=2))
    ]
    if main:
        outside = html.blocks(frozenset({"text outside"}), 1)
        body = f"{''.join(chrome)}<main>{content}</main>{outside}"
    else:
        body = "".join(chrome) + content
    head = f"<title>Page</title><script>var {_INVISIBLE};</script>"
    return f"<!DOCTYPE html><html><head>{head}</head><body>{body}</body></html>".encode(), canaries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page=html_pages())
def test_html_keeps_or_names_every_visible_word(page: tuple[bytes, Canaries]) -> None:
    data, canaries = page
    note(data.decode())
    assert_no_silent_loss(parse(data, filename="page.html"), canaries)


# --- Markdown -----------------------------------------------------------------------------


def _indent(text: str, first: str, rest: str) -> str:
    lines = text.split("\n")
    return "\n".join([first + lines[0]] + [rest + line if line else "" for line in lines[1:]])


_MARKDOWN_INLINE = (
    "**{0}**", "*{0}*", "`{0}`", "[{0}](https://example.org/x)", "![{0}](image.png)",
    "<span>{0}</span>", "<b>{0}</b>", "{0}<br>{1}", '<input value="{0}">', "{0}  \n{1}",
    "{0}\n{1}", f"<!-- {_INVISIBLE} --> {{0}}", f"<kbd>{{0}}</kbd><script>{_INVISIBLE}</script>",
)  # fmt: skip


@dataclass
class _Markdown:
    draw: Draw
    canaries: Canaries

    def words(self) -> str:
        return _words(self.draw, self.canaries)

    def inline(self) -> str:
        parts = [self.words()]
        for _ in range(self.draw(st.integers(0, 3))):
            template = self.draw(st.sampled_from(_MARKDOWN_INLINE))
            second = self.words() if "{1}" in template else ""
            parts.append(template.format(self.words(), second))
        return " ".join(parts)

    def blocks(self, depth: int) -> str:
        count = self.draw(st.integers(1, 3))
        return "\n\n".join(self.block(depth) for _ in range(count))

    def block(self, depth: int) -> str:
        kinds = ["paragraph", "heading", "setext", "fence", "indented", "table", "html", "deep"]
        kind = self.draw(st.sampled_from(kinds + ["list", "quote"] if depth > 0 else kinds))
        if kind == "heading":
            return f"{'#' * self.draw(st.integers(1, 6))} {self.inline()}"
        if kind == "setext":
            return f"{self.inline()}\n{self.draw(st.sampled_from(['===', '---']))}"
        if kind == "fence":
            return f"```\n{self.words()}\n  {self.words()}\n```"
        if kind == "indented":
            return f"    {self.words()}\n    {self.words()}"
        if kind == "table":
            rows = [" | ".join(self.inline() for _ in range(2)) for _ in range(2)]
            return f"| {rows[0]} |\n| --- | --- |\n| {rows[1]} |"
        if kind == "html":  # a raw HTML block: one element, no blank line inside
            return _Html(self.draw, self.canaries).block(frozenset(), 2).replace("\n", " ")
        if kind == "deep":  # past markdown-it's nesting limit
            marker: str = self.draw(st.sampled_from(["> ", "- ", "1. "]))
            levels: int = self.draw(st.integers(15, 30))
            return marker * levels + self.words()
        if kind == "list":
            marker = self.draw(st.sampled_from(["- ", "* ", "1. "]))
            items = [
                _indent(self.blocks(depth - 1), marker, " " * len(marker))
                for _ in range(self.draw(st.integers(1, 3)))
            ]
            return "\n".join(items)
        if kind == "quote":
            return _indent(self.blocks(depth - 1), "> ", "> ").replace("\n\n", "\n>\n")
        return self.inline()


@st.composite
def markdown_files(draw: Draw) -> tuple[bytes, Canaries]:
    canaries = _canaries(draw)
    return _Markdown(draw, canaries).blocks(2).encode(), canaries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=markdown_files())
def test_markdown_keeps_or_names_every_visible_word(file: tuple[bytes, Canaries]) -> None:
    data, canaries = file
    note(data.decode())
    assert_no_silent_loss(parse(data, filename="notes.md"), canaries)


# --- plain text, CSV, PDF -----------------------------------------------------------------


@st.composite
def text_files(draw: Draw) -> tuple[bytes, Canaries]:
    canaries = _canaries(draw)
    paragraphs = [
        "\n".join(_words(draw, canaries) for _ in range(draw(st.integers(1, 3))))
        for _ in range(draw(st.integers(1, 4)))
    ]
    separator = draw(st.sampled_from(["\n\n", "\r\n\r\n", "\n \n\t\n"]))
    return separator.join(paragraphs).encode(), canaries


@settings(max_examples=20, deadline=None)
@given(file=text_files())
def test_text_keeps_every_word(file: tuple[bytes, Canaries]) -> None:
    data, canaries = file
    assert_no_silent_loss(parse(data, filename="notes.txt"), canaries)


@st.composite
def csv_files(draw: Draw) -> tuple[bytes, Canaries, int | None, int | None]:
    """Ragged rows, empty header names and cells, quoted commas and newlines; maybe caps."""
    canaries = _canaries(draw)
    max_rows = draw(st.none() | st.integers(1, 4))
    max_columns = draw(st.none() | st.integers(1, 4))

    def cell(row: int, column: int) -> str:
        excuses = set()
        if max_rows is not None and row > max_rows:
            excuses.add("rows were read")
        if max_columns is not None and column >= max_columns:
            excuses.add("columns were read")
        kind = draw(st.sampled_from(["word", "empty", "comma", "newline"]))
        if kind == "empty" and column > 0:  # the first cell keeps every row non-empty
            return ""
        word = canaries.word(frozenset(excuses))
        if kind == "comma":
            return f'"{word}, {draw(st.sampled_from(_FILLER))}"'
        if kind == "newline":
            return f'"{draw(st.sampled_from(_FILLER))}\n{word}"'
        return word

    lines = []
    for row in range(draw(st.integers(1, 7))):  # row 0 is the header
        width = draw(st.integers(1, 6))
        lines.append(",".join(cell(row, column) for column in range(width)))
    return "\n".join(lines).encode(), canaries, max_rows, max_columns


@settings(max_examples=40, deadline=None)
@given(file=csv_files())
def test_csv_keeps_or_names_every_cell(
    file: tuple[bytes, Canaries, int | None, int | None],
) -> None:
    data, canaries, max_rows, max_columns = file
    document = parse(data, filename="table.csv", max_csv_rows=max_rows, max_csv_columns=max_columns)
    assert_no_silent_loss(document, canaries)


def _pdf(pages: list[list[str]]) -> bytes:
    """A PDF of ``pages`` of text lines in Helvetica."""
    kids = b" ".join(b"%d 0 R" % (4 + 2 * page) for page in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for number, lines in enumerate(pages):
        shown = b" ".join(b"(%s) '" % line.encode() for line in lines)
        stream = b"BT /F1 12 Tf 72 720 Td 14 TL %s ET" % shown
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
            b"<< /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * number)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    return pdf_of(objects)


@st.composite
def pdf_files(draw: Draw) -> tuple[bytes, Canaries]:
    canaries = _canaries(draw)
    pages = [
        [_words(draw, canaries) for _ in range(draw(st.integers(1, 4)))]
        for _ in range(draw(st.integers(1, 3)))
    ]
    return _pdf(pages), canaries


@settings(max_examples=15, deadline=None)
@given(file=pdf_files())
def test_pdf_keeps_every_word(file: tuple[bytes, Canaries]) -> None:
    data, canaries = file
    assert_no_silent_loss(parse(data, filename="doc.pdf"), canaries)


# --- DOCX ---------------------------------------------------------------------------------

_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_MC = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'
_M = 'xmlns:m="http://schemas.openxmlformats.org/officeDocument/2006/math"'
_A = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
_C = 'xmlns:c="http://schemas.openxmlformats.org/drawingml/2006/chart"'
_WML = "application/vnd.openxmlformats-officedocument.wordprocessingml"
_DOCX_PARTS = ("heading", "paragraph", "runs", "list", "table", "nested", "header", "footer",
               "comment", "control", "wrapped", "textbox", "math", "footnote", "endnote",
               "chart", "object")  # fmt: skip


def _run(text: str) -> str:
    return f"<w:r><w:t xml:space='preserve'>{text}</w:t></w:r>"


def _body_xml(document: Any, xml: str) -> None:
    """Adds a raw body-level element (before the section properties)."""
    from docx.oxml import parse_xml

    document.add_paragraph()._p.addprevious(parse_xml(xml))


def _add_part(document: Any, name: str, content_type: str, reltype: str, xml: str) -> None:
    from docx.opc.packuri import PackURI
    from docx.opc.part import Part

    part = Part(PackURI(name), content_type, xml.encode(), document.part.package)
    document.part.relate_to(part, reltype)


def _docx_part(
    document: Any,
    kind: str,
    words: Callable[[frozenset[str]], str],
    extra: dict[str, list[str]],
    draw: Draw,
) -> None:
    """Adds one part of kind ``kind`` to a python-docx document."""
    none: frozenset[str] = frozenset()
    if kind == "heading":
        document.add_heading(words(none), level=draw(st.integers(0, 3)))
    elif kind == "paragraph":
        document.add_paragraph(words(none))
    elif kind == "runs":  # runs glued to breaks and tabs
        paragraph = document.add_paragraph()
        paragraph.add_run(words(none)).add_break()
        paragraph.add_run(words(none)).add_tab()
        paragraph.add_run(words(none))
    elif kind == "list":
        document.add_paragraph(
            words(none), style=draw(st.sampled_from(["List Bullet", "List Number"]))
        )
    elif kind in {"table", "nested"}:
        table = document.add_table(rows=2, cols=2)
        for cell in (table.cell(0, 0), table.cell(0, 1), table.cell(1, 0)):
            cell.text = words(none)
        if kind == "nested":
            table.cell(1, 1).add_table(rows=1, cols=1).cell(0, 0).text = words(none)
        elif draw(st.booleans()):
            table.cell(0, 0).merge(table.cell(0, 1))
    elif kind in {"header", "footer"}:
        section = document.sections[0]
        if draw(st.booleans()):
            section.different_first_page_header_footer = True
            story = section.first_page_header if kind == "header" else section.first_page_footer
        else:
            story = section.header if kind == "header" else section.footer
        story.add_paragraph(words(none))
    elif kind == "comment":
        paragraph = document.add_paragraph(words(none))
        document.add_comment(paragraph.runs, text=words(frozenset({"comment"})), author="a")
    elif kind == "control":  # a block-level content control
        _body_xml(
            document,
            f"<w:sdt {_W}><w:sdtContent><w:p>{_run(words(none))}</w:p></w:sdtContent></w:sdt>",
        )
    elif kind == "wrapped":  # runs inside an insertion, a hyperlink, a field, a control
        runs = (
            f"<w:ins w:id='1' w:author='a'>{_run(words(none) + ' ')}</w:ins>"
            f"<w:hyperlink>{_run(words(none) + ' ')}</w:hyperlink>"
            f"<w:fldSimple w:instr='TITLE'>{_run(words(none) + ' ')}</w:fldSimple>"
            f"<w:sdt><w:sdtContent>{_run(words(none))}</w:sdtContent></w:sdt>"
        )
        _body_xml(document, f"<w:p {_W}>{runs}</w:p>")
    elif kind == "textbox":  # as Word writes it: the box and a VML fallback copy of it
        box = f"<w:txbxContent><w:p>{_run(words(none))}</w:p></w:txbxContent>"
        drawing = (
            f"<mc:AlternateContent><mc:Choice Requires='wps'><w:drawing>{box}"
            f"</w:drawing></mc:Choice><mc:Fallback><w:pict>{box}</w:pict></mc:Fallback>"
            "</mc:AlternateContent>"
        )
        _body_xml(document, f"<w:p {_W} {_MC}>{_run(words(none) + ' ')}<w:r>{drawing}</w:r></w:p>")
    elif kind == "math":
        _body_xml(
            document, f"<w:p {_W} {_M}><m:oMath><m:r><m:t>{words(none)}</m:t></m:r></m:oMath></w:p>"
        )
    elif kind in {"footnote", "endnote", "chart"}:
        extra.setdefault(kind, []).append(words(none))
    elif kind == "object":  # an OLE object: not readable, must be warned about
        _body_xml(document, f"<w:p {_W}><w:r><w:object/></w:r></w:p>")


def _docx_extra_parts(document: Any, extra: dict[str, list[str]]) -> None:
    from docx.opc.constants import RELATIONSHIP_TYPE as RT

    for kind in ("footnote", "endnote"):
        if kind in extra:
            notes = "".join(
                f"<w:{kind} w:id='{number}'><w:p>{_run(word)}</w:p></w:{kind}>"
                for number, word in enumerate(extra[kind], start=1)
            )
            separator = f"<w:{kind} w:type='separator' w:id='-1'><w:p/></w:{kind}>"
            reltype = RT.FOOTNOTES if kind == "footnote" else RT.ENDNOTES
            _add_part(
                document,
                f"/word/{kind}s.xml",
                f"{_WML}.{kind}s+xml",
                reltype,
                f"<w:{kind}s {_W}>{separator}{notes}</w:{kind}s>",
            )
    if "chart" in extra:
        title, *names = extra["chart"]
        points = "".join(
            f"<c:pt idx='{i}'><c:v>{name}</c:v></c:pt>" for i, name in enumerate(names)
        )
        chart = (
            f"<c:chartSpace {_C} {_A}><c:chart><c:title><c:tx><c:rich><a:p><a:r><a:t>{title}"
            f"</a:t></a:r></a:p></c:rich></c:tx></c:title><c:plotArea><c:barChart><c:ser>"
            f"<c:cat><c:strRef><c:strCache>{points}</c:strCache></c:strRef></c:cat>"
            "</c:ser></c:barChart></c:plotArea></c:chart></c:chartSpace>"
        )
        _add_part(
            document,
            "/word/charts/chart1.xml",
            "application/vnd.openxmlformats-officedocument.drawingml.chart+xml",
            RT.CHART,
            chart,
        )


@st.composite
def docx_files(draw: Draw) -> tuple[bytes, Canaries]:
    import docx

    canaries = _canaries(draw)
    document = docx.Document()
    extra: dict[str, list[str]] = {}
    for kind in draw(st.lists(st.sampled_from(_DOCX_PARTS), min_size=1, max_size=8)):
        _docx_part(document, kind, lambda excuses: _words(draw, canaries, excuses), extra, draw)
    _docx_extra_parts(document, extra)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue(), canaries


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=docx_files())
def test_docx_keeps_or_names_every_visible_word(file: tuple[bytes, Canaries]) -> None:
    data, canaries = file
    document = parse(data, filename="report.docx")
    assert_no_silent_loss(document, canaries)
    if b"<w:object" in _docx_xml(data):
        assert any("embedded object" in warning for warning in document.warnings)


def _docx_xml(data: bytes) -> bytes:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read("word/document.xml")


# --- PPTX ---------------------------------------------------------------------------------

_SLIDE_PARTS = ("body", "textbox", "table", "group", "chart", "notes", "object")


def _slide_part(slide: Any, kind: str, words: Callable[[], str], draw: Draw) -> bool:
    """Adds one part of kind ``kind`` to a slide; whether it is an embedded object."""
    from pptx.chart.data import CategoryChartData
    from pptx.enum.chart import XL_CHART_TYPE
    from pptx.util import Inches

    box = (Inches(1), Inches(1), Inches(3), Inches(2))
    if kind == "body":
        placeholders = [p for p in slide.placeholders if p.placeholder_format.idx == 1]
        if placeholders and not placeholders[0].text_frame.text:  # not written over
            placeholders[0].text_frame.text = f"{words()}\v{words()}\n{words()}"
            return False
        kind = "textbox"
    if kind == "textbox":
        frame = slide.shapes.add_textbox(*box).text_frame
        frame.text = words()
        frame.add_paragraph().text = f"{words()}\v{words()}"
    elif kind == "table":
        table = slide.shapes.add_table(2, 2, *box).table
        for cell in (table.cell(0, 0), table.cell(0, 1), table.cell(1, 1)):
            cell.text = words()
    elif kind == "group":
        inner = slide.shapes.add_group_shape().shapes.add_group_shape()
        inner.shapes.add_textbox(*box).text_frame.text = words()
    elif kind == "chart":
        data = CategoryChartData()  # type: ignore[no-untyped-call]
        data.categories = [words(), words()]
        data.add_series(words(), (1, 2))  # type: ignore[no-untyped-call]
        chart = slide.shapes.add_chart(XL_CHART_TYPE.COLUMN_CLUSTERED, *box, data).chart
        chart.has_title = True
        chart.chart_title.text_frame.text = words()
    elif kind == "notes":
        notes = slide.notes_slide.notes_text_frame
        notes.add_paragraph().text = f"{words()}\v{words()}"
    elif kind == "object":
        slide.shapes.add_ole_object(io.BytesIO(b"ole" * 50), "Package", Inches(1), Inches(1))
        return True
    return False


@st.composite
def pptx_files(draw: Draw) -> tuple[bytes, Canaries, bool]:
    import pptx

    canaries = _canaries(draw)
    presentation = pptx.Presentation()
    embedded = False
    for _ in range(draw(st.integers(1, 3))):
        layout = presentation.slide_layouts[draw(st.sampled_from([1, 5, 6]))]
        slide = presentation.slides.add_slide(layout)
        if slide.shapes.title is not None:
            slide.shapes.title.text = _words(draw, canaries)
        for kind in draw(st.lists(st.sampled_from(_SLIDE_PARTS), max_size=4)):
            embedded |= _slide_part(slide, kind, lambda: _words(draw, canaries), draw)
    if draw(st.booleans()):  # text a layout shows on every slide that uses it
        slide = presentation.slides[0]
        shape = slide.shapes.add_textbox(0, 0, 100, 100)
        shape.text_frame.text = _words(draw, canaries)
        slide.slide_layout.shapes._spTree.append(shape.element)  # moved onto the layout
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue(), canaries, embedded


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=pptx_files())
def test_pptx_keeps_or_names_every_visible_word(file: tuple[bytes, Canaries, bool]) -> None:
    data, canaries, embedded = file
    document = parse(data, filename="deck.pptx")
    assert_no_silent_loss(document, canaries)
    assert embedded == any("embedded object" in warning for warning in document.warnings)


# --- the attacker's cases and other hand-made documents ------------------------------------

FAQ_IN_HTML_BLOCK = b"""<div class="faq">
<h2>How do I reset my password?</h2>
<p>Open <b>Settings</b>, then <i>Security</i>, and press Reset.</p>
<details><summary>Still stuck?</summary>Write to the help desk.</details>
</div>
"""


def test_markdown_whose_text_is_all_inside_an_html_block_is_read() -> None:
    document = parse(FAQ_IN_HTML_BLOCK, filename="faq.md")
    assert document.format == "markdown" and document.warnings == ()
    found = {(s.kind, s.text): s.heading_path for s in document.sections}
    question = ("How do I reset my password?",)
    assert found[("heading", "How do I reset my password?")] == question
    assert found[("paragraph", "Open Settings, then Security, and press Reset.")] == question
    assert found[("paragraph", "Still stuck?")] == question
    assert found[("paragraph", "Write to the help desk.")] == question


HTML_PAGE = b"""<!DOCTYPE html>
<html>
<head><title>Release notes</title><script>var tracking = 1;</script></head>
<body>
<nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
<h1>Release notes</h1>

<p>Version 2 adds <code>sync</code>.</p>

<h2>Upgrading</h2>
<ul><li>Stop the server.</li><li>Run the migration.</li></ul>
<table><tr><th>From</th><th>To</th></tr><tr><td>1.9</td><td>2.0</td></tr></table>
</body>
</html>
"""


def test_an_html_page_uploaded_as_markdown_reads_as_a_page() -> None:
    document = parse(HTML_PAGE, filename="x.md")
    assert document.format == "markdown" and document.title == "Release notes"
    found = {(s.kind, s.text): s.heading_path for s in document.sections}
    assert found[("paragraph", "Version 2 adds sync.")] == ("Release notes",)
    assert found[("list", "- Stop the server.\n- Run the migration.")] == (
        "Release notes",
        "Upgrading",
    )
    assert found[("table", "From | To\n1.9 | 2.0")] == ("Release notes", "Upgrading")
    assert "tracking" not in document.text and "Home" not in document.text
    assert document.warnings == ("skipped page chrome and fallback content: 1 <nav>",)


def test_inline_html_in_markdown_shows_as_a_browser_shows_it() -> None:
    document = parse(
        b"Press <kbd>Ctrl</kbd>+<kbd>C</kbd> to copy<br>then paste, or click "
        b'<input type="submit" value="Copy"><script>track()</script>.',
        filename="keys.md",
    )
    assert document.text == "Press Ctrl+C to copy then paste, or click Copy ."


def test_markdown_nested_past_the_parser_limit_is_read_as_plain_text() -> None:
    data = ("- " * 25 + "deep item\n\n# Later heading\n\nlater text\n").encode()
    document = parse(data, filename="deep.md")
    assert "deep item" in document.text and "later text" in document.text
    assert document.warnings == (
        "1 quote or list item nested over 20 levels deep was read as plain text",
    )


def test_html_names_the_chrome_it_skips_and_reads_hidden_answers() -> None:
    page = (
        b"<html><body><header>Acme</header><nav>Home</nav><main>"
        b"<article><header><h1>FAQ</h1></header>"
        b"<p>Q: Is it free?</p><div hidden>A: Yes, forever.</div>"
        b"<noscript>Enable scripts to vote.</noscript>"
        b"<div class='toc'>\xc2\xb6</div></article></main>"
        b"<footer>(c) Acme</footer></body></html>"
    )
    document = parse(page, filename="faq.html")
    assert document.text == "FAQ\n\nQ: Is it free?\n\nA: Yes, forever."
    assert document.warnings == (
        "skipped page chrome and fallback content: 1 <header>, 1 <nav>, 1 <noscript>, 1 <footer>",
    )


def test_html_form_controls_and_table_captions_are_read() -> None:
    page = (
        b"<form><label>Size <select><option>Small</option><option>Large</option>"
        b"</select></label><input type='submit' value='Order'><button>Cancel</button>"
        b"<input type='hidden' value='token123'></form>"
        b"<table><caption>Prices</caption><tr><td><p>one</p><p>two</p></td></tr></table>"
    )
    document = parse(page, filename="order.html")
    assert document.text == "Size\n\n- Small\n- Large\n\nOrder Cancel\n\nPrices\none two"
    assert document.warnings == ()


def test_a_csv_row_empty_within_the_column_cap_is_still_counted() -> None:
    data = b"a,b\n1,2\n,,,,far right\n"
    document = parse(data, filename="t.csv", max_csv_columns=2)
    assert document.warnings == ("only the first 2 of 5 columns were read",)


def test_docx_comments_are_named_when_not_read() -> None:
    import docx

    document = docx.Document()
    paragraph = document.add_paragraph("Body text.")
    document.add_comment(paragraph.runs, text="Reviewer remark.", author="r")
    document.add_comment(paragraph.runs, text="Another remark.", author="r")
    buffer = io.BytesIO()
    document.save(buffer)
    parsed = parse(buffer.getvalue(), filename="reviewed.docx")
    assert parsed.text == "Body text." and parsed.warnings == ("2 comments were not read",)
