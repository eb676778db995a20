"""KeyBERT keyword extraction: properties of the pure parts, and the method end to end over a
deterministic bag-of-words fake of the embedder."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ragd.models.base import TokenVectors, Vectors
from ragd.models.keywords import (
    DEFAULT_MAX_CANDIDATES,
    ENGLISH_STOP_WORDS,
    Keyword,
    KeywordExtractor,
    candidates,
    mmr,
    normalize,
    phrase_spans,
    tokenize,
)
from ragd.settings import ModelsSettings

TOKEN = re.compile(r"\w+(?:['.\-]\w+)*")
CONTENT = ["vector", "search", "python3.11", "state-of-the-art", "don't", "Über", "index", "x"]
STOPS = ["the", "of", "is", "and", "The", "it's", "e.g"]
SEPARATORS = [" ", "  ", "\n", "\t", ", ", ". ", "-", "'", ".", "; ", " (", ") ", "\u2019", "/"]

word_soup = st.lists(
    st.tuples(
        st.sampled_from(CONTENT + STOPS + ["2024", "3.11", "_"]), st.sampled_from(SEPARATORS)
    ),
    max_size=40,
).map(lambda parts: "".join(word + separator for word, separator in parts))
any_text = st.one_of(word_soup, st.text(max_size=200))
ngram_ranges = st.tuples(st.integers(1, 3), st.integers(0, 2)).map(lambda r: (r[0], r[0] + r[1]))


def collapsed(text: str) -> str:
    return " ".join(normalize(text).split())


def starts(phrase: str, text: str) -> list[int]:
    """Token indexes where ``phrase`` occurs in ``text`` as consecutive tokens separated by
    whitespace only: an independent reading of the candidate rules."""
    norm = normalize(text)
    spans = [(m.group(), m.start(), m.end()) for m in TOKEN.finditer(norm)]
    words = phrase.split(" ")
    found = []
    for i in range(len(spans) - len(words) + 1):
        window = spans[i : i + len(words)]
        if [token for token, _, _ in window] != words:
            continue
        gaps = [norm[a[2] : b[1]] for a, b in zip(window, window[1:], strict=False)]
        if all(gap and gap.isspace() for gap in gaps):
            found.append(i)
    return found


@settings(max_examples=300)
@given(text=any_text, ngram_range=ngram_ranges, limit=st.integers(1, 50))
def test_candidate_properties(text: str, ngram_range: tuple[int, int], limit: int) -> None:
    found = candidates(text, ngram_range=ngram_range, max_candidates=limit)
    assert len(found) == len(set(found)) <= limit
    haystack = collapsed(text)
    for phrase in found:
        words = phrase.split(" ")
        assert ngram_range[0] <= len(words) <= ngram_range[1]
        for word in words:  # every word is a whole token, usable, not a stop word
            assert TOKEN.fullmatch(word)
            assert word not in ENGLISH_STOP_WORDS
            assert len(word) >= 2 and any(ch.isalpha() for ch in word)
        # occurs verbatim (up to whitespace) in the normalised text, as whole tokens
        assert phrase in haystack
        assert starts(phrase, text), phrase


@given(text=any_text, ngram_range=ngram_ranges)
def test_candidates_are_deterministic_and_ordered_by_first_occurrence(
    text: str, ngram_range: tuple[int, int]
) -> None:
    found = candidates(text, ngram_range=ngram_range)
    assert found == candidates(text, ngram_range=ngram_range)
    keys = [(starts(phrase, text)[0], phrase.count(" ")) for phrase in found]
    assert keys == sorted(keys)


def test_candidate_semantics_on_an_example() -> None:
    text = (
        "State-of-the-art vector search in Python3.11: the index, e.g. HNSW, is fast.\n"
        "Vector  search beats full scans; don\u2019t use 2024 numbers or the state of the art."
    )
    assert candidates(text) == [
        "state-of-the-art",
        "state-of-the-art vector",
        "vector",
        "vector search",
        "search",
        "python3.11",
        "index",
        "hnsw",
        "fast",
        "search beats",
        "beats",
        "beats full",
        "full",
        "full scans",
        "scans",
        "use",
        "numbers",
        "state",
        "art",
    ]
    assert candidates(text, ngram_range=(2, 2))[:2] == ["state-of-the-art vector", "vector search"]
    assert "state art" not in candidates(text)  # no n-gram across a removed stop word


def test_candidate_bound_keeps_the_most_frequent() -> None:
    text = "alpha beta. gamma gamma. delta. beta. gamma."
    assert candidates(text, ngram_range=(1, 1)) == ["alpha", "beta", "gamma", "delta"]
    # gamma x3, beta x2, then the tie alpha/delta goes to the earlier one; output keeps text order
    assert candidates(text, ngram_range=(1, 1), max_candidates=3) == ["alpha", "beta", "gamma"]
    assert candidates(text, ngram_range=(1, 1), max_candidates=2) == ["beta", "gamma"]


def test_candidates_of_empty_or_stop_word_text() -> None:
    assert candidates("") == []
    assert candidates("The of and it is, e.g. 2024 -- !!") == []


def test_candidates_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        candidates("text", ngram_range=(2, 1))
    with pytest.raises(ValueError):
        candidates("text", ngram_range=(0, 1))
    with pytest.raises(ValueError):
        candidates("text", max_candidates=0)


def test_tokenize_marks_adjacency() -> None:
    assert tokenize(normalize("Fast  index, e.g. HNSW")) == [
        ("fast", False),
        ("index", True),
        ("e.g", False),
        ("hnsw", False),  # ". " between them: a sentence ends
    ]
    assert tokenize("python3.11 is\nfast") == [("python3.11", False), ("is", True), ("fast", True)]


# -- MMR -------------------------------------------------------------------------------------


def cosines(doc: npt.NDArray[np.float64], vectors: npt.NDArray[np.float64]) -> list[float]:
    result = []
    for row in vectors:
        denominator = np.linalg.norm(row) * np.linalg.norm(doc)
        result.append(float(row @ doc / denominator) if denominator else 0.0)
    return result


@st.composite
def mmr_cases(draw: st.DrawFn) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    dims = draw(st.integers(1, 5))
    count = draw(st.integers(0, 12))
    # Small integers make ties and zero vectors common.
    elements = st.integers(-2, 2).map(float) | st.floats(-1, 1, width=32)
    doc = draw(arrays(np.float64, (dims,), elements=elements))
    vectors = draw(arrays(np.float64, (count, dims), elements=elements))
    return doc, vectors


@settings(max_examples=300)
@given(case=mmr_cases(), top_n=st.integers(0, 15), diversity=st.floats(0, 1))
def test_mmr_properties(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]], top_n: int, diversity: float
) -> None:
    doc, vectors = case
    names = [f"c{i}" for i in range(len(vectors))]
    picked = mmr(doc, vectors, names, top_n, diversity)
    assert len(picked) == min(top_n, len(names))
    phrases = [phrase for phrase, _ in picked]
    assert len(set(phrases)) == len(phrases) and set(phrases) <= set(names)
    truth = dict(zip(names, cosines(doc, vectors), strict=True))
    for phrase, score in picked:
        assert not np.isnan(score)
        assert score == pytest.approx(truth[phrase], abs=1e-9)
    scores = [score for _, score in picked]
    assert scores == sorted(scores, reverse=True)
    assert picked == mmr(doc, vectors, names, top_n, diversity)  # deterministic
    if picked:  # the first pick is always the most relevant candidate
        assert max(scores) == pytest.approx(max(truth.values()), abs=1e-9)


@given(case=mmr_cases(), top_n=st.integers(0, 15))
def test_mmr_without_diversity_is_top_k_by_cosine(
    case: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]], top_n: int
) -> None:
    doc, vectors = case
    names = [f"c{i}" for i in range(len(vectors))]
    picked = mmr(doc, vectors, names, top_n, 0.0)
    truth = dict(zip(names, cosines(doc, vectors), strict=True))
    chosen = {phrase for phrase, _ in picked}
    lowest_chosen = min((truth[p] for p in chosen), default=np.inf)
    assert all(truth[p] <= lowest_chosen + 1e-9 for p in names if p not in chosen)


def test_mmr_breaks_ties_by_candidate_order() -> None:
    doc = np.array([1.0, 1.0])
    vectors = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    names = ["left", "right", "both", "both again", "nothing"]
    assert [p for p, _ in mmr(doc, vectors, names, 5, 0.0)] == [
        "both",
        "both again",
        "left",
        "right",
        "nothing",
    ]
    assert [p for p, _ in mmr(doc, vectors, names, 2, 0.0)] == ["both", "both again"]
    # Diversity 0.5: "both again", "left", "right" and "nothing" all gain exactly 0.
    assert [p for p, _ in mmr(doc, vectors, names, 2, 0.5)] == ["both", "left"]


def test_mmr_diversity_trades_relevance_for_spread() -> None:
    doc = np.array([1.0, 0.0, 0.0])
    vectors = np.array([[1.0, 0.1, 0.0], [1.0, 0.12, 0.0], [0.5, 0.0, 0.9]])
    names = ["database", "databases", "kitten"]
    assert [p for p, _ in mmr(doc, vectors, names, 2, 0.0)] == ["database", "databases"]
    assert [p for p, _ in mmr(doc, vectors, names, 2, 1.0)] == ["database", "kitten"]


def test_mmr_handles_zero_vectors_and_rejects_bad_input() -> None:
    picked = mmr(np.zeros(3), np.zeros((2, 3)), ["a", "b"], 2, 0.5)
    assert picked == [("a", 0.0), ("b", 0.0)]
    with pytest.raises(ValueError):
        mmr(np.ones(3), np.ones((2, 3)), ["a"], 1, 0.5)
    with pytest.raises(ValueError):
        mmr(np.ones(3), np.ones((1, 4)), ["a"], 1, 0.5)
    with pytest.raises(ValueError):
        mmr(np.ones(3), np.ones((1, 3)), ["a"], 1, 1.5)


# -- the extractor over a fake embedder ------------------------------------------------------

DIMENSIONS = 2048


class BagOfWords:
    """A deterministic stand-in for the sentence embedder: hashed word counts, L2-normalised.
    Records every call so tests can check that the document and candidates go in one batch."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> Vectors:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                out[row, int.from_bytes(digest, "big") % DIMENSIONS] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: Vectors = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return unit


