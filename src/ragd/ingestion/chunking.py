"""Structure-aware chunking of a parsed document, sized in the embedder's tokens.

A pure function: ``chunk_document(doc, tokenize=...)`` returns the same chunks for the same
input, reads nothing and loads nothing. The caller supplies ``tokenize(text) -> [(start, end)]``
(the embedder tokenizer's character offsets without special tokens; in production the
``offsets`` of a HF ``tokenizers`` encoding), so chunk sizes are measured in the tokens that the
embedder will actually see.

Rules, in order:

1. Sections are grouped into runs with the same top-level heading (``heading_path[0]``, or no
   heading at all). A chunk never spans two runs. Whitespace-only sections produce nothing.
2. Inside a run, consecutive sections that each fit in ``target_tokens`` are packed together
   (joined as they appear in ``doc.text``) while the total stays within ``target_tokens``.
   Packed chunks do not overlap. Heading sections that would end a full pack move to the
   next pack instead (when they fit there), so a question heading stays with its answer.
3. A section longer than ``target_tokens`` is split on its own into pieces of at most
   ``target_tokens`` tokens, *overlap included*. Each piece ends at the best break point in its
   window, preferring, in order: a paragraph break (blank line), a sentence end (``.``, ``?``,
   ``!``, ``…``, optionally followed by closing quotes/brackets, then whitespace), a line break,
   a space between words, a token boundary, and only if a pathological tokenizer leaves nothing
   else a character boundary. A preferred break is only taken if the piece keeps at least half
   of ``target_tokens``; otherwise the next kind of break is tried. Consecutive pieces of the
   same section overlap by at most ``overlap_tokens`` tokens; the overlap starts at a sentence
   or line start when one lies in that window, else at a word start, else at a token.
4. Every chunk is then checked against the real tokenizer on its exact text; a chunk over
   ``max_tokens`` is cut shorter (at the next best break) until it fits. ``max_tokens``
   defaults to ``target_tokens``: the overlap counts inside the target, so ``target_tokens`` is
   already the size of the largest chunk and there is no hidden ``+ overlap``. A larger
   ``max_tokens`` only tolerates tokenizers whose count for a slice exceeds the planned count.

Chunk text is always ``doc.text[start:end]`` with leading and trailing whitespace excluded;
every non-whitespace character of ``doc.text`` lies in at least one chunk. ``embed_text``
prefixes the heading path (for the embedder and the lexical index; the rule is
:func:`ragd.stores.catalog.embed_text`, which the catalog also applies when it hands chunks to
the indexes); ``text`` stays the display text. The heading prefix is not counted in
``token_count``: callers whose embedder truncates (e.g. 256 tokens including two special
tokens) should pick ``target_tokens`` with room for it.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ragd.ingestion.parsers.base import ParsedDocument, Section
from ragd.stores.catalog import embed_text

__all__ = ["Chunk", "Tokenize", "cap_chunks", "chunk_document", "chunk_id"]

#: ``tokenize(text)`` returns each token's ``(start, end)`` character span in ``text``.
Tokenize = Callable[[str], Sequence[tuple[int, int]]]

# Break points are the position where the next piece would start (after the separator).
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n\s*")
_SENTENCE = re.compile(r"[.?!\u2026][\"'\u201d\u2019)\]]*\s+")
_LINE = re.compile(r"\n\s*")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of ``doc.text``: ``text == doc.text[start:end]``.

    ``heading_path`` is that of the section where the chunk starts; ``page``/``page_end`` are
    the first and last page (or slide) the chunk covers, when the format has pages.
    ``token_count`` is ``len(tokenize(text))`` with the tokenizer the chunker was given.
    """

    ordinal: int
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]
    page: int | None
    page_end: int | None
    token_count: int

    @property
    def embed_text(self) -> str:
        """The text to embed and index: the heading path, a blank line, then the text."""
        return embed_text(self.heading_path, self.text)


def chunk_id(document_id: str, version: int, ordinal: int) -> str:
    """A stable chunk id: the same document version always yields the same ids, so a retried
    ingestion job rewrites rows instead of duplicating them."""
    # Length-prefixed so that no two (document_id, version, ordinal) triples share a key.
    key = f"{len(document_id)}:{document_id}:{version}:{ordinal}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def chunk_document(
    doc: ParsedDocument,
    *,
    tokenize: Tokenize,
    target_tokens: int = 256,
    overlap_tokens: int = 32,
    max_tokens: int | None = None,
) -> list[Chunk]:
    """Split ``doc`` into chunks (see the module docstring for the exact rules).

    Raises ``ValueError`` for inconsistent sizes (``target_tokens < 1``,
    ``overlap_tokens`` outside ``[0, target_tokens)``, ``max_tokens < target_tokens``), or if
    the tokenizer yields more than ``max_tokens`` tokens for a single character.
    """
    if target_tokens < 1:
        raise ValueError("target_tokens must be at least 1")
    if not 0 <= overlap_tokens < target_tokens:
        raise ValueError("overlap_tokens must be >= 0 and smaller than target_tokens")
    bound = target_tokens if max_tokens is None else max_tokens
    if bound < target_tokens:
        raise ValueError("max_tokens must be at least target_tokens")

    builder = _Builder(doc.text, tokenize, target_tokens, overlap_tokens, bound)
    for run in _runs(doc):
        builder.add_run(run)
    return builder.chunks


