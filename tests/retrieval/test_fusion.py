"""Properties and hand examples of the fusion rules in ``ragd.retrieval.fusion``."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.retrieval.fusion import (
    DEFAULT_METHOD,
    DEFAULT_PARAMS,
    METHODS,
    Fused,
    Scored,
    adaptive_boost,
    convex,
    dense_boost,
    fuse,
    rrf,
    weighted_rrf,
)

Rule = Callable[[list[Scored], list[Scored]], list[Fused]]

#: Every rule with representative parameters (the default included).
RULES: dict[str, Rule] = {
    "default": lambda lex, den: fuse(None, lex, den),
    "rrf": lambda lex, den: rrf(lex, den),
    "rrf_k0": lambda lex, den: rrf(lex, den, k=0),
    "weighted_rrf": lambda lex, den: weighted_rrf(lex, den, k=60, alpha=0.8),
    "convex_minmax": lambda lex, den: convex(lex, den, alpha=0.7, norm="minmax"),
    "convex_zscore": lambda lex, den: convex(lex, den, alpha=0.7, norm="zscore"),
    "convex_rank": lambda lex, den: convex(lex, den, alpha=0.7, norm="rank"),
    "dense_boost": lambda lex, den: dense_boost(lex, den, beta=0.1),
    "dense_boost_big": lambda lex, den: dense_boost(lex, den, beta=5.0),
    "adaptive_boost": lambda lex, den: adaptive_boost(lex, den, beta=0.2, depth=3),
}
#: Rules where raising one score never lowers that key's position (z-score and
#: adaptive_boost are not: see test_zscore_is_not_monotone, test_adaptive_boost_is_not_monotone).
NOT_MONOTONE = {"convex_zscore", "adaptive_boost"}
MONOTONE = {name: rule for name, rule in RULES.items() if name not in NOT_MONOTONE}
#: Rules whose weights are symmetric (swapping the lists swaps the roles only).
SYMMETRIC: dict[str, Rule] = {
    "rrf": lambda lex, den: rrf(lex, den),
    "weighted_rrf_half": lambda lex, den: weighted_rrf(lex, den, alpha=0.5),
    "convex_minmax_half": lambda lex, den: convex(lex, den, alpha=0.5, norm="minmax"),
    "convex_zscore_half": lambda lex, den: convex(lex, den, alpha=0.5, norm="zscore"),
    "convex_rank_half": lambda lex, den: convex(lex, den, alpha=0.5, norm="rank"),
}
rule_names = pytest.mark.parametrize("name", sorted(RULES))
monotone_names = pytest.mark.parametrize("name", sorted(MONOTONE))

KEYS = st.integers(min_value=0, max_value=30)
# Scores on a 1e-3 grid, like real BM25 and cosine values: arbitrary floats (1e-300 next to
# 1.0) only exercise float absorption, where "a + tiny == a" makes every rule tie.
BM25 = st.integers(min_value=0, max_value=50_000).map(lambda value: value / 1000)
COSINE = st.integers(min_value=-1000, max_value=1000).map(lambda value: value / 1000)


def ranked(keys: list[int], scores: list[float]) -> list[Scored]:
    """A ranker's output: distinct keys, best first (equal scores by key)."""
    pairs = list(zip(keys, scores, strict=False))
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))


@st.composite
def lists(draw: st.DrawFn, scores: st.SearchStrategy[float], max_size: int = 12) -> list[Scored]:
    keys = draw(st.lists(KEYS, max_size=max_size, unique=True))
    values = draw(st.lists(scores, min_size=len(keys), max_size=len(keys)))
    return ranked(keys, values)


# Scores drawn from a small set make ties (and constant lists) common.
TIED = st.sampled_from([0.0, 0.5, 1.0, 2.0])
LEXICAL = st.one_of(lists(BM25), lists(TIED))
DENSE = st.one_of(lists(COSINE), lists(TIED.map(lambda value: value / 2.0)))


def position(fused: list[Fused], key: int) -> int:
    return next(i for i, hit in enumerate(fused) if hit.key == key)


def raise_score(items: list[Scored], key: int, new_score: float) -> list[Scored]:
    return ranked([k for k, _ in items], [new_score if k == key else s for k, s in items])


# -- properties of every rule -------------------------------------------------------------------