DOCUMENT = (
    "The database stores every row in a table. A database index makes a database query fast; "
    "without the database index, every database query scans the table. "
    "Meanwhile, a kitten sleeps in the garden."
)


def test_extract_embeds_document_and_candidates_in_one_call() -> None:
    embed = BagOfWords()
    extractor = KeywordExtractor(top_n=3, diversity=0.5)
    keywords = extractor.extract(DOCUMENT, embed)
    assert len(embed.calls) == 1
    (batch,) = embed.calls
    assert batch[0] == DOCUMENT
    assert batch[1:] == extractor.candidates(DOCUMENT)
    assert len(keywords) == 3 and all(isinstance(k, Keyword) for k in keywords)
    assert len({k.keyword for k in keywords}) == 3
    assert [k.score for k in keywords] == sorted((k.score for k in keywords), reverse=True)


def test_extract_without_diversity_ranks_by_similarity_to_the_document() -> None:
    embed = BagOfWords()
    keywords = KeywordExtractor(top_n=3, diversity=0.0).extract(DOCUMENT, embed)
    (batch,) = embed.calls
    vectors = embed(batch).astype(np.float64)
    truth = cosines(vectors[0], vectors[1:])
    ranked = sorted(range(len(truth)), key=lambda i: (-truth[i], i))[:3]
    assert [k.keyword for k in keywords] == [batch[1 + i] for i in ranked]
    assert [k.score for k in keywords] == pytest.approx([truth[i] for i in ranked])
    assert keywords[0].keyword in {"database index", "database query", "database"}


