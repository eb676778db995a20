"""Fusion of a lexical (BM25) and a dense (cosine) ranking into one hybrid ranking.

Every rule is a pure function ``rule(lexical, dense, **params) -> list[Fused]`` over two
ranked candidate lists of ``(key, score)`` pairs, best first (either may be empty; a key may
be missing from one list). The output holds every key of either list exactly once, best
first, with what each stage said about it (rank and score, ``None`` where the stage did not
return it) for a per-hit explain. Equal fused scores are ordered by the best rank the key
reached in either list, then by key (ascending), so the output is a deterministic function of
the inputs. No output score is NaN or infinite.

Conventions shared by the rules:

* ranks are 1-based positions in the list as given (a key repeated in one list keeps its
  first, best, position);
* ``alpha`` is the *dense* share of a two-way weighting (``1 - alpha`` goes to lexical);
* a key missing from one list gets that list's floor: no contribution for rank-based rules,
  the value of the worst returned candidate (or below) for score-based ones. The list was cut
  at some depth, so a missing key scored no better than its last entry;
* non-finite input scores are clamped (``+inf`` to the list's largest finite score, ``-inf``
  and NaN to its smallest; all non-finite: 0), so a bad score cannot poison the ranking.

Rules (see each function): :func:`rrf` (plain reciprocal rank fusion), :func:`weighted_rrf`,
:func:`convex` (convex combination of normalised scores: ``minmax``, ``zscore``, ``rank``),
:func:`dense_boost` (**the default**: the dense cosine plus a small bonus for lexical
evidence) and :func:`adaptive_boost` (the same with a per-query weight). :func:`fuse`
dispatches by name through :data:`METHODS`.

The default and its parameter come from ``bench/fusion.py`` (nDCG@10 on the python-faq and
debian-faq dev sets, parameters cross-validated across the two sets).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_METHOD",
    "DEFAULT_PARAMS",
    "METHODS",
    "Fused",
    "FusionMethod",
    "Norm",
    "Scored",
    "Source",
    "adaptive_boost",
    "convex",
    "dense_boost",
    "fuse",
    "rrf",
    "weighted_rrf",
]

#: One candidate of a ranker: ``(key, score)``, higher score = better.
Scored = tuple[int, float]
Source = Literal["lexical", "dense", "both"]
Norm = Literal["minmax", "zscore", "rank"]

#: RRF's usual smoothing constant (Cormack et al., 2009).
RRF_K = 60.0


class Fused(NamedTuple):
    """One hybrid candidate: its fused score and what each stage said about it.

    A named tuple rather than a frozen dataclass: every search builds one per candidate
    (~200), and a frozen dataclass's ``__init__`` cost 4x more."""

    key: int
    score: float
    lexical_rank: int | None  # 1-based position in the lexical list; None if absent
    lexical_score: float | None  # the lexical score as given (BM25); None if absent
    dense_rank: int | None
    dense_score: float | None  # the dense score as given (cosine); None if absent
    source: Source  # which stage(s) returned the key


class FusionMethod(Protocol):
    """A fusion rule: two ranked lists (best first) in, one fused list (best first) out."""

    def __call__(
        self, lexical: Sequence[Scored], dense: Sequence[Scored], /, **params: Any
    ) -> list[Fused]: ...


# -- shared machinery ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ranked:
    """One input list, deduplicated (first occurrence wins) and with clamped scores."""

    keys: tuple[int, ...]
    scores: tuple[float, ...]  # finite
    raw: Mapping[int, float]  # key -> score as given (for the explain)
    rank: Mapping[int, int]  # key -> 1-based rank