@rule_names
@settings(max_examples=150, deadline=None)
@given(lexical=LEXICAL, dense=DENSE)
def test_union_of_keys_no_duplicates_finite_sorted(
    name: str, lexical: list[Scored], dense: list[Scored]
) -> None:
    fused = RULES[name](lexical, dense)
    keys = [hit.key for hit in fused]
    assert len(keys) == len(set(keys))
    assert set(keys) == {k for k, _ in lexical} | {k for k, _ in dense}
    assert all(math.isfinite(hit.score) for hit in fused)
    # Best first; equal scores by the best rank in either list, then by key.
    def order(hit: Fused) -> tuple[float, int, int]:
        best = min(r for r in (hit.lexical_rank, hit.dense_rank) if r is not None)
        return (-hit.score, best, hit.key)

    assert all(order(a) < order(b) for a, b in zip(fused, fused[1:], strict=False))


@rule_names
@settings(max_examples=100, deadline=None)
@given(lexical=LEXICAL, dense=DENSE)
def test_explain_fields(name: str, lexical: list[Scored], dense: list[Scored]) -> None:
    lex = {key: (rank, score) for rank, (key, score) in enumerate(lexical, start=1)}
    den = {key: (rank, score) for rank, (key, score) in enumerate(dense, start=1)}
    for hit in RULES[name](lexical, dense):
        assert (hit.lexical_rank, hit.lexical_score) == lex.get(hit.key, (None, None))
        assert (hit.dense_rank, hit.dense_score) == den.get(hit.key, (None, None))
        expected = (
            "both" if hit.key in lex and hit.key in den
            else "lexical" if hit.key in lex else "dense"
        )
        assert hit.source == expected


@rule_names
def test_empty_inputs(name: str) -> None:
    assert RULES[name]([], []) == []


@rule_names
@settings(max_examples=100, deadline=None)
@given(lexical=LEXICAL, dense=DENSE)
def test_one_empty_list_keeps_the_other_order(
    name: str, lexical: list[Scored], dense: list[Scored]
) -> None:
    assert [hit.key for hit in RULES[name](lexical, [])] == [k for k, _ in lexical]
    assert [hit.key for hit in RULES[name]([], dense)] == [k for k, _ in dense]


@monotone_names
@settings(max_examples=400, deadline=None)
@given(lexical=LEXICAL, dense=DENSE, data=st.data())
def test_raising_a_lexical_score_never_lowers_the_position(
    name: str, lexical: list[Scored], dense: list[Scored], data: st.DataObject
) -> None:
    if not lexical:
        return
    key, score = data.draw(st.sampled_from(lexical))
    new_score = data.draw(st.integers(min_value=round(score * 1000), max_value=60_000)) / 1000
    before = position(RULES[name](lexical, dense), key)
    after = position(RULES[name](raise_score(lexical, key, new_score), dense), key)
    assert after <= before


@monotone_names
@settings(max_examples=400, deadline=None)
@given(lexical=LEXICAL, dense=DENSE, data=st.data())
def test_raising_a_dense_score_never_lowers_the_position(
    name: str, lexical: list[Scored], dense: list[Scored], data: st.DataObject
) -> None:
    if not dense:
        return
    key, score = data.draw(st.sampled_from(dense))
    new_score = data.draw(st.integers(min_value=round(score * 1000), max_value=1000)) / 1000
    before = position(RULES[name](lexical, dense), key)
    after = position(RULES[name](lexical, raise_score(dense, key, new_score)), key)
    assert after <= before


@rule_names
@settings(max_examples=100, deadline=None)
@given(lexical=LEXICAL, dense=DENSE, data=st.data())
def test_adding_a_key_to_the_other_list_never_lowers_its_position(
    name: str, lexical: list[Scored], dense: list[Scored], data: st.DataObject
) -> None:
    """Being returned by a second ranker (at the bottom of its list) is evidence, not a
    penalty."""
    only_lexical = [k for k, _ in lexical if k not in {d for d, _ in dense}]
    if not only_lexical:
        return
    key = data.draw(st.sampled_from(only_lexical))
    floor = dense[-1][1] if dense else 0.0
    before = position(RULES[name](lexical, dense), key)
    after = position(RULES[name](lexical, [*dense, (key, floor)]), key)
    assert after <= before


@rule_names
@settings(max_examples=100, deadline=None)
@given(lexical=LEXICAL, dense=DENSE)
def test_deterministic(name: str, lexical: list[Scored], dense: list[Scored]) -> None:
    assert RULES[name](lexical, dense) == RULES[name](list(lexical), list(dense))


@pytest.mark.parametrize("name", sorted(SYMMETRIC))
@settings(max_examples=150, deadline=None)
@given(first=lists(BM25), second=lists(BM25))
def test_symmetric_rules_ignore_which_list_is_which(
    name: str, first: list[Scored], second: list[Scored]
) -> None:
    one = SYMMETRIC[name](first, second)
    two = SYMMETRIC[name](second, first)
    assert [(h.key, h.score) for h in one] == [(h.key, h.score) for h in two]
    assert [(h.lexical_rank, h.dense_rank) for h in one] == [
        (h.dense_rank, h.lexical_rank) for h in two
    ]