def test_diversity_spreads_the_keywords() -> None:
    plain = KeywordExtractor(top_n=3, diversity=0.0).extract(DOCUMENT, BagOfWords())
    diverse = KeywordExtractor(top_n=3, diversity=0.9).extract(DOCUMENT, BagOfWords())
    assert all("database" in k.keyword for k in plain)
    assert sum("database" in k.keyword for k in diverse) == 1
    assert plain[0] == diverse[0]


@pytest.mark.parametrize("text", ["", "   ", "the of and, it is!", "2024 -- 3.11 ... x y z"])
def test_text_without_candidates_gives_nothing_and_embeds_nothing(text: str) -> None:
    embed = BagOfWords()
    assert KeywordExtractor().extract(text, embed) == []
    assert embed.calls == []


def test_top_n_per_call_and_short_texts() -> None:
    extractor = KeywordExtractor(top_n=5, diversity=0.3)
    assert len(extractor.extract(DOCUMENT, BagOfWords(), top_n=2)) == 2
    assert extractor.extract(DOCUMENT, BagOfWords(), top_n=0) == []
    (only,) = extractor.extract("Kubernetes!", BagOfWords())
    assert only.keyword == "kubernetes" and only.score == pytest.approx(1.0)


def test_a_wrong_number_of_vectors_is_reported() -> None:
    def broken(texts: list[str]) -> Vectors:
        return np.zeros((1, 4), dtype=np.float32)

    with pytest.raises(ValueError, match="one row per text"):
        KeywordExtractor().extract(DOCUMENT, broken)


