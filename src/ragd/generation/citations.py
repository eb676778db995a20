"""Server-side citation checking: the model's ``[n]`` markers against the blocks it was given.

The model is asked to cite context block ``n`` as ``[n]``. Accepted marker forms:

* ``[n]``, ``[n, m]`` (spaces or tabs around the commas), and adjacent ``[n][m]``;
* ``[n: "exact words"]`` (straight or curly double quotes): block ``n`` must contain the words.

A number is up to four digits, optionally negative: ``[0]``, ``[-1]``, ``[01]`` and a number
beyond the last block are markers too, which name no block and are removed like any other
invalid reference (``[10000]`` is plain text). An index expression is not a marker: a ``[0]``
or a negative or zero-padded number written right after a letter, digit, ``_`` or ``)``
(``x[0]``, ``f()[-1]``) stays as written. At most :data:`MAX_NUMBERS` numbers per marker; a
quote is 1..:data:`MAX_QUOTE_CHARS` characters with no newline, double quote or square
bracket. ``[1](https://...)`` is a Markdown link, not a marker. A ``[`` nested in a would-be
marker (``[1, [2]``, ``[[1]]``) makes the whole run plain text: removing an invalid inner
marker could otherwise forge a new marker out of its neighbours (``[1, [9]2]`` would become
``[1, 2]``).

Code is never read for markers: inside a Markdown code span (`` `x[1]` ``, ending at its
closing backtick run or the end of the line) or a fenced code block (a line opening with three
or more backticks or tildes, up to the closing fence) every ``[`` is plain text, so code is
returned as written. A line's opening is only spaces and markers, so a fence stays a fence
when a marker before it is removed; a marker removed between two backticks leaves a space, so
two code spans never merge into one.

:func:`verify` keeps the valid references and removes the invalid ones (a number that is not a
given block, a quote that block does not contain), tidying the whitespace the removal leaves
(see :class:`CitationStream`), and returns one :class:`Citation` per distinct valid ``n`` with
a quote that is always an exact substring of that block's text. :class:`CitationStream` is
the same check applied incrementally to streamed deltas; :func:`verify` is implemented with
it, so both give the same text and citations however the text is split.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from ragd.generation.base import ContextBlock

__all__ = [
    "MAX_MARKER_CHARS",
    "MAX_NUMBERS",
    "MAX_QUOTE_CHARS",
    "QUOTE_CHARS",
    "Citation",
    "CitationEvent",
    "CitationStream",
    "Marker",
    "StreamEvent",
    "TokenEvent",
    "Verified",
    "best_sentence",
    "content_words",
    "find_markers",
    "locate_quote",
    "split_sentences",
    "verify",
]

#: Longest quote accepted in ``[n: "..."]``.
MAX_QUOTE_CHARS = 300
#: Most numbers in one ``[n, m, ...]`` marker.
MAX_NUMBERS = 16
#: Longest returned citation quote (cut at a word boundary).
QUOTE_CHARS = 300
#: Longest marker the grammar admits: the stream never holds back more than this.
MAX_MARKER_CHARS = 400

_OPEN_QUOTES = '"\u201c'
_CLOSE_QUOTES = '"\u201d'
_NOT_IN_QUOTE = frozenset('"\u201c\u201d\n\r[]')
_HSPACE = " \t"
#: After an invalid marker removed with the space before it, the space is put back unless
#: the next character is one of these (or whitespace, or the end of the text).
_CLOSERS = frozenset(".,;:!?)]}'\"\u2019\u201d\u00bb")


@dataclass(frozen=True, slots=True)
class Marker:
    """One citation marker in a text: ``text[start:end]`` cites ``numbers`` (in order, as
    written; repeats kept), with ``quote`` for the ``[n: "..."]`` form."""

    start: int
    end: int
    numbers: tuple[int, ...]
    quote: str | None = None


@dataclass(frozen=True, slots=True)
class Citation:
    """A verified reference to context block ``n``; ``quote`` is an exact substring of the
    block's text (the quote the model gave, or the block sentence that best supports the
    answer sentence citing it)."""

    n: int
    chunk_id: str
    document_id: str
    title: str
    page: int | None
    quote: str


@dataclass(frozen=True, slots=True)
class Verified:
    """An answer after the check: ``text`` without its invalid markers, one citation per
    distinct valid ``n`` (order of first appearance), ``dropped`` invalid references."""

    text: str
    citations: list[Citation]
    dropped: int


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Verified answer text, to be sent to the client as is."""

    text: str


