"""A collection keeps the embedder that first filled it."""

from __future__ import annotations

import pytest

from ragd.errors import InvalidInput
from ragd.stores.catalog import check_embedder


def test_first_ingestion_and_the_same_embedder_pass() -> None:
    check_embedder((None, None), ("minilm-l6-v2-int8", 384))
    check_embedder(("minilm-l6-v2-int8", 384), ("minilm-l6-v2-int8", 384))


@pytest.mark.parametrize("configured", [("e5-small", 384), ("minilm-l6-v2-int8", 768)])
def test_another_embedder_is_refused_with_both_named(configured: tuple[str, int]) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_embedder(("minilm-l6-v2-int8", 384), configured)
    assert caught.value.code == "embedder_mismatch"
    assert "minilm-l6-v2-int8" in caught.value.message and configured[0] in caught.value.message