def _prepare(items: Sequence[Scored]) -> _Ranked:
    keys: list[int] = []
    raw: dict[int, float] = {}
    for key, score in items:
        if key not in raw:
            keys.append(key)
            raw[key] = float(score)
    finite = [value for value in raw.values() if math.isfinite(value)]
    high = max(finite, default=0.0)
    low = min(finite, default=0.0)
    scores = tuple(
        value if math.isfinite(value) else (high if value == math.inf else low)
        for value in (raw[key] for key in keys)
    )
    return _Ranked(tuple(keys), scores, raw, {key: i + 1 for i, key in enumerate(keys)})


def _combine(
    lexical: _Ranked,
    dense: _Ranked,
    lexical_value: Mapping[int, float],
    dense_value: Mapping[int, float],
    lexical_floor: float,
    dense_floor: float,
    lexical_weight: float,
    dense_weight: float,
) -> list[Fused]:
    """``lexical_weight * l + dense_weight * d`` per key (a missing key gets the floor),
    best first; ties by the best rank either list gave, then by key."""
    lexical_rank, dense_rank = lexical.rank, dense.rank
    scored: list[tuple[float, int, int, int | None, int | None]] = []
    for key in {*lexical.keys, *dense.keys}:
        l_rank = lexical_rank.get(key)
        d_rank = dense_rank.get(key)
        score = lexical_weight * lexical_value.get(key, lexical_floor) + dense_weight * (
            dense_value.get(key, dense_floor)
        )
        if not math.isfinite(score):  # unreachable with finite inputs; belt and braces
            score = 0.0
        best = d_rank if l_rank is None else l_rank if d_rank is None else min(l_rank, d_rank)
        assert best is not None  # noqa: S101 - every key comes from one of the lists
        scored.append((-score, best, key, l_rank, d_rank))
    # Fused score descending; ties by the best rank either list gave (so rounding in a
    # normalisation never reorders a single list), then by key.
    scored.sort()
    lexical_raw, dense_raw = lexical.raw, dense.raw
    # tuple.__new__ builds the named tuple in C (Fused(...) runs a Python-level __new__).
    out: list[Fused] = []
    for negated, _, key, l_rank, d_rank in scored:
        source = (
            "both" if l_rank is not None and d_rank is not None
            else "lexical" if l_rank is not None else "dense"
        )
        lexical_score = None if l_rank is None else lexical_raw[key]
        dense_score = None if d_rank is None else dense_raw[key]
        score = -negated if negated else 0.0
        out.append(
            _new_fused(Fused, (key, score, l_rank, lexical_score, d_rank, dense_score, source))
        )
    return out


_new_fused = tuple.__new__


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def _rank_values(ranked: _Ranked, k: float) -> dict[int, float]:
    return {key: 1.0 / (k + rank) for key, rank in ranked.rank.items()}


def _normalise(ranked: _Ranked, norm: Norm) -> tuple[dict[int, float], float]:
    """Per-key normalised values of one list and the floor for keys missing from it."""
    keys, scores = ranked.keys, ranked.scores
    if not keys:
        return {}, 0.0
    if norm == "minmax":
        # (s - min) / (max - min) in [0, 1]; a constant list (or a single item) is all 1:
        # being returned at all is the only evidence. Missing keys get 0, the list's minimum.
        low, high = min(scores), max(scores)
        span = high - low
        values = [(s - low) / span if span > 0 else 1.0 for s in scores]
        return dict(zip(keys, values, strict=True)), 0.0
    if norm == "zscore":
        # (s - mean) / std; a constant list is all 0. Missing keys get the list's minimum.
        mean = math.fsum(scores) / len(scores)
        std = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
        values = [(s - mean) / std if std > 0 else 0.0 for s in scores]
        return dict(zip(keys, values, strict=True)), min(values)
    if norm == "rank":
        # 1 - (rank - 1) / n: 1 for the top, 1/n for the last, 0 for a missing key. Scores
        # only matter through the order, like RRF, but the decay is linear, not harmonic.
        n = len(keys)
        return {key: 1.0 - (rank - 1) / n for key, rank in ranked.rank.items()}, 0.0
    raise ValueError(f"unknown norm {norm!r}; valid: minmax, zscore, rank")


