"""Ranking metrics: hand-computed examples, edge cases and Hypothesis properties."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ragd.retrieval.metrics import (
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)

Metric = Callable[[Sequence[str], Mapping[str, int], int], float]
ALL_METRICS: list[Metric] = [ndcg_at_k, recall_at_k, mrr_at_k, precision_at_k]

LOG2_3 = math.log2(3)

# --- hand-computed examples ---------------------------------------------------------------

# Ranking [d3, d1, d2] with qrels {d1: 1, d2: 2} (d3 unjudged, so grade 0).
RANKING = ["d3", "d1", "d2"]
QRELS = {"d1": 1, "d2": 2}


def test_ndcg_graded_example() -> None:
    # k=3: DCG  = 0/log2(2) + 1/log2(3) + 2/log2(4) = 0 + 0.63093 + 1 = 1.63093
    #      IDCG = 2/log2(2) + 1/log2(3)             = 2 + 0.63093     = 2.63093
    #      nDCG = 1.63093 / 2.63093 = 0.61991
    assert ndcg_at_k(RANKING, QRELS, 3) == pytest.approx((1 / LOG2_3 + 1) / (2 + 1 / LOG2_3))
    assert ndcg_at_k(RANKING, QRELS, 3) == pytest.approx(0.619906, abs=1e-6)
    # k=2: DCG = 0 + 1/log2(3) = 0.63093; IDCG = 2 + 1/log2(3); nDCG = 0.23981
    assert ndcg_at_k(RANKING, QRELS, 2) == pytest.approx((1 / LOG2_3) / (2 + 1 / LOG2_3))
    assert ndcg_at_k(RANKING, QRELS, 2) == pytest.approx(0.239812, abs=1e-6)
    # k=1: DCG = 0 (d3 is not relevant); IDCG = 2; nDCG = 0
    assert ndcg_at_k(RANKING, QRELS, 1) == 0.0


def test_ndcg_ideal_is_cut_at_k() -> None:
    # Three relevant docs but k=1: IDCG = 1/log2(2) = 1 (only the best grade fits), DCG = 1.
    assert ndcg_at_k(["a"], {"a": 1, "b": 1, "c": 1}, 1) == 1.0
    # k=2 with [a, x]: DCG = 1; IDCG = 1 + 1/log2(3) = 1.63093; nDCG = 0.61315
    assert ndcg_at_k(["a", "x"], {"a": 1, "b": 1, "c": 1}, 2) == pytest.approx(1 / (1 + 1 / LOG2_3))


def test_ndcg_uses_linear_gain() -> None:
    # Grade 3 at rank 2 only: DCG = 3/log2(3); IDCG = 3/log2(2) = 3; nDCG = 1/log2(3) = 0.63093.
    # (Exponential gain 2^g - 1 would give the same here, so also check two grades:)
    assert ndcg_at_k(["x", "a"], {"a": 3}, 10) == pytest.approx(1 / LOG2_3)
    # [b, a] with {a: 3, b: 1}: DCG = 1 + 3/log2(3) = 2.89279; IDCG = 3 + 1/log2(3) = 3.63093
    # nDCG = 0.79671 (exponential gain would give (1 + 7/log2(3)) / (7 + 1/log2(3)) = 0.7098).
    assert ndcg_at_k(["b", "a"], {"a": 3, "b": 1}, 10) == pytest.approx(
        (1 + 3 / LOG2_3) / (3 + 1 / LOG2_3)
    )


def test_zero_and_negative_grades_are_not_relevant() -> None:
    qrels = {"a": 0, "b": -1, "c": 1}
    # Only c is relevant: it is at rank 3, so DCG = 1/log2(4) = 0.5, IDCG = 1, nDCG = 0.5.
    assert ndcg_at_k(["a", "b", "c"], qrels, 3) == 0.5
    assert recall_at_k(["a", "b"], qrels, 10) == 0.0
    assert mrr_at_k(["a", "b", "c"], qrels, 10) == pytest.approx(1 / 3)
    assert precision_at_k(["a", "b", "c"], qrels, 3) == pytest.approx(1 / 3)


def test_recall_example() -> None:
    # Relevant {d1, d2}. Top-1 = [d3]: 0/2; top-2 = [d3, d1]: 1/2; top-3: 2/2.
    assert recall_at_k(RANKING, QRELS, 1) == 0.0
    assert recall_at_k(RANKING, QRELS, 2) == 0.5
    assert recall_at_k(RANKING, QRELS, 3) == 1.0


def test_mrr_example() -> None:
    # The first relevant doc (d1) is at rank 2: MRR@k = 1/2 for k >= 2 and 0 for k = 1.
    assert mrr_at_k(RANKING, QRELS, 1) == 0.0
    assert mrr_at_k(RANKING, QRELS, 2) == 0.5
    assert mrr_at_k(RANKING, QRELS, 10) == 0.5


def test_precision_example_divides_by_k() -> None:
    # Two relevant docs in the top 3: P@3 = 2/3; P@10 = 2/10 although only 3 were returned.
    assert precision_at_k(RANKING, QRELS, 3) == pytest.approx(2 / 3)
    assert precision_at_k(RANKING, QRELS, 10) == pytest.approx(0.2)


# --- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_empty_run_scores_zero(metric: Metric) -> None:
    assert metric([], QRELS, 10) == 0.0


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_no_relevant_document_scores_zero(metric: Metric) -> None:
    assert metric(["a", "b"], {}, 10) == 0.0
    assert metric(["a", "b"], {"a": 0}, 10) == 0.0


def test_k_larger_than_the_list() -> None:
    # One relevant doc at rank 1, k=100: everything is perfect except P@100 = 1/100.
    assert ndcg_at_k(["a"], {"a": 1}, 100) == 1.0
    assert recall_at_k(["a"], {"a": 1}, 100) == 1.0
    assert mrr_at_k(["a"], {"a": 1}, 100) == 1.0
    assert precision_at_k(["a"], {"a": 1}, 100) == 0.01


def test_duplicates_count_once_at_their_first_position() -> None:
    # [a, a, b] is read as [a, b]: the repeat neither earns gain twice nor takes a slot.
    qrels = {"a": 1, "b": 1}
    assert ndcg_at_k(["a", "a", "b"], qrels, 2) == 1.0
    assert recall_at_k(["a", "a", "b"], qrels, 2) == 1.0
    assert precision_at_k(["a", "a", "b"], qrels, 2) == 1.0
    # With only a relevant, [a, a] at k=2: DCG = 1 (not 1 + 1/log2(3)); IDCG = 1.
    assert ndcg_at_k(["a", "a"], {"a": 1}, 2) == 1.0
    # A repeat of a non-relevant doc keeps its first rank: [x, x, a] -> [x, a], MRR = 1/2.
    assert mrr_at_k(["x", "x", "a"], {"a": 1}, 10) == 0.5


@pytest.mark.parametrize("metric", ALL_METRICS)
def test_k_below_one_is_rejected(metric: Metric) -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric(["a"], {"a": 1}, 0)


# --- evaluate -----------------------------------------------------------------------------


def test_evaluate_averages_over_judged_queries() -> None:
    run = {
        "q1": ["d3", "d1", "d2"],  # the example above
        # q2 is missing from the run: it counts as an empty ranking (0 everywhere)
        "q3": ["d9"],  # not in the qrels: ignored
    }
    qrels = {"q1": QRELS, "q2": {"d5": 1}}
    scores = evaluate(run, qrels, ks=(1, 3))
    assert list(scores) == [
        "ndcg@1",
        "recall@1",
        "mrr@1",
        "precision@1",
        "ndcg@3",
        "recall@3",
        "mrr@3",
        "precision@3",
    ]
    # Each mean is (q1's score + 0) / 2.
    assert scores["ndcg@3"] == pytest.approx(0.619906 / 2, abs=1e-6)
    assert scores["recall@3"] == 0.5
    assert scores["mrr@3"] == 0.25
    assert scores["precision@3"] == pytest.approx(1 / 3)
    assert scores["ndcg@1"] == scores["recall@1"] == scores["mrr@1"] == 0.0


def test_evaluate_default_cut_offs() -> None:
    scores = evaluate({"q": ["a"]}, {"q": {"a": 1}})
    assert {"ndcg@10", "recall@10", "recall@100", "mrr@10"} <= scores.keys()
    assert scores["ndcg@10"] == scores["recall@100"] == scores["mrr@10"] == 1.0


def test_evaluate_rejects_empty_qrels_and_bad_k() -> None:
    with pytest.raises(ValueError, match="no query"):
        evaluate({"q": ["a"]}, {})
    with pytest.raises(ValueError, match="k must be at least 1"):
        evaluate({"q": ["a"]}, {"q": {"a": 1}}, ks=(10, 0))


# --- properties ---------------------------------------------------------------------------

DOC_IDS = [f"d{i}" for i in range(12)]
doc_ids = st.sampled_from(DOC_IDS)
rankings = st.lists(doc_ids, max_size=20)  # duplicates allowed
distinct_rankings = st.lists(doc_ids, max_size=12, unique=True)
qrels_st = st.dictionaries(doc_ids, st.integers(0, 3), max_size=12)
ks = st.integers(1, 15)


def reference_ndcg(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """An independent, deliberately naive nDCG@k (linear gain, first occurrence counts)."""
    distinct = list(dict.fromkeys(ranked))[:k]
    dcg = 0.0
    for i in range(len(distinct)):
        grade = qrels.get(distinct[i], 0)
        if grade > 0:
            dcg += grade / (math.log(i + 2) / math.log(2))
    grades = [g for g in qrels.values() if g > 0]
    grades.sort()
    grades.reverse()
    idcg = 0.0
    for i in range(min(k, len(grades))):
        idcg += grades[i] / (math.log(i + 2) / math.log(2))
    return dcg / idcg if idcg else 0.0


@given(rankings, qrels_st, ks)
def test_ndcg_matches_an_independent_implementation(
    ranked: list[str], qrels: dict[str, int], k: int
) -> None:
    assert ndcg_at_k(ranked, qrels, k) == pytest.approx(reference_ndcg(ranked, qrels, k))


@given(rankings, qrels_st, ks)
def test_every_metric_is_within_zero_and_one(
    ranked: list[str], qrels: dict[str, int], k: int
) -> None:
    for metric in ALL_METRICS:
        assert 0.0 <= metric(ranked, qrels, k) <= 1.0


@given(qrels_st, st.lists(doc_ids, max_size=5, unique=True), ks)
def test_a_perfect_ranking_scores_one(qrels: dict[str, int], filler: list[str], k: int) -> None:
    assume(any(grade > 0 for grade in qrels.values()))
    # Relevant docs by decreasing grade, then anything non-relevant.
    ideal = sorted((d for d, g in qrels.items() if g > 0), key=lambda d: -qrels[d])
    ranked = ideal + [d for d in filler if qrels.get(d, 0) <= 0]
    assert ndcg_at_k(ranked, qrels, k) == pytest.approx(1.0)
    assert mrr_at_k(ranked, qrels, k) == 1.0
    if k >= len(ideal):
        assert recall_at_k(ranked, qrels, k) == 1.0


@given(distinct_rankings, qrels_st, ks, st.data())
def test_moving_a_relevant_doc_up_never_lowers_mrr_or_recall(
    ranked: list[str], qrels: dict[str, int], k: int, data: st.DataObject
) -> None:
    relevant_positions = [i for i, d in enumerate(ranked) if qrels.get(d, 0) > 0]
    assume(relevant_positions)
    source = data.draw(st.sampled_from(relevant_positions))
    target = data.draw(st.integers(0, source))
    moved = ranked.copy()
    moved.insert(target, moved.pop(source))
    for metric in (mrr_at_k, recall_at_k, precision_at_k):
        assert metric(moved, qrels, k) >= metric(ranked, qrels, k)


@given(distinct_rankings, qrels_st, ks, st.data())
def test_swapping_a_doc_above_a_less_relevant_one_never_lowers_any_metric(
    ranked: list[str], qrels: dict[str, int], k: int, data: st.DataObject
) -> None:
    # Moving a relevant doc up past a *more* relevant one may lower nDCG, so the property
    # for nDCG is about swapping with a less relevant doc ranked above it.
    pairs = [
        (i, j)
        for j, lower in enumerate(ranked)
        for i, upper in enumerate(ranked[:j])
        if qrels.get(lower, 0) > max(qrels.get(upper, 0), 0)
    ]
    assume(pairs)
    i, j = data.draw(st.sampled_from(pairs))
    swapped = ranked.copy()
    swapped[i], swapped[j] = swapped[j], swapped[i]
    for metric in ALL_METRICS:
        assert metric(swapped, qrels, k) >= metric(ranked, qrels, k) - 1e-12


@given(rankings, qrels_st, ks, ks)
def test_recall_is_monotone_in_k(
    ranked: list[str], qrels: dict[str, int], k1: int, k2: int
) -> None:
    low, high = sorted((k1, k2))
    assert recall_at_k(ranked, qrels, low) <= recall_at_k(ranked, qrels, high)


@given(st.dictionaries(st.sampled_from(["q1", "q2", "q3"]), rankings), st.data())
def test_evaluate_is_the_mean_of_per_query_scores(
    run: dict[str, list[str]], data: st.DataObject
) -> None:
    qrels = data.draw(st.dictionaries(st.sampled_from(["q1", "q2", "q4"]), qrels_st, min_size=1))
    scores = evaluate(run, qrels, ks=(5,))
    expected = sum(ndcg_at_k(run.get(q, []), judged, 5) for q, judged in qrels.items())
    assert scores["ndcg@5"] == pytest.approx(expected / len(qrels))
    assert all(0.0 <= value <= 1.0 for value in scores.values())