def cap_chunks(
    chunks: list[Chunk], doc: ParsedDocument, limit: int
) -> tuple[list[Chunk], ParsedDocument]:
    """The first ``limit`` chunks of ``doc``, and ``doc`` with a warning that says how many
    were left out (both unchanged when there are not more). The chunks past the cap are not
    embedded or indexed: a document never holds a worker for more than ``limit`` chunks."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(chunks) <= limit:
        return chunks, doc
    kept, last = chunks[:limit], chunks[limit - 1]
    where = (
        f"page {last.page_end}" if last.page_end is not None
        else f"character {last.end:,} of {len(doc.text):,}"
    )
    warning = (
        f"only the first {limit:,} of {len(chunks):,} chunks were indexed "
        f"(the text after {where} is not searchable)"
    )
    return kept, replace(doc, warnings=(*doc.warnings, warning))


@dataclass(frozen=True, slots=True)
class _Span:
    """A non-empty section, trimmed of surrounding whitespace, located in ``doc.text``."""

    section: Section
    start: int
    end: int


def _top_level(section: Section) -> str | None:
    return section.heading_path[0] if section.heading_path else None


def _runs(doc: ParsedDocument) -> list[list[_Span]]:
    """Non-empty sections, trimmed, grouped by top-level heading.

    A whitespace-only section still ends a run when its top-level heading differs, so no chunk
    reaches across a heading, even an empty one.
    """
    runs: list[list[_Span]] = []
    run: list[_Span] = []
    key: str | None = None
    offset = 0
    for section in doc.sections:
        if _top_level(section) != key:
            if run:
                runs.append(run)
            run, key = [], _top_level(section)
        text = section.text
        lead = len(text) - len(text.lstrip())
        trail = len(text.rstrip())
        if trail > lead:
            run.append(_Span(section, offset + lead, offset + trail))
        offset += len(text) + 2  # the "\n\n" that joins sections in doc.text
    if run:
        runs.append(run)
    return runs


def _pages(sections: Sequence[Section]) -> tuple[int | None, int | None]:
    pages = [section.page for section in sections if section.page is not None]
    if not pages:
        return None, None
    return min(pages), max(pages)


class _Builder:
    def __init__(
        self, text: str, tokenize: Tokenize, target: int, overlap: int, bound: int
    ) -> None:
        self.text = text
        self.tokenize = tokenize
        self.target = target
        self.overlap = overlap
        self.bound = bound
        self.chunks: list[Chunk] = []

    def count(self, start: int, end: int) -> int:
        return len(self.tokenize(self.text[start:end]))

    def emit(self, start: int, end: int, sections: Sequence[Section], tokens: int) -> None:
        page, page_end = _pages(sections)
        self.chunks.append(
            Chunk(
                ordinal=len(self.chunks),
                text=self.text[start:end],
                start=start,
                end=end,
                heading_path=sections[0].heading_path,
                page=page,
                page_end=page_end,
                token_count=tokens,
            )
        )

    def add_run(self, run: Sequence[_Span]) -> None:
        """Pack small sections of one top-level run; split the large ones on their own."""
        pack: list[_Span] = []
        sizes: list[int] = []
        for span in run:
            spans = self.tokenize(self.text[span.start : span.end])
            tokens = len(spans)
            if tokens > self.target:
                self.flush(pack)
                pack, sizes = [], []
                _SectionSplitter(self, span, spans).run()
                continue
            if pack and sum(sizes) + tokens > self.target:
                # Headings at the end of a full pack belong with the text that follows them.
                keep = len(pack)
                while keep > 1 and pack[keep - 1].section.kind == "heading":
                    keep -= 1
                if sum(sizes[keep:]) + tokens > self.target:
                    keep = len(pack)
                self.flush(pack[:keep])
                pack, sizes = pack[keep:], sizes[keep:]
            pack.append(span)
            sizes.append(tokens)
        self.flush(pack)

    def flush(self, pack: list[_Span]) -> None:
        # The planned size is the sum of the sections' sizes; the separators between them
        # normally add no tokens, but the exact text is what is checked against the bound.
        while pack:
            take = len(pack)
            while True:
                tokens = self.count(pack[0].start, pack[take - 1].end)
                if tokens <= self.bound or take == 1:
                    break
                take -= 1
            if tokens > self.bound:  # one section whose exact text is over the bound
                span = pack[0]
                spans = self.tokenize(self.text[span.start : span.end])
                _SectionSplitter(self, span, spans).run()
            else:
                sections = [span.section for span in pack[:take]]
                self.emit(pack[0].start, pack[take - 1].end, sections, tokens)
            del pack[:take]


class _SectionSplitter:
    """Greedy split of one long section into overlapping pieces (local coordinates)."""

    def __init__(self, builder: _Builder, span: _Span, tokens: Sequence[tuple[int, int]]) -> None:
        # ``tokens``: the spans of the section's text, as the builder already computed them.
        self.builder = builder
        self.span = span
        self.base = span.start
        self.text = builder.text[span.start : span.end]
        tokens = sorted(tokens)
        self.starts = [start for start, _ in tokens]
        self.ends = sorted(end for _, end in tokens)
        self.breaks: list[list[int]] = [
            _positions(_PARAGRAPH, self.text),
            _positions(_SENTENCE, self.text),
            _positions(_LINE, self.text),
            _positions(_SPACE, self.text),
            sorted(set(self.starts)),
        ]

    def exact(self, start: int, end: int) -> int:
        return len(self.builder.tokenize(self.text[start:end]))

    def skip_space(self, position: int) -> int:
        while position < len(self.text) and self.text[position].isspace():
            position += 1
        return position

    def trim_end(self, start: int, end: int) -> int:
        while end > start and self.text[end - 1].isspace():
            end -= 1
        return end

    def run(self) -> None:
        length = len(self.text)
        target = self.builder.target
        start = fresh = 0  # piece start (overlap included) and where its new text begins
        while True:
            first = bisect_right(self.ends, start)  # first token that ends after start
            limit = self.starts[first + target] if first + target < len(self.starts) else length
            if limit <= fresh:
                if start < fresh:  # the overlap alone fills the window: drop it
                    start = fresh
                    continue
                limit = fresh + 1  # only with zero-width tokens; the bound check decides
            # Pieces keep at least half the target when a preferred break allows it.
            fill = first + max(1, target // 2) - 1
            floor = max(fresh, self.starts[fill] if fill < len(self.starts) else length)
            end, tokens = self.fit(start, fresh, floor, limit)
            if end is None:
                if start == fresh:
                    raise ValueError("the tokenizer yields more than max_tokens for one character")
                start = fresh
                continue
            stop = self.trim_end(start, end)
            self.builder.emit(self.base + start, self.base + stop, [self.span.section], tokens)
            if end >= length:
                return
            next_fresh = self.skip_space(end)
            start = self.overlap_start(start, stop, next_fresh)
            fresh = next_fresh

    def fit(self, start: int, fresh: int, floor: int, limit: int) -> tuple[int | None, int]:
        """The best break in ``(fresh, limit]`` whose piece fits the bound, and its size."""
        length = len(self.text)
        bound = self.builder.bound
        if limit >= length:
            stop = self.trim_end(start, length)
            tokens = self.exact(start, stop)
            if tokens <= bound:
                return length, tokens
            limit = length - 1
        while limit > fresh:
            end = self.best_break(fresh, floor, limit)
            tokens = self.exact(start, self.trim_end(start, end))
            if tokens <= bound:
                return end, tokens
            limit = end - 1
        return None, 0

    def best_break(self, fresh: int, floor: int, limit: int) -> int:
        for low in (floor, fresh):
            for positions in self.breaks:
                index = bisect_right(positions, limit) - 1
                if index >= 0 and positions[index] > low:
                    return positions[index]
        return limit

    def overlap_start(self, start: int, stop: int, fresh: int) -> int:
        """Where the next piece starts: up to ``overlap_tokens`` tokens before ``fresh``."""
        overlap = self.builder.overlap
        if overlap == 0:
            return fresh
        last = bisect_left(self.starts, stop)  # tokens before this one end the previous piece
        candidates = [
            self.starts[k]
            for k in range(max(0, last - overlap), last)
            if start < self.starts[k] < fresh
        ]
        # Prefer the longest overlap that starts a sentence (or line), then a word.
        ranked = sorted(
            candidates,
            key=lambda p: (
                not any(_contains(self.breaks[kind], p) for kind in range(3)),
                not (p == 0 or self.text[p - 1].isspace()),
                p,
            ),
        )
        for position in ranked:
            position = self.skip_space(position)
            if position >= fresh:
                continue
            if self.exact(position, stop) <= overlap:
                return position
        return fresh


def _contains(positions: list[int], position: int) -> bool:
    index = bisect_left(positions, position)
    return index < len(positions) and positions[index] == position


def _positions(pattern: re.Pattern[str], text: str) -> list[int]:
    return [match.end() for match in pattern.finditer(text) if match.end() < len(text)]