@rule_names
@settings(max_examples=100, deadline=None)
@given(items=lists(COSINE))
def test_identical_lists_keep_their_order(name: str, items: list[Scored]) -> None:
    fused = RULES[name](items, items)
    assert [hit.key for hit in fused] == [k for k, _ in items]
    assert all(hit.source == "both" for hit in fused)


@rule_names
@settings(max_examples=100, deadline=None)
@given(lexical=LEXICAL, dense=DENSE, shift=st.integers(min_value=1, max_value=1000))
def test_relabelled_keys_fuse_the_same_way(
    name: str, lexical: list[Scored], dense: list[Scored], shift: int
) -> None:
    """Only the scores decide, except for exact ties (ordered by key): shifting every key by
    the same amount preserves the key order, hence the whole result."""
    fused = RULES[name](lexical, dense)
    moved = RULES[name]([(k + shift, s) for k, s in lexical], [(k + shift, s) for k, s in dense])
    assert [hit.key + shift for hit in fused] == [hit.key for hit in moved]
    assert [hit.score for hit in fused] == [hit.score for hit in moved]


# -- robustness ---------------------------------------------------------------------------------


@rule_names
def test_constant_and_single_lists_are_finite(name: str) -> None:
    for lexical, dense in (
        ([(1, 3.0)], [(2, 0.5)]),
        ([(1, 3.0), (2, 3.0), (3, 3.0)], [(3, -0.2), (2, -0.2)]),
        ([(1, 0.0), (2, 0.0)], [(1, 0.0)]),
        ([(5, 1.0)], [(5, -1.0)]),
    ):
        fused = RULES[name](lexical, dense)
        assert all(math.isfinite(hit.score) for hit in fused)


@rule_names
def test_non_finite_input_scores_are_clamped(name: str) -> None:
    lexical = [(1, math.inf), (2, 4.0), (3, math.nan), (4, -math.inf)]
    dense = [(2, 0.9), (3, math.nan), (5, 0.1)]
    fused = RULES[name](lexical, dense)
    assert {hit.key for hit in fused} == {1, 2, 3, 4, 5}
    assert all(math.isfinite(hit.score) for hit in fused)
    # The explain shows the scores as given.
    assert next(h for h in fused if h.key == 1).lexical_score == math.inf


@rule_names
def test_repeated_key_keeps_its_first_position(name: str) -> None:
    fused = RULES[name]([(1, 5.0), (2, 4.0), (1, 1.0)], [])
    assert [(h.key, h.lexical_rank, h.lexical_score) for h in fused] == [
        (1, 1, 5.0),
        (2, 2, 4.0),
    ]


# -- hand examples ------------------------------------------------------------------------------


def test_rrf_by_hand() -> None:
    fused = rrf([(10, 9.0), (20, 5.0)], [(20, 0.8), (30, 0.7)], k=60)
    assert [h.key for h in fused] == [20, 10, 30]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert fused[1].score == pytest.approx(1 / 61)
    assert fused[2].score == pytest.approx(1 / 62)
    assert [h.source for h in fused] == ["both", "lexical", "dense"]
    assert (fused[0].lexical_rank, fused[0].dense_rank) == (2, 1)
    assert (fused[1].dense_rank, fused[1].dense_score) == (None, None)


def test_rrf_ties_are_broken_by_best_rank_then_key() -> None:
    # 10 and 30 both sit at rank 1 of one list: equal scores and ranks, smaller key first.
    fused = rrf([(30, 2.0)], [(10, 0.3)])
    assert [h.key for h in fused] == [10, 30]
    assert fused[0].score == fused[1].score
    # Equal scores, different best ranks: the better rank first, whatever the keys.
    fused = convex([(5, 1.0), (4, 1.0)], [], norm="minmax")
    assert [(h.key, h.score) for h in fused] == [(5, 0.5), (4, 0.5)]


def test_weighted_rrf_extremes() -> None:
    lexical, dense = [(1, 3.0), (2, 2.0)], [(2, 0.9), (3, 0.8)]
    assert [h.key for h in weighted_rrf(lexical, dense, alpha=1.0)] == [2, 3, 1]
    assert [h.key for h in weighted_rrf(lexical, dense, alpha=0.0)] == [1, 2, 3]
    assert [h.key for h in weighted_rrf(lexical, dense, alpha=0.5)] == [
        h.key for h in rrf(lexical, dense)
    ]