# -- the rules ----------------------------------------------------------------------------------


def rrf(lexical: Sequence[Scored], dense: Sequence[Scored], /, *, k: float = RRF_K) -> list[Fused]:
    """Reciprocal rank fusion: ``1/(k + rank_lexical) + 1/(k + rank_dense)``, 0 for a list
    that does not hold the key. Scores are ignored (only the orders count), which makes it
    robust to incomparable scales, but it gives both rankers the same say: when one is much
    weaker (BM25 on natural-language questions), it drags the stronger one down."""
    return _rrf(lexical, dense, k, 1.0, 1.0)


def weighted_rrf(
    lexical: Sequence[Scored], dense: Sequence[Scored], /, *, k: float = RRF_K, alpha: float = 0.5
) -> list[Fused]:
    """RRF with weights: ``(1 - alpha)/(k + rank_lexical) + alpha/(k + rank_dense)``.
    ``alpha=0.5`` orders like :func:`rrf`; ``alpha=1`` is the dense order (then lexical-only
    keys, by key); ``alpha=0`` the lexical one."""
    alpha = _check_alpha(alpha)
    return _rrf(lexical, dense, k, 1.0 - alpha, alpha)


def _rrf(
    lexical: Sequence[Scored], dense: Sequence[Scored], k: float, wl: float, wd: float
) -> list[Fused]:
    k = float(k)
    if not (k >= 0.0 and math.isfinite(k)):
        raise ValueError(f"k must be a finite number >= 0, got {k}")
    lex, den = _prepare(lexical), _prepare(dense)
    return _combine(lex, den, _rank_values(lex, k), _rank_values(den, k), 0.0, 0.0, wl, wd)


def convex(
    lexical: Sequence[Scored],
    dense: Sequence[Scored],
    /,
    *,
    alpha: float = 0.5,
    norm: Norm = "minmax",
) -> list[Fused]:
    """Convex combination of normalised scores: ``(1 - alpha) * n(lexical) + alpha *
    n(dense)``, each list normalised on its own candidates (``norm``: ``minmax`` to [0, 1],
    ``zscore`` to mean 0 / std 1, ``rank`` to ``1 - (rank - 1)/n``). A key missing from a
    list gets that list's floor (0 for ``minmax`` and ``rank``, the smallest z for
    ``zscore``).

    ``minmax`` and ``rank`` are monotone (raising one score never lowers that key's place).
    ``zscore`` is not: the top z of ``n`` values is bounded by ``sqrt(n - 1)``, so raising a
    top score mostly raises the standard deviation, which lifts the smallest z (the floor
    that keys missing from the list get) and lets them overtake it."""
    alpha = _check_alpha(alpha)
    lex, den = _prepare(lexical), _prepare(dense)
    lexical_value, lexical_floor = _normalise(lex, norm)
    dense_value, dense_floor = _normalise(den, norm)
    return _combine(
        lex, den, lexical_value, dense_value, lexical_floor, dense_floor, 1.0 - alpha, alpha
    )


