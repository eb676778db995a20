"""PDF: text per page with pypdf, page numbers kept, words and page furniture put right.

Decompression and parsing limits are tightened well below pypdf's defaults so that a
nested-Flate "bomb" stops at a few tens of megabytes, and the external ``jbig2dec`` binary
is never run.

Word gaps. TeX and many typesetters print no space glyphs: they move the pen, by a TJ offset
inside one text operation or by starting the next word in a new text operation (a link, a
change of font or colour). pypdf compares such moves with half the width of the font's space
glyph, and a font subset without one gets a full em, so in the Debian FAQ (XeTeX; word gaps
of 0.19-0.35 em, kerning at most 0.07 em) 419 words came out glued to a neighbour
("theDebian", "seehttps", "1When"). ``_WordGaps`` watches the content stream through pypdf's
operator hooks, measures each glyph run with the font's own width table, and turns every
gap of at least ``_WORD_GAP_EM``, and every raised or lowered run (a footnote mark), into a
space. The space goes in as a pair of opposite TJ offsets: a large one that pypdf reads as a
space, then one that moves the pen back, so the widths pypdf uses for its own line and space
decisions stay exact. 5 glued words are left, glued in the PDF itself ("aptitudeupdate") or
URLs cut at a line end.

Page furniture. A line among the first or last two of a page is a running head or foot when
its shape (numbers blanked, or just its leading word and number: "CHAPTER #. ...") is at the
edge of at least half of the pages, and of 3; such lines and bare page numbers are removed,
and the page number stays in ``Section.page``. No warning says so: nothing the author wrote
is lost. In the Debian FAQ that is 42 running heads and 64 page numbers. Dot leaders of a
table of contents are collapsed. A word hyphenated at a line end is joined, unless the
document writes both parts as words and never the joined word ("Debian-" "based").
"""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.parsers.text import clean_block, clean_inline

__all__ = ["PDF_LIMITS", "parse_pdf"]

_MB = 1024 * 1024

#: Overrides applied to ``pypdf.Configuration`` while a PDF is read.
PDF_LIMITS: dict[str, Any] = {
    "maximum_declared_stream_length": 20 * _MB,
    "array_based_stream_maximum_output_length": 20 * _MB,
    "zlib_maximum_output_length": 20 * _MB,
    "zlib_maximum_recovery_input_length": 2 * _MB,
    "lzw_maximum_output_length": 20 * _MB,
    "run_length_maximum_output_length": 20 * _MB,
    "jbig2_maximum_output_length": 20 * _MB,
    "brotli_maximum_output_length": 20 * _MB,
    "image_maximum_buffer_size": 20 * _MB,
    "stream_decoding_work_maximum_length": 100 * _MB,
    "stream_filters_maximum_length": 8,
    "xmp_maximum_input_length": 1 * _MB,
    "jbig2dec_binary": None,
    "disable_legacy_handling": True,
}

#: A horizontal gap of at least this (in ems of the smaller font) between glyphs is a word
#: gap. On the Debian FAQ kerning is at most 0.07 em and word gaps at least 0.19 em.
_WORD_GAP_EM = 0.15
#: Runs whose baselines differ by at most this (in ems) are on one baseline; by more, but
#: less than a line, one of them is raised or lowered (a footnote mark) and starts a word.
_SAME_BASELINE_EM = 0.1
#: The TJ offset (thousandths of an em) that pypdf surely reads as a space.
_SPACE_PUSH = 100_000.0
#: At most this many glyph widths are read from one font (a CID font may declare ranges).
_MAX_WIDTHS = 65_536

