"""Keyword extraction with the KeyBERT method, over the embedder the caller already has loaded.

The method (Grootendorst's KeyBERT): take candidate phrases from the text, embed the document
and the candidates with the same sentence embedder, rank candidates by cosine similarity to the
document, and pick ``top_n`` of them with Maximal Marginal Relevance (MMR) so the result is
relevant but not five spellings of one idea. Everything here is pure except
:meth:`KeywordExtractor.extract`, which calls the ``embed`` function it is given once.

Candidate semantics (:func:`candidates`), chosen so that every keyword is a phrase that occurs in
the text:

1. Normalise: Unicode NFKC, then lowercase; typographic apostrophes become ``'``
   (:func:`normalize`).
2. Tokens are runs of word characters (Unicode letters, digits, underscore), joined by a single
   inner ``-``, ``'`` or ``.`` followed by more word characters: ``python3.11``,
   ``state-of-the-art``, ``don't``, ``e.g`` (a trailing dot ends a sentence, not a token).
3. A token can appear in a phrase only if it has at least one letter, at least two characters and
   is not a stop word. Other tokens (stop words, numbers like ``2024`` or ``3.11``, single
   characters) break phrases.
4. Phrases are n-grams of adjacent tokens, n in ``ngram_range``; two tokens are adjacent only
   when nothing but whitespace separates them, so phrases never span punctuation or a stop word.

This differs from KeyBERT's default ``CountVectorizer(stop_words="english")``, which drops stop
words first and then forms n-grams across the gaps (turning "state of the art" into the phrase
"state art", which the text never says) and across punctuation. Phrases that occur verbatim read
better as keywords and can be highlighted in the text.

Bounds: at most ``max_candidates`` (default :data:`DEFAULT_MAX_CANDIDATES`) distinct phrases, the
most frequent ones (ties: first occurrence first), so one extraction costs at most that many short
embeddings whatever the text size. KeyBERT embeds every candidate. The document itself is embedded
whole, so the embedder's token limit decides how much of it shapes the document vector (as in
KeyBERT).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ragd.models.base import TokenVectors, Vectors
from ragd.settings import ModelsSettings

__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "ENGLISH_STOP_WORDS",
    "Keyword",
    "KeywordExtractor",
    "candidates",
    "mmr",
    "normalize",
    "phrase_spans",
    "tokenize",
]

#: Enough for the vocabulary of a long article; keeps one extraction to a few hundred
#: short embeddings.
DEFAULT_MAX_CANDIDATES = 256

# Written for ragd: English function words (articles, pronouns, prepositions, conjunctions,
# auxiliaries and modals, frequent adverbs, number words, contractions, a few abbreviations).
# Content words, even very common ones, are left out: they can be keywords.
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those each every either neither some any many much more most
    few fewer less least several all both half no none other others another such own same
    enough various certain

    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves one ones
    oneself who whom whose which what whatever whoever whichever whomever someone somebody
    something anyone anybody anything everyone everybody everything nobody nothing noone
    somewhat

    about above across after against along alongside amid among amongst around as at before
    behind below beneath beside besides between beyond by despite down during except for from
    in inside into like near of off on onto out outside over past per since through throughout
    till to toward towards under underneath unlike until up upon via with within without

    and but or nor so yet because although though whereas while whilst whether if unless than
    then once lest

    am is are was were be been being have has had having do does did doing done can could may
    might must shall should will would ought get gets got gotten getting become becomes became
    becoming make makes made making say says said let lets go goes went gone going seem seems
    seemed seeming

    also again already always almost else ever here there where when why how hence however
    indeed just maybe meanwhile moreover nevertheless never not now often only otherwise
    perhaps quite rather really seldom sometimes soon still therefore thus too very well
    whence wherever whenever whereby wherein whereupon thereby therein thereafter thereupon
    afterwards anyway anyhow anywhere everywhere nowhere somewhere elsewhere together away back
    further furthermore instead yes ok okay even ago

    zero two three four five six seven eight nine ten eleven twelve twenty first last next
    hundred thousand

    i'm i've i'd i'll you're you've you'd you'll he's he'd he'll she's she'd she'll it's it'd
    it'll we're we've we'd we'll they're they've they'd they'll that's there's here's what's
    who's where's how's let's isn't aren't wasn't weren't don't doesn't didn't haven't hasn't
    hadn't can't cannot couldn't won't wouldn't shouldn't mustn't mightn't needn't shan't
    ain't

    e.g i.e etc vs cf
    """.split()
)