@dataclass(frozen=True, slots=True)
class CitationEvent:
    """Block ``citation.n`` was cited for the first time (its marker is in the tokens sent)."""

    citation: Citation


StreamEvent = TokenEvent | CitationEvent

# -- markers --------------------------------------------------------------------------------

_Status = Literal["match", "partial", "no"]


@dataclass(frozen=True, slots=True)
class _Parse:
    status: _Status
    end: int  # match: one past the "]"; no: the offending position; partial: len(s)
    numbers: tuple[int, ...] = ()
    quote: str | None = None


def _skip_hspace(s: str, j: int) -> int:
    while j < len(s) and s[j] in _HSPACE:
        j += 1
    return j


def _parse(s: str, i: int) -> _Parse:
    """Parse the marker grammar at ``s[i] == "["`` (``partial``: ``s`` ends inside a possible
    marker). The grammar bounds a marker's length below :data:`MAX_MARKER_CHARS` except for
    whitespace runs, which the length check below bounds."""
    result = _parse_grammar(s, i)
    # A prefix this long is never a marker, wherever the grammar would have failed: so a
    # stream that holds at most that much decides exactly as the whole text does.
    too_long = result.end - i > MAX_MARKER_CHARS if result.status == "match" else (
        result.end - i >= MAX_MARKER_CHARS
    )
    return _Parse("no", i + MAX_MARKER_CHARS) if too_long else result


def _parse_grammar(s: str, i: int) -> _Parse:
    n = len(s)
    j = i + 1
    numbers: list[int] = []
    while True:
        if j >= n:
            return _Parse("partial", n)
        k = j + 1 if s[j] == "-" else j
        digits = k
        while k < n and _is_digit(s[k]) and k - digits < _DIGITS:
            k += 1
        if k >= n:
            return _Parse("partial", n)
        if k == digits or _is_digit(s[k]):  # no digit, or a digit too many
            return _Parse("no", k)
        numbers.append(_number(s[j:k]))
        j = _skip_hspace(s, k)
        if j >= n:
            return _Parse("partial", n)
        c = s[j]
        if c == "]":
            return _Parse("match", j + 1, tuple(numbers))
        if c == "," and len(numbers) < MAX_NUMBERS:
            j = _skip_hspace(s, j + 1)
            continue
        if c == ":" and len(numbers) == 1:
            return _parse_quote(s, j + 1, numbers[0])
        return _Parse("no", j)


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _number(written: str) -> int:
    """A marker's number as written; 0 for a zero-padded one (it names no block)."""
    value = int(written)
    return value if str(value) == written else 0


def _parse_quote(s: str, j: int, number: int) -> _Parse:
    n = len(s)
    j = _skip_hspace(s, j)
    if j >= n:
        return _Parse("partial", n)
    if s[j] not in _OPEN_QUOTES:
        return _Parse("no", j)
    start = j + 1
    k = start
    while k < n and s[k] not in _NOT_IN_QUOTE and k - start < MAX_QUOTE_CHARS:
        k += 1
    if k >= n:
        return _Parse("partial", n)
    if s[k] not in _CLOSE_QUOTES or k == start:
        return _Parse("no", k)
    quote = s[start:k]
    j = _skip_hspace(s, k + 1)
    if j >= n:
        return _Parse("partial", n)
    if s[j] != "]":
        return _Parse("no", j)
    return _Parse("match", j + 1, (number,), quote)


@dataclass(frozen=True, slots=True)
class _Code:
    """Where the scan is with respect to Markdown code: inside the fenced block opened by
    ``fence``, inside the inline span opened by a run of ``span`` backticks, and whether only
    spaces and markers were seen since the last line break (a fence opens a line)."""

    fence: str = ""
    span: int = 0
    line_start: bool = True


_Item = tuple[Literal["text", "marker", "wait"], int, Marker | None, _Code]
_RUN = re.compile(r"`+|~+")
_TEXT_END = re.compile(r"[\[`~\n]")
_SPAN_END = re.compile(r"[`\n]")
_FENCE_MIN = 3
_DIGITS = 4
#: A ``[0]``-like marker right after one of these is an index expression (``x[0]``).
_INDEXED = frozenset(")_")


