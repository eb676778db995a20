"""Ranking metrics for retrieval evaluation (nDCG, recall, MRR, precision) and percentiles.

Conventions follow BEIR / ``pytrec_eval`` (trec_eval):

* ``qrels`` map a document id to its integer relevance grade. A document is *relevant* when
  its grade is above 0; grades of 0 or below are judged non-relevant and add no gain.
* nDCG uses linear gain (the grade itself, as trec_eval's ``ndcg_cut`` does) and the
  ``1 / log2(rank + 1)`` discount with ranks counted from 1. The ideal DCG sorts the qrels'
  positive grades in decreasing order. A query with no relevant document scores 0.
* A ranked list may repeat a document id; only its first position counts (later repeats are
  dropped before cutting at ``k``), so a run cannot earn gain twice for one document.
* Precision@k divides by ``k`` even when fewer than ``k`` documents were returned (trec_eval's
  ``P_k``), so returning fewer results is not rewarded.

Every function here is pure: it takes ids and grades and returns floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "DEFAULT_KS",
    "evaluate",
    "mrr_at_k",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
]

#: The cut-offs :func:`evaluate` reports by default (nDCG@10, Recall@10, Recall@100, MRR@10...).
DEFAULT_KS: tuple[int, ...] = (10, 100)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def _top_k(ranked_ids: Iterable[str], k: int) -> list[str]:
    """The first ``k`` distinct ids of ``ranked_ids``, each at its first position."""
    _check_k(k)
    seen: set[str] = set()
    top: list[str] = []
    for doc_id in ranked_ids:
        if doc_id in seen:
            continue
        seen.add(doc_id)
        top.append(doc_id)
        if len(top) == k:
            break
    return top


def _relevant(qrels: Mapping[str, int]) -> set[str]:
    return {doc_id for doc_id, grade in qrels.items() if grade > 0}


def ndcg_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` results, in ``[0, 1]``.

    ``DCG = sum(grade(d_i) / log2(i + 1))`` over ranks ``i = 1..k``; the ideal DCG is the
    same sum over the positive grades sorted in decreasing order, cut at ``k``. Returns 0
    when ``qrels`` holds no relevant (grade > 0) document.
    """
    top = _top_k(ranked_ids, k)
    ideal = sorted((grade for grade in qrels.values() if grade > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    dcg = sum(
        max(qrels.get(doc_id, 0), 0) / math.log2(rank + 1)
        for rank, doc_id in enumerate(top, start=1)
    )
    idcg = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal, start=1))
    return dcg / idcg


def recall_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the first ``k`` results (0 if none exist)."""
    relevant = _relevant(qrels)
    top = _top_k(ranked_ids, k)
    if not relevant:
        return 0.0
    return sum(1 for doc_id in top if doc_id in relevant) / len(relevant)


def precision_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Relevant documents among the first ``k`` results, divided by ``k`` (not by the count
    returned, as trec_eval's ``P_k``)."""
    relevant = _relevant(qrels)
    top = _top_k(ranked_ids, k)
    return sum(1 for doc_id in top if doc_id in relevant) / k


def mrr_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank (``1 / rank``, ranks from 1) of the first relevant document within the
    first ``k`` results; 0 when none of them is relevant."""
    relevant = _relevant(qrels)
    for rank, doc_id in enumerate(_top_k(ranked_ids, k), start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


_METRICS = {
    "ndcg": ndcg_at_k,
    "recall": recall_at_k,
    "mrr": mrr_at_k,
    "precision": precision_at_k,
}


def evaluate(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Mean of every metric at every cut-off, over the queries of ``qrels``.

    ``run`` maps a query id to its ranked document ids (best first). The mean is taken over
    every query id in ``qrels``, the judged queries: one that is missing from ``run`` counts
    as an empty ranking (0 for every metric), so a system cannot improve its score by
    skipping hard queries. Queries in ``run`` without qrels are ignored (they cannot be
    scored). Keys are ``"<metric>@<k>"``, e.g. ``"ndcg@10"``, ``"recall@100"``, ``"mrr@10"``,
    ``"precision@10"``, in the order of ``ks``.

    Raises ``ValueError`` if ``qrels`` is empty (a mean over no query is undefined) or a
    cut-off is below 1.
    """
    if not qrels:
        raise ValueError("cannot evaluate: the qrels hold no query")
    for k in ks:
        _check_k(k)
    scores: dict[str, float] = {}
    for k in ks:
        for name, metric in _METRICS.items():
            total = math.fsum(
                metric(run.get(query_id, ()), judged, k) for query_id, judged in qrels.items()
            )
            scores[f"{name}@{k}"] = total / len(qrels)
    return scores


