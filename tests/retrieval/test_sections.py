"""The section penalty reads only the candidates it can move into view, and loses nothing by
it: the shown places come out as if every candidate had been checked."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.retrieval.fusion import Fused
from ragd.retrieval.search import (
    CONTINUATION_PENALTY,
    REACH_MARGIN,
    SearchRequest,
    _demote,
    _within_reach,
)


def candidates(scores: list[float]) -> list[Fused]:
    ordered = sorted(scores, reverse=True)
    return [Fused(key, score, None, None, key + 1, score, "dense")
            for key, score in enumerate(ordered)]


@settings(max_examples=300, deadline=None)
@given(
    scores=st.lists(st.floats(-1, 1, allow_nan=False), min_size=0, max_size=120),
    continuing=st.sets(st.integers(0, 119)),
    top_k=st.integers(1, 20),
    penalty=st.sampled_from([0.0, 0.05, CONTINUATION_PENALTY, 0.3]),
)
def test_checking_only_the_reachable_candidates_changes_no_shown_place(
    scores: list[float], continuing: set[int], top_k: int, penalty: float
) -> None:
    fused = candidates(scores)
    request = SearchRequest(query="q", top_k=top_k)
    reach = _within_reach(fused, request, False, penalty)
    checked = continuing & {item.key for item in reach}
    shown = top_k * 2 + REACH_MARGIN
    everything = _demote(fused, continuing, penalty)[:shown]
    bounded = _demote(fused, checked, penalty)[:shown]
    assert [(i.key, i.score) for i in bounded] == [(i.key, i.score) for i in everything]


def test_with_metadata_filters_every_candidate_is_checked() -> None:
    fused = candidates([1.0 - n / 1000 for n in range(200)])
    request = SearchRequest(query="q", top_k=1, filters={"lang": "en"})
    assert _within_reach(fused, request, False, CONTINUATION_PENALTY) == fused
    unfiltered = _within_reach(fused, SearchRequest(query="q", top_k=1), False, 0.01)
    assert len(unfiltered) < len(fused)