def _next_item(s: str, pos: int, final: bool, code: _Code, before: str = "") -> _Item:
    """The item of ``s`` starting at ``pos`` (``before``: the character before ``s``): a
    plain-text run, a marker, or ``wait`` (not ``final`` and ``s`` ends before the item is
    decided), with the code state after it. Looks ahead only as far as it must, so a prefix
    of a text gives the same items as the whole text wherever it does not wait."""
    c = s[pos]
    if c == "\n":
        return ("text", pos + 1, None, _Code(code.fence, 0, True))
    if code.line_start and c in _HSPACE:
        return ("text", _skip_hspace(s, pos), None, code)
    if c in "`~" and (code.line_start or (c == "`" and not code.fence)):
        return _code_run(s, pos, final, code)
    if code.fence:
        newline = s.find("\n", pos)
        return ("text", len(s) if newline == -1 else newline, None, _mid_line(code))
    if code.span:
        found = _SPAN_END.search(s, pos)
        return ("text", len(s) if found is None else found.start(), None, _mid_line(code))
    if c != "[":
        found = _TEXT_END.search(s, pos + 1)
        return ("text", len(s) if found is None else found.start(), None, _mid_line(code))
    kind, end, marker = _bracket(s, pos, final, before)
    return (kind, end, marker, code if kind != "text" else _mid_line(code))


def _mid_line(code: _Code) -> _Code:
    return code if not code.line_start else _Code(code.fence, code.span, False)


def _code_run(s: str, pos: int, final: bool, code: _Code) -> _Item:
    """A run of backticks or tildes: a fence at a line's opening, else a code span's
    opening or closing (backticks) or plain text (tildes)."""
    run = _RUN.match(s, pos)
    assert run is not None  # noqa: S101 - s[pos] is a backtick or a tilde
    end = run.end()
    if end == len(s) and not final:
        return ("wait", pos, None, code)  # the run may go on
    length = end - pos
    if code.line_start and length >= _FENCE_MIN:
        if not code.fence:
            return ("text", end, None, _Code(s[pos:end], 0, False))
        if s[pos] == code.fence[0] and length >= len(code.fence):
            return ("text", end, None, _Code("", 0, False))
    elif s[pos] == "`" and not code.fence:
        span = length if not code.span else 0 if code.span == length else code.span
        return ("text", end, None, _Code("", span, False))
    return ("text", end, None, _mid_line(code))


def _bracket(
    s: str, pos: int, final: bool, before: str
) -> tuple[Literal["text", "marker", "wait"], int, Marker | None]:
    """The item at a ``[`` outside code: a marker, plain text or ``wait``."""
    parsed = _parse(s, pos)
    if parsed.status == "partial":
        if not final:
            return ("wait", pos, None)
        parsed = _Parse("no", len(s))
    if parsed.status == "match":
        if parsed.end == len(s) and not final:
            return ("wait", pos, None)  # a "(" next would make it a Markdown link
        previous = s[pos - 1] if pos else before
        indexed = (previous.isalnum() or previous in _INDEXED) and any(
            n < 1 for n in parsed.numbers
        )
        if (parsed.end == len(s) or s[parsed.end] != "(") and not indexed:
            return ("marker", parsed.end,
                    Marker(pos, parsed.end, parsed.numbers, parsed.quote))
        return ("text", pos + 1, None)
    if parsed.end == len(s) and not final:
        return ("wait", pos, None)  # too long, but is a nested "[" next?
    if parsed.end < len(s) and s[parsed.end] == "[":
        return ("text", parsed.end + 1, None)  # nested "[": both brackets are plain text
    return ("text", pos + 1, None)


def find_markers(text: str) -> list[Marker]:
    """Every citation marker of ``text``, in order (see the module docstring for the
    grammar)."""
    markers: list[Marker] = []
    pos = 0
    code = _Code()
    while pos < len(text):
        _, end, marker, code = _next_item(text, pos, True, code)
        if marker is not None:
            markers.append(marker)
        pos = end
    return markers


# -- sentences and words ----------------------------------------------------------------------

STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves""".split()
)
_WORD = re.compile(r"\w+")
_ABBREVIATIONS = frozenset(
    "eg ie cf vs al fig figs mr mrs ms dr prof st jr sr inc ltd co no nos vol pp approx "
    "dept est ca resp sec ch art".split()
)
_BULLET = re.compile(r"[ \t]*(?:[-*+\u2022\u25e6\u2023>]|\d{1,3}[.)]|\(?[a-z]\))[ \t]+")
_HEADING_MAX_WORDS = 10
_SENTENCE_MAX_CHARS = 400
#: A sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace.
_END = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*(?=\s)")


def _stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> list[str]:
    """The lower-cased, lightly stemmed words of ``text`` without stop words and numbers."""
    words = (w.lower() for w in _WORD.findall(text))
    return [_stem(w) for w in words if w not in STOP_WORDS and not w.isdigit()]


def _is_boundary(text: str, dot: int, after: int) -> bool:
    """Whether the punctuation run at ``text[dot:after]`` ends a sentence."""
    if text[dot] != ".":
        return True
    word_start = dot
    while word_start > 0 and (text[word_start - 1].isalnum() or text[word_start - 1] == "."):
        word_start -= 1
    word = text[word_start:dot].replace(".", "").lower()
    if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
        return False  # "e.g.", "Dr.", an initial
    following = text[after:after + 2].lstrip()[:1]
    return not following.islower()  # "in 3 vols. with ..." goes on


def _line_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.splitlines(keepends=True):
        spans.append((pos, pos + len(line.rstrip("\r\n"))))
        pos += len(line)
    return spans


def _is_heading(line: str, previous: str, following: str) -> bool:
    """A ``#`` line, or a short capitalised line without terminal punctuation between a
    finished sentence (or a blank line) and a capitalised line: not a wrapped line."""
    if line.startswith("#"):
        return True
    if len(line.split()) > _HEADING_MAX_WORDS or line[-1] in ".!?,;:\"'\u201d)]":
        return False
    starts_upper = line[0].isupper() or line[0].isdigit()
    after_end = not previous or previous[-1] in ".!?:\"'\u201d)"
    before_upper = not following or following[0].isupper() or following[0].isdigit() or (
        _BULLET.match(following) is not None
    )
    return starts_upper and after_end and before_upper


def _units(text: str) -> Iterator[tuple[int, int]]:
    """Paragraph-like units: runs of lines, broken at blank lines, bullet lines and
    headings."""
    lines = _line_spans(text)
    stripped = [text[a:b].strip() for a, b in lines]
    start: int | None = None
    end = 0
    for index, (line_start, line_end) in enumerate(lines):
        line = stripped[index]
        if not line:
            if start is not None:
                yield start, end
                start = None
            continue
        previous = stripped[index - 1] if index > 0 else ""
        following = stripped[index + 1] if index + 1 < len(lines) else ""
        bullet = _BULLET.match(text, line_start, line_end)
        if bullet is not None:
            if start is not None:
                yield start, end
            start, end = bullet.end(), line_end
            continue
        if _is_heading(line, previous, following):
            if start is not None:
                yield start, end
            yield line_start, line_end
            start = None
            continue
        if start is None:
            start = line_start
        end = line_end
    if start is not None:
        yield start, end


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _cut(text: str, start: int, end: int, limit: int) -> tuple[int, int]:
    """``text[start:end]`` cut to at most ``limit`` characters at a word boundary."""
    if end - start <= limit:
        return start, end
    space = max(text.rfind(" ", start, start + limit + 1), text.rfind("\n", start, start + limit))
    cut = space if space > start else start + limit
    return _trimmed(text, start, cut)


def split_sentences(text: str, *, max_chars: int = _SENTENCE_MAX_CHARS) -> list[tuple[int, int]]:
    """The sentences of ``text`` as ``(start, end)`` spans (trimmed, non-empty, in order).

    Blank lines, bullet/list lines and headings (``#`` lines, short lines without terminal
    punctuation) end a sentence; within a paragraph a sentence ends at ``.``/``!``/``?``
    followed by whitespace, except after common abbreviations (``e.g.``, ``Dr.``) and
    initials, or when a lower-case word follows. Sentences longer than ``max_chars`` are cut
    into pieces at word boundaries. ``text[start:end]`` is always the sentence as stored.
    """
    spans: list[tuple[int, int]] = []
    for unit_start, unit_end in _units(text):
        start = unit_start
        for match in _END.finditer(text, unit_start, unit_end):
            if _is_boundary(text, match.start(), match.end()):
                _add(spans, text, start, match.end(), max_chars)
                start = match.end()
        _add(spans, text, start, unit_end, max_chars)
    return spans


def _add(spans: list[tuple[int, int]], text: str, start: int, end: int, max_chars: int) -> None:
    start, end = _trimmed(text, start, end)
    while end > start:
        piece = _cut(text, start, end, max_chars)
        if piece[1] <= piece[0]:
            break
        spans.append(piece)
        start, end = _trimmed(text, piece[1], end)


def best_sentence(block_text: str, context: str) -> str:
    """The sentence of ``block_text`` sharing the most content words with ``context`` (ties:
    the earliest), cut to :data:`QUOTE_CHARS` at a word boundary; an exact substring of
    ``block_text`` ('' only when the block has no text)."""
    spans = split_sentences(block_text)
    if not spans:
        return ""
    wanted = set(content_words(context))
    best, best_score = spans[0], -1
    for span in spans:
        score = len(wanted.intersection(content_words(block_text[span[0]:span[1]])))
        if score > best_score:
            best, best_score = span, score
    start, end = _cut(block_text, best[0], best[1], QUOTE_CHARS)
    return block_text[start:end]


_FOLD = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def _normalised(text: str) -> tuple[str, list[int]]:
    """``text`` lower-cased with whitespace runs as one space and curly quotes straight, and
    for each character of the result the index of the character it came from."""
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if char.isspace():
            if chars and chars[-1] != " ":
                chars.append(" ")
                origin.append(index)
            continue
        for folded in _FOLD.get(char, char).lower():
            chars.append(folded)
            origin.append(index)
    return "".join(chars), origin


def locate_quote(block_text: str, quote: str) -> str | None:
    """The exact substring of ``block_text`` that ``quote`` matches once whitespace and case
    are normalised (and curly quotes straightened), or None when it does not occur."""
    wanted, _ = _normalised(quote.strip())
    wanted = wanted.strip()
    if not any(c.isalnum() for c in wanted):
        return None
    haystack, origin = _normalised(block_text)
    at = haystack.find(wanted)
    if at == -1:
        return None
    start = origin[at]
    last = origin[at + len(wanted) - 1]
    return block_text[start:last + 1]


def _answer_context(text: str) -> str:
    """The answer sentence a marker at the end of ``text`` supports: the text since the last
    sentence end, or the sentence before that when the marker opens a sentence."""
    spans = split_sentences(text)
    for start, end in reversed(spans):
        if content_words(text[start:end]):
            return text[start:end]
    return ""


# -- verification -------------------------------------------------------------------------


class CitationStream:
    """The citation check over streamed deltas.

    :meth:`feed` returns the events a delta makes certain: text that might still become (part
    of) a marker — a ``[`` not yet closed, a ``]`` that a ``(`` could turn into a Markdown
    link, trailing spaces an invalid marker would take with it — is held back until it is
    resolved (never more than :data:`MAX_MARKER_CHARS` of a marker). A valid marker is sent
    as token text, followed by a :class:`CitationEvent` the first time each ``n`` is cited;
    an invalid one is never sent. :meth:`finish` releases the rest and returns the
    :class:`Verified` answer, whose ``text`` is exactly the concatenation of every token.

    Tidying after an invalid marker is removed: the spaces before it go too (``"lava
    [7]."`` → ``"lava."``), and are put back unless what follows is whitespace, closing
    punctuation or the end (``"a [7] b"`` → ``"a b"``, ``"a [7][1]"`` → ``"a [1]"``); at the
    start of a line the spaces after it go instead (``"[7] Text"`` → ``"Text"``); right after a
    backtick or a tilde a space takes its place unless closing punctuation follows. Text
    without invalid markers is returned unchanged.
    """

    def __init__(self, blocks: Sequence[ContextBlock]) -> None:
        self._blocks: dict[int, ContextBlock] = {}
        for block in blocks:
            self._blocks.setdefault(block.n, block)
        self._raw = ""
        self._code = _Code()  # the code state at the start of ``_raw``
        self._before = ""  # the character before ``_raw``
        self._text: list[str] = []  # everything emitted
        self._tail = ""  # the last MAX_MARKER_CHARS characters emitted
        self._held = ""  # trailing spaces not yet emitted
        self._gap: str | None = None  # spaces removed with an invalid marker, maybe put back
        self._skip = False  # skipping spaces after an invalid marker at a line start
        self._citations: dict[int, Citation] = {}
        self._dropped = 0
        self._events: list[StreamEvent] = []
        self._pending_token: list[str] = []
        self._finished = False

    def feed(self, delta: str) -> list[StreamEvent]:
        """Take the next delta; return the events now certain."""
        if self._finished:
            raise RuntimeError("CitationStream.feed after finish")
        self._raw += delta
        self._process(final=False)
        return self._take_events()

    def finish(self) -> tuple[list[StreamEvent], Verified]:
        """Release what was held back; return the last events and the verified answer."""
        if not self._finished:
            self._process(final=True)
            self._gap = None  # the end of the text: the spaces stay removed
            if self._held:
                self._emit(self._held)
                self._held = ""
            self._finished = True
        verified = Verified(
            text="".join(self._text), citations=list(self._citations.values()),
            dropped=self._dropped,
        )
        return self._take_events(), verified

    # -- internals ------------------------------------------------------------------------

    def _take_events(self) -> list[StreamEvent]:
        self._flush_token()
        events, self._events = self._events, []
        return events

    def _flush_token(self) -> None:
        if self._pending_token:
            self._events.append(TokenEvent("".join(self._pending_token)))
            self._pending_token = []

    def _emit(self, text: str) -> None:
        if text:
            self._text.append(text)
            self._pending_token.append(text)
            self._tail = (self._tail + text)[-MAX_MARKER_CHARS:]

    def _at_line_start(self) -> bool:
        return self._tail[-1:] in ("", "\n", "\r")

    def _inside_marker(self) -> bool:
        """Whether the text emitted so far ends inside a would-be marker (one that failed
        only for its length): removing spaces there could turn it into a marker."""
        at = self._tail.rfind("[")
        return at != -1 and _parse(self._tail, at).status == "partial"

    def _process(self, *, final: bool) -> None:
        raw = self._raw
        pos = 0
        while pos < len(raw):
            kind, end, marker, code = _next_item(raw, pos, final, self._code, self._before)
            if kind == "wait":
                break
            if marker is None:
                self._plain(raw[pos:end])
            else:
                self._marker(marker, raw[pos:end])
            self._code = code
            pos = end
        if pos:
            self._before = raw[pos - 1]
        self._raw = raw[pos:]

    def _plain(self, text: str) -> None:
        for char in text:
            if self._skip:
                if char in _HSPACE:
                    continue
                self._skip = False
            if self._gap is not None:
                if not (char.isspace() or char in _CLOSERS):
                    self._emit(self._gap)
                self._gap = None
            if char in _HSPACE:
                self._held += char
            else:
                self._emit(self._held + char)
                self._held = ""

    def _marker(self, marker: Marker, written: str) -> None:
        valid: list[int] = []
        for n in marker.numbers:
            block = self._blocks.get(n)
            if block is not None and (
                marker.quote is None or locate_quote(block.text, marker.quote) is not None
            ):
                valid.append(n)
            else:
                self._dropped += 1
        if not valid:
            self._drop()
            return
        if len(valid) < len(marker.numbers):
            written = "[" + ", ".join(str(n) for n in valid) + "]"
        context = _answer_context("".join(self._text))
        self._skip = False
        if self._gap is not None:
            self._emit(self._gap)
            self._gap = None
        self._emit(self._held + written)
        self._held = ""
        new = [n for n in dict.fromkeys(valid) if n not in self._citations]
        if new:
            self._flush_token()
        for n in new:
            block = self._blocks[n]
            quote = None if marker.quote is None else locate_quote(block.text, marker.quote)
            if quote is None:
                quote = best_sentence(block.text, context)
            citation = Citation(n=n, chunk_id=block.chunk_id, document_id=block.document_id,
                                title=block.title, page=block.page, quote=quote)
            self._citations[n] = citation
            self._events.append(CitationEvent(citation))

    def _drop(self) -> None:
        if self._inside_marker():
            return  # no tidying: the text around the removed marker stays as written
        if self._held:
            if self._at_line_start():
                self._skip = True  # keep the indentation, lose the spaces after the marker
            else:
                self._gap, self._held = self._held, ""
        elif self._gap is None and self._at_line_start():
            self._skip = True
        elif self._gap is None and self._tail[-1:] in ("`", "~"):
            self._gap = " "  # two backtick runs must not merge where the marker was


def verify(text: str, blocks: Sequence[ContextBlock]) -> Verified:
    """Check every marker of ``text`` against ``blocks`` (see :class:`CitationStream`)."""
    stream = CitationStream(blocks)
    stream.feed(text)
    return stream.finish()[1]