def dense_boost(
    lexical: Sequence[Scored], dense: Sequence[Scored], /, *, beta: float = 0.1
) -> list[Fused]:
    """Dense first, lexical evidence as a bonus: ``cosine + beta * bm25 / max_bm25``.

    The dense score is used as it is (cosine, not renormalised per query, so a clear dense
    winner stays a clear winner); the lexical score is divided by the query's best lexical
    score, so the bonus is in ``[0, beta]`` whatever the BM25 scale. A key the dense stage
    did not return gets the lowest cosine it did return (it ranked no better than that); a
    key the lexical stage did not return gets no bonus. ``beta=0`` is the dense order;
    a small ``beta`` re-orders near-ties by lexical evidence and lets a strong exact-term
    match climb a few places, never past a dense match better by more than ``beta``.

    Why the default (``bench/fusion.py``, 100 candidates per ranker, nDCG@10): dense alone
    0.725 / 0.467 on python-faq / debian-faq, plain RRF 0.604 / 0.453, this rule with
    ``beta=0.1`` 0.745 / 0.514 (+0.033 on average). Tuned on one set and tested on the
    other, ``beta`` comes out at 0.1 and 0.09 (0.741 / 0.514, +0.032): the best
    cross-validated rule, with one parameter that transfers. The gain depends on the
    candidate depth (the floor of dense-missing keys rises with fewer): +0.012 at 20, +0.026
    at 50, +0.041 at 200, +0.039 at 400 per ranker; never below dense alone on either set.
    """
    beta = float(beta)
    if not (beta >= 0.0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    lex, den = _prepare(lexical), _prepare(dense)
    top = max(lex.scores, default=0.0)
    lexical_value = {
        key: (max(score, 0.0) / top if top > 0 else 1.0)
        for key, score in zip(lex.keys, lex.scores, strict=True)
    }
    dense_value = dict(zip(den.keys, den.scores, strict=True))
    dense_floor = min(den.scores, default=0.0)
    return _combine(lex, den, lexical_value, dense_value, 0.0, dense_floor, beta, 1.0)


def adaptive_boost(
    lexical: Sequence[Scored],
    dense: Sequence[Scored],
    /,
    *,
    beta: float = 0.2,
    depth: int = 10,
) -> list[Fused]:
    """:func:`dense_boost` with a query-adaptive weight: ``beta`` is scaled by the lexical
    stage's confidence, the relative gap between its best score and its ``depth``-th one,
    ``(s_1 - s_depth) / s_1`` in ``[0, 1]`` (the last score when fewer are returned). A
    query whose BM25 scores are flat (no term singles a passage out) gets almost no lexical
    bonus; one with a standout lexical match gets up to ``beta``.

    Evaluated, not the default: on the dev sets it is no better than a fixed ``beta`` (see
    ``bench/fusion.py``), and it is not monotone: raising one lexical score changes the gap,
    hence every candidate's bonus, so a candidate near ``s_depth`` can *lose* places when
    its own lexical score rises.
    """
    depth = int(depth)
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    lex = _prepare(lexical)
    gap = 0.0
    if lex.scores:
        top = max(lex.scores)
        cut = lex.scores[min(depth, len(lex.scores)) - 1]
        gap = min(max((top - cut) / top, 0.0), 1.0) if top > 0 else 0.0
    return dense_boost(lexical, dense, beta=float(beta) * gap)


# -- dispatch -----------------------------------------------------------------------------------

#: Every rule by name.
METHODS: Mapping[str, Callable[..., list[Fused]]] = {
    "rrf": rrf,
    "weighted_rrf": weighted_rrf,
    "convex": convex,
    "dense_boost": dense_boost,
    "adaptive_boost": adaptive_boost,
}
#: The hybrid default (chosen by ``bench/fusion.py``) and its parameters.
DEFAULT_METHOD = "dense_boost"
DEFAULT_PARAMS: Mapping[str, Any] = {"beta": 0.1}
#: Candidates per ranker the default was tuned with (fewer weaken it, see :func:`dense_boost`).
DEFAULT_CANDIDATES = 100


def fuse(
    method: str | None,
    lexical: Sequence[Scored],
    dense: Sequence[Scored],
    /,
    **params: Any,
) -> list[Fused]:
    """Fuse with the rule named ``method`` (``None``: :data:`DEFAULT_METHOD` with
    :data:`DEFAULT_PARAMS`, overridden by ``params``). Unknown names raise ``ValueError``."""
    if method is None:
        method, params = DEFAULT_METHOD, {**DEFAULT_PARAMS, **params}
    rule = METHODS.get(method)
    if rule is None:
        raise ValueError(f"unknown fusion method {method!r}; valid: {', '.join(sorted(METHODS))}")
    return rule(lexical, dense, **params)
