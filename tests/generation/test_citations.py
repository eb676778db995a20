"""Hand examples and properties of the citation check in ``ragd.generation.citations``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.generation.base import ContextBlock
from ragd.generation.citations import (
    MAX_MARKER_CHARS,
    Citation,
    CitationEvent,
    CitationStream,
    Marker,
    TokenEvent,
    Verified,
    find_markers,
    locate_quote,
    split_sentences,
    verify,
)

VOLCANO = (
    "Basalt columns form when thick lava flows cool slowly and contract. The cracks meet at "
    "angles near 120 degrees, so the columns are mostly hexagonal. The Giant's Causeway in "
    "Northern Ireland is a famous example."
)
GLACIER = (
    "Glaciers carve U-shaped valleys and fjords over thousands of years.\n"
    "Meltwater from the  ice sheet feeds the rivers below."
)
HARBOUR = "Harbour cranes unload containers at dawn. Ships leave with the evening tide."
BLOCKS = [
    ContextBlock(1, "c1", "d1", "volcano", 3, VOLCANO),
    ContextBlock(2, "c2", "d2", "glacier", None, GLACIER),
    ContextBlock(3, "c3", "d3", "harbour", 1, HARBOUR),
]


def _refs(text: str) -> int:
    return sum(len(marker.numbers) for marker in find_markers(text))


def _stream(text: str, cuts: list[int]) -> tuple[list[TokenEvent | CitationEvent], Verified]:
    stream = CitationStream(BLOCKS)
    events: list[TokenEvent | CitationEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(text)]:
        events.extend(stream.feed(text[start:cut]))
        start = max(start, cut)
    tail, verified = stream.finish()
    return [*events, *tail], verified


def _tokens(events: list[TokenEvent | CitationEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


# -- markers --------------------------------------------------------------------------------


def test_marker_forms() -> None:
    text = 'a [1] b [2, 3] c [1][2] d [2: "fjords over"] e [3 ,1] f'
    assert [(m.numbers, m.quote) for m in find_markers(text)] == [
        ((1,), None), ((2, 3), None), ((1,), None), ((2,), None), ((2,), "fjords over"),
        ((3, 1), None),
    ]
    first = find_markers(text)[0]
    assert first == Marker(2, 5, (1,), None) and text[first.start:first.end] == "[1]"


def test_things_that_are_not_markers() -> None:
    for text in ["[]", "[abc]", "[10000]", "[-]", "[1](https://example.com)",
                 "[^1]", "[ 1]", "[1 2]", '[1: ""]', "[1, 2: \"x\"]", "[[1]]", "[1, [2]",
                 "[1\n]", '[1: "line\nbreak"]', "[1", "1]", "x[0]", "seq[-1]", "f()[0]",
                 "a_[00]", "`[2]`", "``a [2] b``", "```\n[2]\n```", "~~~py\nx = [1]\n~~~"]:
        assert find_markers(text) == [], text
    assert [m.numbers for m in find_markers("see `[2]` and [999]")] == [(999,)]


def test_markers_that_name_no_block_are_markers() -> None:
    text = "a [0] b [-1] c [01] d [1000] e [2, 0] f ([0]) g x[1]"
    assert [m.numbers for m in find_markers(text)] == [
        (0,), (-1,), (0,), (1000,), (2, 0), (0,), (1,),
    ]


def test_code_spans_and_fences_end_where_markdown_ends_them() -> None:
    text = "`a [1]` [2] ``b ` [3]`` [4]\n`open [5]\n[6]\n```python\nx[7]\n  ```\n[8]"
    assert [m.numbers for m in find_markers(text)] == [(2,), (4,), (6,), (8,)]
    # A fence closes only with a run of its own character, at least as long.
    text = "````\n```\n[1]\n~~~~\n[2]\n````\n[3]"
    assert [m.numbers for m in find_markers(text)] == [(3,)]


# -- verify: hand examples --------------------------------------------------------------------


def test_valid_citations_are_kept_with_sentence_quotes() -> None:
    text = "Columns are hexagonal because the cracks meet near 120 degrees [1]. " \
           "Glaciers carve fjords [2]."
    verified = verify(text, BLOCKS)
    assert verified.text == text and verified.dropped == 0
    assert verified.citations == [
        Citation(1, "c1", "d1", "volcano", 3,
                 "The cracks meet at angles near 120 degrees, so the columns are mostly "
                 "hexagonal."),
        Citation(2, "c2", "d2", "glacier", None,
                 "Glaciers carve U-shaped valleys and fjords over thousands of years."),
    ]


def test_out_of_range_number_is_dropped_and_counted() -> None:
    verified = verify("Lava cools [1]. Volcanoes are made of cheese [7].", BLOCKS)
    assert verified.text == "Lava cools [1]. Volcanoes are made of cheese."
    assert verified.dropped == 1 and [c.n for c in verified.citations] == [1]


def test_fabricated_quote_is_dropped_and_a_real_one_is_mapped_to_the_stored_text() -> None:
    verified = verify('Glaciers carve fjords [2: "fjords are made by dragons"].', BLOCKS)
    assert verified.text == "Glaciers carve fjords." and verified.dropped == 1
    assert verified.citations == []

    # Whitespace, case and curly quotes differ; the quote returned is the stored text.
    verified = verify('Meltwater feeds rivers [2: \u201cMELTWATER from the ice   sheet\u201d].',
                      [BLOCKS[1]])
    assert verified.dropped == 0
    assert verified.citations[0].quote == "Meltwater from the  ice sheet"
    assert verified.citations[0].quote in GLACIER


def test_markers_naming_no_block_are_removed() -> None:
    for text in ["Lava cools [0].", "Lava cools [-2].", "Lava cools [01].", "Lava cools [4]."]:
        assert verify(text, BLOCKS) == Verified("Lava cools.", [], 1), text
    verified = verify("Lava cools [0, 1, 1000].", BLOCKS)
    assert verified.text == "Lava cools [1]." and verified.dropped == 2


def test_index_expressions_and_code_are_kept_as_written() -> None:
    text = "Take x[0] and a[-1]; `xs[0]` and `ys[9]` too.\n```\nfirst = items[0] + rows[5]\n```"
    assert verify(text, BLOCKS) == Verified(text, [], 0)


def test_a_marker_removed_between_code_spans_leaves_a_space() -> None:
    verified = verify("Use `a`[7]`b` [1], or `c`[7].", BLOCKS)
    assert verified.text == "Use `a` `b` [1], or `c`."
    assert verified.dropped == 2


def test_a_fence_after_a_removed_marker_stays_a_fence() -> None:
    text = "[7] ```\n[9] x[1]\n```\nLava [1]."
    verified = verify(text, BLOCKS)
    assert verified.text == "```\n[9] x[1]\n```\nLava [1]."
    assert verified.dropped == 1 and [c.n for c in verified.citations] == [1]


def test_partially_valid_list_keeps_the_valid_number() -> None:
    verified = verify("Lava cools and ships leave [1, 9, 3].", BLOCKS)
    assert verified.text == "Lava cools and ships leave [1, 3]."
    assert verified.dropped == 1 and [c.n for c in verified.citations] == [1, 3]
    assert verify("Lava cools [9, 8].", BLOCKS) == Verified("Lava cools.", [], 2)


def test_markdown_link_is_not_a_citation() -> None:
    text = "See [1](https://example.com/1) and [7](x)."
    assert verify(text, BLOCKS) == Verified(text, [], 0)


def test_duplicate_citations_give_one_citation_per_block() -> None:
    verified = verify("Lava cools [1]. It contracts [1][1]. Fjords [2] and lava [1, 2].", BLOCKS)
    assert [c.n for c in verified.citations] == [1, 2] and verified.dropped == 0
    # The first appearance decides the quote.
    assert verified.citations[0].quote.startswith("Basalt columns form")


def test_whitespace_is_tidy_after_removal() -> None:
    cases = {
        "Cheese [7].": "Cheese.",
        "Cheese [7] and wine.": "Cheese and wine.",
        "Cheese [7], wine [8]; bread [9]!": "Cheese, wine; bread!",
        "[7] Starts a line.\n[8] Another.": "Starts a line.\nAnother.",
        "Lava [7][1].": "Lava [1].",
        "Lava [7] [1].": "Lava [1].",
        "Lava[7] cools.": "Lava cools.",
        "(see [7])": "(see)",
        "- [7] bullet": "- bullet",
        "Lava [7]\nnext": "Lava\nnext",
    }
    for text, expected in cases.items():
        verified = verify(text, BLOCKS)
        assert verified.text == expected, text
        assert "  " not in verified.text and " ." not in verified.text


@pytest.mark.parametrize("text", [
    "[1" + " " * 450 + "[2] x", "[1" + " " * 398 + "[2]", "[1" + " " * 397 + "[2]",
    '[3: "' + "a" * 299 + '"] [2]', '[3: "' + "a" * 300 + '"] [2]', "[1,  " * 90 + "[2]",
])
def test_long_would_be_markers_stream_like_the_whole_text(text: str) -> None:
    whole = verify(text, BLOCKS)
    for step in (1, 7, 399, 400):
        events, streamed = _stream(text, list(range(0, len(text), step)))
        assert streamed == whole and _tokens(events) == whole.text


def test_removal_never_forges_a_marker() -> None:
    for text in ["[1, [9]2]", "[9" + " " * 398 + "[7]]", '[1: "' + "a" * 300 + ' [7]"]',
                 "[2" + " " * 397 + "[7]" + " " * 5 + "]"]:
        once = verify(text, BLOCKS)
        twice = verify(once.text, BLOCKS)
        assert twice == Verified(once.text, [], 0) and once.citations == [], text


def test_quote_of_a_long_sentence_is_cut_at_a_word_boundary() -> None:
    long = "word " * 200 + "lava."
    verified = verify("Lava [1].", [ContextBlock(1, "c", "d", "t", None, long)])
    quote = verified.citations[0].quote
    assert quote in long and 0 < len(quote) <= 300 and not quote.endswith(" ")


def test_sentences_handle_abbreviations_bullets_and_headings() -> None:
    text = ("# Setup\nInstall it, e.g. with pip. Then run Dr. Smith's tool.\n"
            "- first item\n- second item\n\nLast paragraph here")
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "# Setup", "Install it, e.g. with pip.", "Then run Dr. Smith's tool.",
        "first item", "second item", "Last paragraph here",
    ]


def test_stream_holds_back_possible_markers() -> None:
    stream = CitationStream(BLOCKS)
    assert stream.feed("Lava cools ") == [TokenEvent("Lava cools")]
    assert stream.feed("[") == []
    assert stream.feed("1") == []
    assert stream.feed("]") == []  # a "(" would make it a link
    events = stream.feed(". Cheese [9")
    assert events[0] == TokenEvent(" [1]") and isinstance(events[1], CitationEvent)
    assert events[2] == TokenEvent(". Cheese")  # the space waits: the marker may be invalid
    assert stream.feed("].") == [TokenEvent(".")]
    tail, verified = stream.finish()
    assert tail == [] and verified.text == "Lava cools [1]. Cheese." and verified.dropped == 1


def test_stream_releases_an_unclosed_bracket_at_the_cap() -> None:
    stream = CitationStream(BLOCKS)
    text = '[1: "' + "a" * 100
    assert _tokens(stream.feed(text)) == ""
    released = _tokens(stream.feed("b" * 300))  # the quote is now too long to be a marker
    assert released.startswith('[1: "a') and len(released) <= len(text) + 300
    tail, verified = stream.finish()
    assert verified.text == text + "b" * 300
    assert "[1" + "0" * MAX_MARKER_CHARS not in verified.text


# -- properties -----------------------------------------------------------------------------

FRAGMENTS = st.sampled_from([
    "Lava", "cools", "slowly", "columns", "hexagonal", "fjords", "ice", "cranes", "the",
    " ", " ", "  ", "\t", "\n", ".", ",", "!", "?", ":", "(", ")", "x", "1", "9", "-",
    "[1]", "[2]", "[3]", "[7]", "[0]", "[1, 9]", "[2,3]", "[", "]", "[1", "(http://x)",
    '[1: "thick lava"]', '[2: "made by dragons"]', '[3: "Harbour  CRANES"]', '"',
    "[[", "]]", ", ", "[1][7]", "[9] ", " [8]", "\u201c", "[0]", "[-1]", "x[0]", "[02]",
    "`", "``", "```", "~~~", "\n```\n", "~", "_",
])
TEXTS = st.lists(FRAGMENTS, max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_quotes_are_exact_substrings_of_their_chunk(text: str) -> None:
    by_n = {block.n: block for block in BLOCKS}
    for citation in verify(text, BLOCKS).citations:
        block = by_n[citation.n]
        assert citation.quote in block.text and citation.quote.strip() == citation.quote
        assert (citation.chunk_id, citation.title) == (block.chunk_id, block.title)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_dropped_plus_kept_references_are_all_references(text: str) -> None:
    verified = verify(text, BLOCKS)
    assert verified.dropped + _refs(verified.text) == _refs(text)
    kept = {n for marker in find_markers(verified.text) for n in marker.numbers}
    assert kept == {c.n for c in verified.citations}
    assert [c.n for c in verified.citations] == list(
        dict.fromkeys(n for m in find_markers(verified.text) for n in m.numbers)
    )


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_verify_is_idempotent(text: str) -> None:
    once = verify(text, BLOCKS)
    twice = verify(once.text, BLOCKS)
    assert twice.text == once.text and twice.dropped == 0
    assert [c.n for c in twice.citations] == [c.n for c in once.citations]


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_text_without_invalid_markers_is_unchanged(text: str) -> None:
    verified = verify(text, BLOCKS)
    if verified.dropped == 0 and all(
        len(m.numbers) == 1 or set(m.numbers) <= {1, 2, 3} for m in find_markers(text)
    ):
        assert verified.text == text


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_split_streams_the_same_answer(text: str, cuts: list[int]) -> None:
    whole = verify(text, BLOCKS)
    events, verified = _stream(text, [min(cut, len(text)) for cut in cuts])
    assert verified == whole
    assert _tokens(events) == whole.text
    assert [e.citation for e in events if isinstance(e, CitationEvent)] == whole.citations
    assert all(e.text for e in events if isinstance(e, TokenEvent))


LONG_TEXTS = st.lists(
    st.one_of(FRAGMENTS, st.sampled_from([" " * 130, "a" * 150, '[1: "' + "b" * 140])),
    max_size=25,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(LONG_TEXTS, st.lists(st.integers(min_value=0, max_value=1500), max_size=12))
def test_long_texts_stream_the_same_answer_and_verify_idempotently(
    text: str, cuts: list[int]
) -> None:
    whole = verify(text, BLOCKS)
    events, verified = _stream(text, [min(cut, len(text)) for cut in cuts])
    assert verified == whole and _tokens(events) == whole.text
    twice = verify(whole.text, BLOCKS)
    assert twice.text == whole.text and twice.dropped == 0
    assert whole.dropped + _refs(whole.text) == _refs(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.lists(st.integers(min_value=0, max_value=80), max_size=8))
def test_arbitrary_text_streams_the_same_answer(text: str, cuts: list[int]) -> None:
    whole = verify(text, BLOCKS)
    events, verified = _stream(text, [min(cut, len(text)) for cut in cuts])
    assert verified == whole and _tokens(events) == whole.text
    for citation in whole.citations:
        assert citation.quote in BLOCKS[citation.n - 1].text


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([VOLCANO, GLACIER, HARBOUR]), st.data())
def test_located_quotes_map_back_to_the_stored_text(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    end = data.draw(st.integers(min_value=start + 1, max_value=len(text)))
    piece = text[start:end]
    shouted = " ".join(piece.upper().split())
    found = locate_quote(text, shouted)
    if any(c.isalnum() for c in piece):
        assert found is not None and found in text
        assert " ".join(found.lower().split()) == " ".join(piece.lower().split())