#: Page furniture is looked for in this many lines at the top and at the bottom of a page.
_EDGE_LINES = 2
#: A running head or foot is on at least this share of the pages with text, and on 3.
_FURNITURE_SHARE = 0.5
_FURNITURE_MIN_PAGES = 3
_DIGITS = re.compile(r"\d+")
_ROMAN = r"m{0,3}(?:cm|cd|d?c{0,3})(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"
#: "7", "- 7 -", "Page 7 of 70", "xii": a line that is only a page number.
_PAGE_NUMBER = re.compile(
    rf"(?i)(?:page\s+)?[-–—]?\s*(?:\d{{1,5}}|(?=[ivxlcdm]){_ROMAN})\s*[-–—]?"
    r"(?:\s*(?:of|/)\s*\d{1,5})?"
)
#: ". . . . ." or "......" between a table of contents entry and its page number.
_DOT_LEADER = re.compile(r"[ \t]*(?:\.[ \t]*){4,}")
_HYPHENATED = re.compile(r"(\w*[^\W\d_])-\n([^\W\d_]\w*)")
_NUMBERED_ENTRY = re.compile(r"^(\d+(?:\.\d+)+)(?=[A-Z][a-z])")
_WORD = re.compile(r"\w+")


class _Widths:
    """Glyph advances of one font: code -> width in text space units per unit font size."""

    def __init__(self, code_bytes: int, table: dict[int, float], default: float, scale: float):
        self.code_bytes = code_bytes
        self._table = table
        self._default = default
        self._scale = scale

    def measure(self, data: bytes) -> tuple[float, int, int]:
        """Summed glyph widths, glyph count and count of single-byte code 32 (which word
        spacing ``Tw`` widens) of the string ``data``."""
        step = self.code_bytes
        codes = (
            data
            if step == 1
            else [
                int.from_bytes(data[i : i + step], "big")
                for i in range(0, len(data) - step + 1, step)
            ]
        )
        width = sum(self._table.get(code, self._default) for code in codes)
        spaces = data.count(32) if step == 1 else 0
        return width * self._scale, len(codes), spaces


def _number(value: Any, default: float = 0.0) -> float:
    value = value.get_object() if hasattr(value, "get_object") else value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _cid_widths(array: Any) -> dict[int, float]:
    """The ``/W`` array of a CID font: ``c [w1 w2 ...]`` and ``c_first c_last w`` entries."""
    items = [item.get_object() for item in (array.get_object() if array is not None else [])]
    table: dict[int, float] = {}
    index = 0
    while index + 1 < len(items) and len(table) < _MAX_WIDTHS:
        first = int(_number(items[index]))
        if isinstance(items[index + 1], list):
            for offset, width in enumerate(items[index + 1][:_MAX_WIDTHS]):
                table[first + offset] = _number(width)
            index += 2
        elif index + 2 < len(items):
            last = min(int(_number(items[index + 1])), first + _MAX_WIDTHS)
            width = _number(items[index + 2])
            table.update(dict.fromkeys(range(first, last + 1), width))
            index += 3
        else:
            break
    return table


def _font_widths(font: Any) -> _Widths | None:
    """The widths of a horizontal simple or Identity-H CID font; None for other fonts (their
    runs are not measured, so pypdf alone decides their spaces)."""
    font = font.get_object()
    if font.get("/Subtype") == "/Type0":
        if font.get("/Encoding") != "/Identity-H":
            return None
        descendant = font["/DescendantFonts"].get_object()[0].get_object()
        return _Widths(
            2, _cid_widths(descendant.get("/W")), _number(descendant.get("/DW"), 1000.0), 0.001
        )
    widths = font.get("/Widths")
    if widths is None:
        return None
    first = int(_number(font.get("/FirstChar")))
    table = {first + i: _number(width) for i, width in enumerate(widths.get_object()[:256])}
    descriptor = font.get("/FontDescriptor")
    missing = _number(descriptor.get_object().get("/MissingWidth")) if descriptor else 0.0
    scale = 0.001
    if font.get("/Subtype") == "/Type3":
        scale = _number(font.get("/FontMatrix").get_object()[0], 0.001)
    return _Widths(1, table, missing, scale)


def _multiply(m: list[float], n: list[float]) -> list[float]:
    return [
        m[0] * n[0] + m[1] * n[2],
        m[0] * n[1] + m[1] * n[3],
        m[2] * n[0] + m[3] * n[2],
        m[2] * n[1] + m[3] * n[3],
        m[4] * n[0] + m[5] * n[2] + n[4],
        m[4] * n[1] + m[5] * n[3] + n[5],
    ]


@dataclass(frozen=True, slots=True)
class _TextState:
    """The parts of the text state that decide where glyphs go."""

    widths: _Widths | None = None
    size: float = 0.0
    char_spacing: float = 0.0
    word_spacing: float = 0.0
    scaling: float = 1.0  # Tz / 100