def test_huge_texts_are_bounded() -> None:
    rng = np.random.default_rng(3)
    vocabulary = [f"term{i}" for i in range(5000)]
    text = " ".join(rng.choice(vocabulary, size=60_000).tolist())  # ~ 500k characters
    embed = BagOfWords()
    extractor = KeywordExtractor(top_n=5, max_candidates=100, max_chars=200_000)
    keywords = extractor.extract(text, embed)
    (batch,) = embed.calls
    assert len(batch) <= 101 and len(keywords) == 5
    assert batch[0] == text[:200_000]
    assert len(candidates(text)) == DEFAULT_MAX_CANDIDATES


def test_from_settings() -> None:
    models = ModelsSettings(
        keywords_top_n=7, keywords_ngram_max=3, keywords_diversity=0.2, keywords_max_chars=1000
    )
    extractor = KeywordExtractor.from_settings(models)
    assert extractor.top_n == 7
    assert extractor.ngram_range == (1, 3)
    assert extractor.diversity == 0.2
    assert extractor.max_chars == 1000
    assert KeywordExtractor.from_settings(models, max_candidates=10).max_candidates == 10


def test_extractor_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        KeywordExtractor(diversity=1.5)
    with pytest.raises(ValueError):
        KeywordExtractor(ngram_max=0)
    with pytest.raises(ValueError):
        KeywordExtractor(max_candidates=0)


# -- phrases located in the text (keywords from the chunk's own forward pass) -----------------


@settings(max_examples=300)
@given(text=any_text, ngram_range=ngram_ranges, limit=st.integers(1, 50))
def test_phrase_spans_locate_every_occurrence_of_the_same_candidates(
    text: str, ngram_range: tuple[int, int], limit: int
) -> None:
    found = phrase_spans(text, ngram_range=ngram_range, max_candidates=limit)
    if text.isascii():  # one character at a time is the same normalisation here
        assert list(found) == candidates(text, ngram_range=ngram_range, max_candidates=limit)
    for phrase, places in found.items():
        assert places, phrase
        for start, end in places:
            assert 0 <= start < end <= len(text)
            # The span, normalised, reads as the phrase (whitespace between its words); a
            # character that normalises to several ("¼" -> "1⁄4") may hold more.
            if text.isascii():
                assert collapsed(text[start:end]) == phrase
            else:
                assert phrase.replace(" ", "") in collapsed(text[start:end]).replace(" ", "")
        if text.isascii():
            assert len(places) == len(starts(phrase, text))


def test_phrase_spans_map_back_through_characters_that_normalisation_widens() -> None:
    text = "The ﬁle system and the ﬁle system"  # "ﬁ" becomes "fi"
    found = phrase_spans(text)
    assert [text[a:b] for a, b in found["file system"]] == ["\ufb01le system"] * 2
    assert [text[a:b] for a, b in found["system"]] == ["system"] * 2


def _forward(text: str, words: dict[str, list[float]]) -> TokenVectors:
    """A forward pass of ``text`` with one token per word, each with the given vector."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    tokens = np.array([words[text[a:b]] for a, b in spans], dtype=np.float32)
    vector = tokens.mean(axis=0)
    return TokenVectors(vector / np.linalg.norm(vector), tokens, tuple(spans))


def test_keywords_from_tokens_pool_each_phrases_own_token_vectors() -> None:
    words = {"heading": [0, 0, 1], "alpha": [1, 0, 0], "beta": [0.6, 0.8, 0], "gamma": [0, 1, 0]}
    embedded = "heading alpha beta gamma alpha"
    forward = _forward(embedded, words)
    extractor = KeywordExtractor(top_n=3, ngram_max=1, diversity=0.0)
    # The text starts after "heading ": its phrases are found there, shifted by the offset.
    keywords = extractor.extract_from_tokens(
        "alpha beta gamma alpha", forward, offset=len("heading ")
    )
    expected = sorted(
        ((float(np.dot(forward.vector, words[w]) / np.linalg.norm(words[w])), w)
         for w in ("alpha", "beta", "gamma")), reverse=True,
    )
    assert [(k.keyword, round(k.score, 5)) for k in keywords] == [
        (w, round(score, 5)) for score, w in expected
    ]
    assert "heading" not in {k.keyword for k in keywords}
    assert extractor.extract_from_tokens("", _forward("alpha", words)) == []


def test_phrases_past_the_token_limit_are_not_candidates() -> None:
    words = {"alpha": [1, 0], "beta": [0, 1]}
    text = "alpha beta"
    forward = _forward("alpha", words)  # the model read only the first word
    keywords = KeywordExtractor(top_n=5, ngram_max=2).extract_from_tokens(text, forward)
    assert [k.keyword for k in keywords] == ["alpha"]