def test_convex_minmax_by_hand() -> None:
    lexical = [(1, 10.0), (2, 5.0), (3, 0.0)]  # -> 1, 0.5, 0
    dense = [(3, 0.9), (2, 0.5), (4, 0.1)]  # -> 1, 0.5, 0
    fused = convex(lexical, dense, alpha=0.75, norm="minmax")
    scores = {h.key: h.score for h in fused}
    assert scores == pytest.approx({1: 0.25, 2: 0.5, 3: 0.75, 4: 0.0})
    assert [h.key for h in fused] == [3, 2, 1, 4]


def test_convex_rank_and_zscore_by_hand() -> None:
    fused = convex([(1, 7.0), (2, 1.0)], [(2, 0.4)], alpha=0.5, norm="rank")
    assert {h.key: h.score for h in fused} == pytest.approx({1: 0.5, 2: 0.25 + 0.5})
    fused = convex([(1, 3.0), (2, 1.0)], [], alpha=0.5, norm="zscore")
    assert {h.key: h.score for h in fused} == pytest.approx({1: 0.5, 2: -0.5})


def test_zscore_is_not_monotone() -> None:
    """The documented caveat: raising key 7's BM25 score from 4.5 to 13.5 (it stays first)
    mostly widens the standard deviation, lifting the floor of key 10 (dense only) past it."""
    dense = [(10, 0.6), (1, 0.4), (6, -0.4), (5, -0.8), (7, -0.8), (2, -1.0)]
    before = convex([(7, 4.5), (0, 1.5), (1, 0.5)], dense, alpha=0.5, norm="zscore")
    after = convex([(7, 13.5), (0, 1.5), (1, 0.5)], dense, alpha=0.5, norm="zscore")
    assert position(before, 7) == 0
    assert position(after, 7) == 1


def test_dense_boost_by_hand() -> None:
    lexical = [(7, 20.0), (8, 10.0)]
    dense = [(8, 0.62), (9, 0.60), (10, 0.40)]
    fused = dense_boost(lexical, dense, beta=0.1)
    scores = {h.key: h.score for h in fused}
    # 8: 0.62 + 0.1 * 10/20; 9: 0.60; 10: 0.40; 7 (not returned by dense): 0.40 + 0.1.
    assert scores == pytest.approx({8: 0.67, 9: 0.60, 10: 0.40, 7: 0.50})
    assert [h.key for h in fused] == [8, 9, 7, 10]


def test_dense_boost_zero_beta_is_the_dense_order() -> None:
    dense = [(3, 0.9), (1, 0.2), (2, -0.3)]
    fused = dense_boost([(2, 50.0), (4, 1.0)], dense, beta=0.0)
    assert [h.key for h in fused][:3] == [3, 1, 2]


def test_adaptive_boost_by_hand() -> None:
    # gap = (10 - 5) / 10 = 0.5 -> bonus weight 0.5 * beta.
    fused = adaptive_boost([(1, 10.0), (2, 5.0)], [(3, 0.7), (2, 0.5), (1, 0.1)], beta=1.0,
                           depth=2)
    assert {h.key: h.score for h in fused} == pytest.approx({1: 0.6, 2: 0.75, 3: 0.7})
    # A flat lexical list (gap 0) adds nothing: the dense order.
    fused = adaptive_boost([(1, 4.0), (2, 4.0)], [(2, 0.3), (1, 0.2)], beta=1.0)
    assert [h.key for h in fused] == [2, 1]


def test_adaptive_boost_is_not_monotone() -> None:
    """The documented caveat: raising key 2's BM25 score from 5 to 9 shrinks the gap from
    0.5 to 0.1, so its bonus falls from 0.25 to 0.09 and key 3 overtakes it."""
    dense = [(3, 0.7), (2, 0.5), (1, 0.1)]
    before = adaptive_boost([(1, 10.0), (2, 5.0)], dense, beta=1.0, depth=2)
    after = adaptive_boost([(1, 10.0), (2, 9.0)], dense, beta=1.0, depth=2)
    assert position(before, 2) == 0
    assert position(after, 2) == 1


def test_default_is_registered() -> None:
    assert DEFAULT_METHOD in METHODS
    lexical, dense = [(1, 2.0)], [(2, 0.5)]
    assert fuse(None, lexical, dense) == METHODS[DEFAULT_METHOD](lexical, dense, **DEFAULT_PARAMS)
    assert fuse("rrf", lexical, dense) == rrf(lexical, dense)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown fusion method"):
        fuse("nope", [], [])
    with pytest.raises(ValueError, match="alpha"):
        convex([], [], alpha=1.5)
    with pytest.raises(ValueError, match="norm"):
        convex([(1, 1.0)], [], norm="softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta"):
        dense_boost([], [], beta=-1.0)
    with pytest.raises(ValueError, match="k must be"):
        rrf([], [], k=-1)
    with pytest.raises(ValueError, match="depth"):
        adaptive_boost([], [], depth=0)