_TOKEN = re.compile(r"\w+(?:['.\-]\w+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


@dataclass(frozen=True, slots=True)
class Keyword:
    """A keyphrase and its cosine similarity to the document."""

    keyword: str
    score: float


def normalize(text: str) -> str:
    """NFKC, lowercase, typographic apostrophes as ``'``: the text candidates are taken from."""
    return unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)


def tokenize(normalized: str) -> list[tuple[str, bool]]:
    """Tokens of already-normalised text, each with whether it directly follows the previous
    token (only whitespace between them)."""
    tokens: list[tuple[str, bool]] = []
    end = None
    for match in _TOKEN.finditer(normalized):
        gap = normalized[end : match.start()] if end is not None else ""
        tokens.append((match.group(), bool(gap) and gap.isspace()))
        end = match.end()
    return tokens


def _usable(token: str, stop_words: Collection[str]) -> bool:
    return len(token) >= 2 and token not in stop_words and any(ch.isalpha() for ch in token)


def candidates(
    text: str,
    *,
    ngram_range: tuple[int, int] = (1, 2),
    stop_words: Collection[str] = ENGLISH_STOP_WORDS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> list[str]:
    """Distinct candidate keyphrases of ``text``, in order of first occurrence (where the phrase
    starts; a shorter phrase before the longer ones that start at the same token).

    See the module docstring for the exact semantics. When there are more than
    ``max_candidates`` distinct phrases, the most frequent are kept (ties: earliest first).
    """
    return list(_phrases(normalize(text), ngram_range, stop_words, max_candidates))


def phrase_spans(
    text: str,
    *,
    ngram_range: tuple[int, int] = (1, 2),
    stop_words: Collection[str] = ENGLISH_STOP_WORDS,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> dict[str, list[tuple[int, int]]]:
    """The candidates of ``text`` (as :func:`candidates`, in the same order) with the
    character span in ``text`` of every occurrence.

    To map phrases back to the text, it is normalised one character at a time; that differs
    from :func:`normalize` only where NFKC would compose a character with the next one (a
    letter and a separate combining accent), which stay two characters here.
    """
    if text.isascii():  # lowercasing ASCII keeps every position
        normalized, origin = text.lower(), None
    else:
        pieces = [normalize(ch) for ch in text]
        normalized = "".join(pieces)
        origin = [index for index, piece in enumerate(pieces) for _ in piece]
        origin.append(len(text))
    found = _phrases(normalized, ngram_range, stop_words, max_candidates)
    if origin is None:
        return found
    return {
        phrase: [(origin[start], origin[end - 1] + 1) for start, end in places]
        for phrase, places in found.items()
    }


def _phrases(
    normalized: str,
    ngram_range: tuple[int, int],
    stop_words: Collection[str],
    max_candidates: int,
) -> dict[str, list[tuple[int, int]]]:
    """Candidate phrases of normalised text with the spans of their occurrences, in order of
    first occurrence, cut to the ``max_candidates`` most frequent."""
    low, high = ngram_range
    if not 1 <= low <= high:
        raise ValueError(f"invalid ngram_range {ngram_range!r}")
    if max_candidates < 1:
        raise ValueError("max_candidates must be >= 1")
    places: dict[str, list[tuple[int, int]]] = {}
    first: dict[str, tuple[int, int]] = {}  # phrase -> (token index it starts at, length)
    run: list[tuple[str, int, int]] = []  # the current run of adjacent usable tokens
    end = None
    for position, match in enumerate(_TOKEN.finditer(normalized)):
        token = match.group()
        gap = normalized[end : match.start()] if end is not None else ""
        end = match.end()
        if not (gap and gap.isspace()):
            run = []
        if not _usable(token, stop_words):
            run = []
            continue
        run.append((token, match.start(), match.end()))
        # Every n-gram ending at this token; longer runs than `high` are never needed.
        del run[:-high]
        for size in range(low, min(high, len(run)) + 1):
            words = run[-size:]
            phrase = " ".join(word for word, _, _ in words)
            places.setdefault(phrase, []).append((words[0][1], words[-1][2]))
            first.setdefault(phrase, (position - size + 1, size))

    phrases = sorted(places, key=first.__getitem__)
    if len(phrases) > max_candidates:
        kept = sorted(phrases, key=lambda phrase: (-len(places[phrase]), first[phrase]))
        phrases = sorted(kept[:max_candidates], key=first.__getitem__)
    return {phrase: places[phrase] for phrase in phrases}


def _unit_rows(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    # A zero vector has no direction: its cosine with anything is 0, not NaN.
    unit: npt.NDArray[np.float64] = np.divide(
        matrix, norms, out=np.zeros_like(matrix), where=norms > 0
    )
    return unit


def mmr(
    doc_vec: npt.ArrayLike,
    cand_vecs: npt.ArrayLike,
    candidates: Sequence[str],
    top_n: int,
    diversity: float,
) -> list[tuple[str, float]]:
    """Pick ``min(top_n, len(candidates))`` candidates by Maximal Marginal Relevance.

    The first pick is the candidate most similar to the document; each next one maximises
    ``(1 - diversity) * cos(candidate, document) - diversity * max cos(candidate, picked)``.
    ``diversity = 0`` is plain ranking by similarity, ``1`` ignores the document after the first
    pick and maximises spread. Returns ``(phrase, cosine to the document)`` sorted by that
    cosine, highest first (ties: earlier candidate first), as KeyBERT does.
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be within [0, 1]")
    if top_n < 0:
        raise ValueError("top_n must be >= 0")
    document = np.asarray(doc_vec, dtype=np.float64).reshape(-1)
    vectors = np.asarray(cand_vecs, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(candidates):
        raise ValueError(
            f"cand_vecs must have one row per candidate: shape {vectors.shape} "
            f"for {len(candidates)} candidates"
        )
    count = min(top_n, len(candidates))
    if count == 0:
        return []
    if vectors.shape[1] != document.shape[0]:
        raise ValueError(
            f"dimension mismatch: document {document.shape[0]}, candidates {vectors.shape[1]}"
        )
    unit = _unit_rows(vectors)
    relevance = unit @ _unit_rows(document)
    picked = [int(np.argmax(relevance))]
    if count > 1:
        available = np.ones(len(candidates), dtype=bool)
        available[picked[0]] = False
        redundancy = unit @ unit[picked[0]]  # max similarity to anything picked so far
        for _ in range(count - 1):
            gain = (1.0 - diversity) * relevance - diversity * redundancy
            gain[~available] = -np.inf
            choice = int(np.argmax(gain))
            picked.append(choice)
            available[choice] = False
            np.maximum(redundancy, unit @ unit[choice], out=redundancy)
    picked.sort(key=lambda index: (-relevance[index], index))
    return [(candidates[index], float(relevance[index])) for index in picked]


class KeywordExtractor:
    """KeyBERT keyword extraction over an embedder the caller owns (no model of its own)."""

    def __init__(
        self,
        top_n: int = 5,
        ngram_max: int = 2,
        diversity: float = 0.5,
        *,
        ngram_min: int = 1,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
        max_chars: int | None = None,
        stop_words: Collection[str] = ENGLISH_STOP_WORDS,
    ) -> None:
        if top_n < 0:
            raise ValueError("top_n must be >= 0")
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError("need 1 <= ngram_min <= ngram_max")
        if not 0.0 <= diversity <= 1.0:
            raise ValueError("diversity must be within [0, 1]")
        if max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")
        self.top_n = top_n
        self.ngram_range = (ngram_min, ngram_max)
        self.diversity = diversity
        self.max_candidates = max_candidates
        self.max_chars = max_chars
        self.stop_words = frozenset(stop_words)

    @classmethod
    def from_settings(cls, settings: ModelsSettings, **overrides: Any) -> KeywordExtractor:
        values: dict[str, Any] = {
            "top_n": settings.keywords_top_n,
            "ngram_max": settings.keywords_ngram_max,
            "diversity": settings.keywords_diversity,
            "max_chars": settings.keywords_max_chars,
        }
        values.update(overrides)
        return cls(**values)

    def candidates(self, text: str) -> list[str]:
        """The candidate phrases :meth:`extract` would embed for ``text``."""
        return candidates(
            self._clip(text),
            ngram_range=self.ngram_range,
            stop_words=self.stop_words,
            max_candidates=self.max_candidates,
        )

    def _clip(self, text: str) -> str:
        # Long documents: keywords come from the head, which is also all the document
        # embedding sees.
        return text if self.max_chars is None else text[: self.max_chars]

    def extract(
        self,
        text: str,
        embed: Callable[[list[str]], Vectors],
        *,
        top_n: int | None = None,
    ) -> list[Keyword]:
        """Up to ``top_n`` keywords of ``text``, best first.

        ``embed`` is called once, with the document first and then every candidate; it must
        return one row per text. Blocking (it runs the embedder): call it from a worker thread.
        Text with no candidate phrase gives ``[]`` without calling ``embed``.
        """
        wanted = self.top_n if top_n is None else top_n
        if wanted < 0:
            raise ValueError("top_n must be >= 0")
        body = self._clip(text)
        phrases = self.candidates(body)
        if not phrases or wanted == 0:
            return []
        vectors = np.asarray(embed([body, *phrases]))
        if vectors.ndim != 2 or vectors.shape[0] != len(phrases) + 1:
            raise ValueError(
                f"embed returned shape {vectors.shape} for {len(phrases) + 1} texts; "
                "expected one row per text"
            )
        picked = mmr(vectors[0], vectors[1:], phrases, wanted, self.diversity)
        return [Keyword(phrase, score) for phrase, score in picked]

    def extract_from_tokens(
        self,
        text: str,
        forward: TokenVectors,
        *,
        offset: int = 0,
        top_n: int | None = None,
    ) -> list[Keyword]:
        """Keywords of ``text`` ranked like :meth:`extract`, without calling the model again.

        ``forward`` is the forward pass of a string that holds ``text`` at ``offset`` (a
        chunk's embed text: its heading path, then the text). The document vector is its
        pooled vector; a candidate's vector is the mean of the contextual vectors of the tokens
        that cover its occurrences: the phrase as the model read it in this text, where
        KeyBERT embeds each phrase alone. Occurrences past the model's token limit are not in
        the forward pass, and phrases found only there are not candidates.
        """
        wanted = self.top_n if top_n is None else top_n
        if wanted < 0:
            raise ValueError("top_n must be >= 0")
        if wanted == 0 or not forward.spans:
            return []
        occurrences = phrase_spans(
            self._clip(text), ngram_range=self.ngram_range, stop_words=self.stop_words,
            max_candidates=self.max_candidates,
        )
        starts = np.fromiter((start for start, _ in forward.spans), dtype=np.int64)
        ends = np.fromiter((end for _, end in forward.spans), dtype=np.int64)
        phrases: list[str] = []
        rows: list[npt.NDArray[np.float32]] = []
        for phrase, places in occurrences.items():
            covered: list[int] = []
            for start, end in places:
                # Tokens that overlap the occurrence: ending after its start, starting before
                # its end (spans are in order).
                first = int(np.searchsorted(ends, start + offset, side="right"))
                last = int(np.searchsorted(starts, end + offset, side="left"))
                # Only occurrences the model read to their end (not cut by its limit).
                if last > first and ends[last - 1] >= end + offset:
                    covered.extend(range(first, last))
            if covered:
                phrases.append(phrase)
                rows.append(forward.tokens[covered].mean(axis=0))
        if not phrases:
            return []
        picked = mmr(forward.vector, np.stack(rows), phrases, wanted, self.diversity)
        return [Keyword(phrase, score) for phrase, score in picked]