#: The fonts measured so far in a document: id -> (font dictionary, its widths).
_FontCache = dict[int, tuple[Any, _Widths | None]]


class _WordGaps:
    """pypdf operator hooks that turn word gaps into spaces (see the module docstring).

    pypdf passes the text matrix of the current line's start; the advance along the line is
    measured here. Where the previous glyph run ended is kept in device space, so that a run
    that starts a new text object on the same baseline is compared with it too."""

    def __init__(self, fonts: Any, measured: _FontCache) -> None:
        self._fonts = fonts
        self._measured = measured
        self._state = _TextState()
        self._saved: list[_TextState] = []  # by q, restored by Q
        self._advance = 0.0  # from the start of the line, in text space units
        self._last: tuple[float, float, float] | None = None  # end x, end y, em (device)
        self._forms = 0  # depth inside form XObjects, whose runs are not measured

    def before(
        self, operator: bytes, operands: list[Any], cm: list[float], tm: list[float]
    ) -> None:
        if operator == b"Do":
            self._forms += 1
            self._last = None
        elif operator == b"TJ" and operands and isinstance(operands[0], list):
            if self._forms:
                operands[0][:] = _with_gap_spaces(operands[0])
            else:
                self._show(operands[0], _multiply(tm, cm), can_space=True)
        elif self._forms:
            return
        elif operator == b"Tj" and operands:
            self._show([operands[0]], _multiply(tm, cm), can_space=False)
        elif operator in (b"BT", b"Td", b"TD", b"Tm", b"T*", b"'", b'"'):
            self._advance = 0.0
        else:
            self._set_state(operator, operands)

    def after(self, operator: bytes, operands: list[Any], cm: list[float], tm: list[float]) -> None:
        if operator == b"Do":
            self._forms = max(self._forms - 1, 0)
        elif operator in (b"'", b'"') and operands and not self._forms:
            # These move to the next line first: the run is measured once pypdf has moved.
            self._show([operands[-1]], _multiply(tm, cm), can_space=False)

    def _set_state(self, operator: bytes, operands: list[Any]) -> None:
        state = self._state
        if operator == b"q":
            self._saved.append(state)
        elif operator == b"Q" and self._saved:
            self._state = self._saved.pop()
        elif operator == b"Tf" and len(operands) >= 2:
            self._state = replace(state, widths=self._font(operands[0]), size=_number(operands[1]))
        elif operator == b"Tc" and operands:
            self._state = replace(state, char_spacing=_number(operands[0]))
        elif operator == b"Tw" and operands:
            self._state = replace(state, word_spacing=_number(operands[0]))
        elif operator == b"Tz" and operands:
            self._state = replace(state, scaling=_number(operands[0], 100.0) / 100)

    def _font(self, name: Any) -> _Widths | None:
        from pypdf.errors import LimitReachedError, PyPdfError

        try:
            font = self._fonts[str(name)] if str(name) in self._fonts else None
            if font is None:
                return None
            # Keyed by identity: pypdf hands out the same object for a font on every page.
            known = self._measured.get(id(font))
            if known is None or known[0] is not font:
                known = self._measured[id(font)] = (font, _font_widths(font))
            return known[1]
        except LimitReachedError:
            raise
        except (PyPdfError, LookupError, TypeError, ValueError, AttributeError, OverflowError):
            return None  # a malformed font: its runs are not measured

    def _show(self, items: list[Any], matrix: list[float], *, can_space: bool) -> None:
        """Measures one text-showing operation; in a TJ array (``can_space``) it turns the
        word gaps, and a gap before the run, into spaces in place."""
        unit = math.hypot(matrix[0], matrix[1])  # device length of one text space unit
        em = self._state.size * self._state.scaling * unit
        measured = self._state.widths is not None and em > 0
        starts_word = measured and can_space and self._starts_word(matrix, em)
        for item in items:
            if isinstance(item, bytes | str):
                self._advance += self._width(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                self._advance -= float(item) / 1000 * self._state.size * self._state.scaling
        if can_space:
            items[:] = [*(_space_offsets() if starts_word else []), *_with_gap_spaces(items)]
        self._last = (*self._point(matrix), em) if measured else None

    def _width(self, item: bytes | str) -> float:
        state = self._state
        if state.widths is None:
            return 0.0
        data = item if isinstance(item, bytes) else item.encode("latin-1", "replace")
        glyphs, count, spaces = state.widths.measure(data)
        spacing = count * state.char_spacing + spaces * state.word_spacing
        return (glyphs * state.size + spacing) * state.scaling

    def _point(self, matrix: list[float]) -> tuple[float, float]:
        """The current point in device space."""
        return self._advance * matrix[0] + matrix[4], self._advance * matrix[1] + matrix[5]

    def _starts_word(self, matrix: list[float], em: float) -> bool:
        """Whether a run starting here is a new word after the previous run: on the same
        baseline after a word gap, or raised or lowered by less than a line (a footnote mark:
        "trees²,")."""
        if self._last is None:
            return False
        last_x, last_y, last_em = self._last
        x, y = self._point(matrix)
        unit = math.hypot(matrix[0], matrix[1])
        along = ((x - last_x) * matrix[0] + (y - last_y) * matrix[1]) / unit
        across = abs((y - last_y) * matrix[0] - (x - last_x) * matrix[1]) / unit
        smaller = min(em, last_em)
        if across <= _SAME_BASELINE_EM * smaller:
            return along >= _WORD_GAP_EM * smaller
        return across < max(em, last_em) and along > -_WORD_GAP_EM * smaller


def _with_gap_spaces(items: list[Any]) -> list[Any]:
    """A TJ array with each offset of a word gap replaced by :func:`_space_offsets`."""
    spaced: list[Any] = []
    for item in items:
        is_number = isinstance(item, int | float) and not isinstance(item, bool)
        if is_number and item <= -1000 * _WORD_GAP_EM:
            spaced += _space_offsets(float(item))
        else:
            spaced.append(item)
    return spaced


def _space_offsets(offset: float = 0.0) -> list[Any]:
    """TJ offsets that pypdf reads as a space and that move the pen by ``offset`` in all."""
    from pypdf.generic import FloatObject

    return [FloatObject(-_SPACE_PUSH), FloatObject(_SPACE_PUSH + offset)]


def _page_fonts(page: Any) -> Any:
    """The page's /Font resources (inherited ones too), or {} when they are malformed."""
    from pypdf.generic import DictionaryObject

    resources = page.get_inherited("/Resources", None)
    resources = resources.get_object() if resources is not None else None
    fonts = resources.get("/Font") if isinstance(resources, DictionaryObject) else None
    fonts = fonts.get_object() if fonts is not None else None
    return fonts if isinstance(fonts, DictionaryObject) else {}


def _page_lines(page: Any, measured: _FontCache) -> list[str]:
    # extract_text() swallows decoding errors and returns "", which would turn a
    # decompression bomb into an empty page; decoding the content first lets a
    # LimitReachedError reach the caller.
    page.get_contents()
    gaps = _WordGaps(_page_fonts(page), measured)
    raw = page.extract_text(visitor_operand_before=gaps.before, visitor_operand_after=gaps.after)
    return [line.strip() for line in clean_block(raw or "").split("\n") if line.strip()]


def _furniture_keys(line: str) -> Iterator[str]:
    """What a running head or foot has in common from page to page: the whole line with
    numbers blanked, and, when it goes on after them, a leading word and number ("CHAPTER #.
    <title of the chapter>", "Section #.# <title>")."""
    shape = _DIGITS.sub("#", line)
    yield shape
    words = shape.split()
    if len(words) > 2 and any(c.isalpha() for c in words[0]) and "#" in words[1]:
        yield " ".join(words[:2]) + " …"


def _edges(lines: list[str]) -> list[int]:
    count = len(lines)
    return sorted({*range(min(_EDGE_LINES, count)), *range(max(count - _EDGE_LINES, 0), count)})


def _drop_furniture(pages: list[list[str]]) -> list[list[str]]:
    """The pages without their running heads, running feet and page numbers."""
    seen: Counter[str] = Counter()
    for lines in pages:
        seen.update({key for index in _edges(lines) for key in _furniture_keys(lines[index])})
    with_text = sum(1 for lines in pages if lines)
    needed = max(_FURNITURE_MIN_PAGES, math.ceil(_FURNITURE_SHARE * with_text))
    furniture = {key for key, pages_seen in seen.items() if pages_seen >= needed}
    kept: list[list[str]] = []
    for lines in pages:
        numbers = {index for index in _edges(lines) if _PAGE_NUMBER.fullmatch(lines[index])}
        drop = numbers | {
            index for index in _edges(lines)
            if any(key in furniture for key in _furniture_keys(lines[index]))
        }
        if len(drop) == len(lines):
            # A page that would be left empty: its lines are what it says (a slide's one
            # line, a form letter), not furniture around it. Only page numbers go.
            drop = numbers
        kept.append([line for index, line in enumerate(lines) if index not in drop])
    return kept


def _join_hyphenated(text: str, words: set[str]) -> str:
    """Joins words hyphenated at a line end ("distri-" "bution"). The hyphen stays when the
    document never writes the joined word but does write both parts as words ("Debian-"
    "based", "shell-" "command"), and when only the second part is capitalised ("non-" "Linux")."""

    def join(match: re.Match[str]) -> str:
        first, second = match.group(1), match.group(2)
        joined = (first + second).lower()
        compound = joined not in words and {first.lower(), second.lower()} <= words
        capitalised = second[0].isupper() and not first.isupper()
        return f"{first}-{second}" if compound or capitalised else first + second

    return _HYPHENATED.sub(join, text)


def _words(pages: list[str]) -> set[str]:
    """The lower-cased words of the document, leaving out the parts of words hyphenated at
    a line end."""
    return {word for text in pages for word in _WORD.findall(_HYPHENATED.sub(" ", text).lower())}


def _page_texts(pages: list[list[str]]) -> list[str]:
    """The text of each page: page furniture and dot leaders gone, hyphenated words joined."""
    texts = ["\n".join(_tidy(line) for line in lines) for lines in _drop_furniture(pages)]
    words = _words(texts)
    return [clean_block(_join_hyphenated(text, words)) for text in texts]


def _tidy(line: str) -> str:
    line = _DOT_LEADER.sub(" ", line)
    # A contents entry whose number is wider than its column: "11.10How can I..."
    return _NUMBERED_ENTRY.sub(r"\1 ", line)


def parse_pdf(data: bytes, *, max_pages: int = 2000) -> ParsedDocument:
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import DependencyError, LimitReachedError, PyPdfError

    # Corrupt PDFs surface as a variety of low-level errors from inside pypdf.
    corrupt = (
        PyPdfError, DependencyError, NotImplementedError, ValueError, KeyError, TypeError,
        AttributeError, IndexError, AssertionError, RecursionError, zlib.error, struct.error,
        UnicodeError, OverflowError,
    )  # fmt: skip
    warnings: list[str] = []
    try:
        with apply_configuration(**PDF_LIMITS):
            reader = PdfReader(io.BytesIO(data), strict=False)
            if reader.is_encrypted and not reader.decrypt(""):
                raise ParseError("The PDF is password-protected.", code="encrypted")
            total = len(reader.pages)
            if total > max_pages:
                warnings.append(f"only the first {max_pages} of {total} pages were read")
            title = None
            if reader.metadata is not None and reader.metadata.title:
                title = clean_inline(str(reader.metadata.title)) or None
            measured: _FontCache = {}
            pages = [_page_lines(reader.pages[i], measured) for i in range(min(total, max_pages))]
    except LimitReachedError as exc:
        raise ParseError(f"The PDF exceeds a safety limit: {exc}", code="limit_exceeded") from exc
    except corrupt as exc:
        raise ParseError(f"The PDF could not be read: {exc}") from exc
    sections = tuple(
        Section(text=text, page=number, kind="text")
        for number, text in enumerate(_page_texts(pages), start=1)
        if text
    )
    if not sections:
        warnings.append("no text found (scanned PDF?)")
    return ParsedDocument(
        format="pdf", sections=sections, title=title, pages=total, warnings=tuple(warnings)
    )
