"""The ONNX cross-encoder, run for real on a tiny overlap model built by the test suite."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragd.errors import ConfigurationError, Unavailable
from ragd.models.base import Reranker
from ragd.models.reranker import (
    OnnxCrossEncoder,
    load_reranker,
    pair_budget,
    reranker_loader,
)
from ragd.settings import ModelsSettings
from tests.models.tiny_models import (
    LENGTH_PENALTY,
    LogitsShape,
    build_cross_encoder,
    expected_logit,
)

PASSAGES = [
    "the cat sat on the mat",
    "dog runs",
    "cat mat",
    "python compiler error in the parser",
    "",
    "a big red dog sleeps on the rug in the house by the river",
    "cat cat cat",
    "coffee and tea and milk",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("tiny-reranker"))


@pytest.fixture(scope="module")
def encoder(model_dir: Path) -> OnnxCrossEncoder:
    return OnnxCrossEncoder(model_dir, max_tokens=64)


def test_pair_encoding_uses_the_bert_pair_template(encoder: OnnxCrossEncoder) -> None:
    (pair,) = encoder.encode_pairs("Cat on mat", ["the dog sat"])
    assert pair.tokens == ["[CLS]", "cat", "on", "mat", "[SEP]", "the", "dog", "sat", "[SEP]"]
    assert pair.type_ids == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert [i for i, token in enumerate(pair.tokens) if token == "[SEP]"] == [4, 8]
    # The tokenizer.json ships truncation at 8 and padding to 600: both are overridden.
    assert pair.attention_mask == [1] * 9


def test_scores_are_the_model_logits_in_input_order(encoder: OnnxCrossEncoder) -> None:
    query = "cat on the mat"
    scores = encoder.score(query, PASSAGES)
    assert scores.dtype == np.float32
    assert scores.shape == (len(PASSAGES),)
    assert scores.tolist() == [expected_logit(query, passage) for passage in PASSAGES]


def test_batch_size_does_not_change_scores(model_dir: Path) -> None:
    query = "big dog on the rug"
    passages = PASSAGES * 5
    results = [
        OnnxCrossEncoder(model_dir, batch_size=size).score(query, passages)
        for size in (1, 3, 16, len(passages))
    ]
    for result in results[1:]:
        assert np.array_equal(result, results[0])


def test_scores_follow_their_passages_when_shuffled(encoder: OnnxCrossEncoder) -> None:
    query = "cat sat on the mat"
    order = list(range(len(PASSAGES)))
    random.Random(7).shuffle(order)
    baseline = encoder.score(query, PASSAGES)
    shuffled = encoder.score(query, [PASSAGES[i] for i in order])
    assert np.array_equal(shuffled, baseline[order])


def test_passages_sharing_more_query_words_rank_higher(encoder: OnnxCrossEncoder) -> None:
    query = "python compiler error"
    passages = [
        "the river and the bridge",  # 0 shared
        "python compiler error",  # 3
        "an error in the code",  # 1
        "python code with a compiler",  # 2
    ]
    scores = encoder.score(query, passages)
    assert np.argsort(-scores, kind="stable").tolist() == [1, 3, 2, 0]


def test_a_huge_passage_is_truncated_and_the_query_survives(model_dir: Path) -> None:
    encoder = OnnxCrossEncoder(model_dir, max_tokens=64)
    query = "python compiler error"
    head = "python compiler " + "dog " * 10_000  # two query words inside the window
    tail = "dog " * 10_000 + "python compiler error"  # query words only beyond it
    pairs = encoder.encode_pairs(query, [head, tail])
    for pair in pairs:
        assert len(pair.ids) == 64
        assert pair.tokens[:5] == ["[CLS]", "python", "compiler", "error", "[SEP]"]
        assert pair.tokens[-1] == "[SEP]"
    scores = encoder.score(query, [head, tail])
    assert scores.tolist() == [2 - 64 * LENGTH_PENALTY, 0 - 64 * LENGTH_PENALTY]


def test_a_long_query_shares_the_window_longest_first(model_dir: Path) -> None:
    encoder = OnnxCrossEncoder(model_dir, max_tokens=32)  # 29 tokens of text
    query = " ".join(["cat"] * 40)
    (pair,) = encoder.encode_pairs(query, ["dog " * 40])
    assert len(pair.ids) == 32
    assert pair.tokens.count("cat") == 15 and pair.tokens.count("dog") == 14
    (short,) = encoder.encode_pairs(query, ["dog mat"])
    assert short.tokens.count("cat") == 27 and short.tokens.count("dog") == 1


@given(
    query=st.integers(0, 3000),
    passage=st.integers(0, 3000),
    budget=st.integers(2, 1000),
)
def test_pair_budget_properties(query: int, passage: int, budget: int) -> None:
    keep_query, keep_passage = pair_budget(query, passage, budget)
    assert 0 <= keep_query <= query and 0 <= keep_passage <= passage
    assert keep_query + keep_passage == min(query + passage, budget)
    if query <= budget // 2:
        assert keep_query == query  # a short query is never cut
    if passage <= budget // 2:
        assert keep_passage == passage  # nor a short passage
    if keep_query < query and keep_passage < passage:
        assert keep_query - keep_passage in (0, 1)  # both long: split evenly


def test_no_passages_give_an_empty_array(encoder: OnnxCrossEncoder) -> None:
    scores = encoder.score("cat", [])
    assert scores.shape == (0,) and scores.dtype == np.float32


@pytest.mark.parametrize("shape", ["n", "n1", "n2"])
def test_logit_shapes(tmp_path: Path, shape: LogitsShape) -> None:
    encoder = OnnxCrossEncoder(build_cross_encoder(tmp_path, logits=shape))
    query = "cat on the mat"
    assert encoder.score(query, PASSAGES).tolist() == [
        expected_logit(query, passage) for passage in PASSAGES
    ]


def test_more_than_two_classes_are_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="expected"):
        OnnxCrossEncoder(build_cross_encoder(tmp_path, logits="n3"))


def test_graph_without_token_types_and_int32_inputs(tmp_path: Path) -> None:
    encoder = OnnxCrossEncoder(build_cross_encoder(tmp_path, token_types=False, int32=True))
    # This graph counts attended non-special tokens: 1 + 2, over 6 attended tokens.
    assert encoder.score("cat", ["dog mat"]).tolist() == [3 - 6 * LENGTH_PENALTY]


def test_sigmoid_maps_logits_to_probabilities(model_dir: Path) -> None:
    query = "cat on the mat"
    raw = OnnxCrossEncoder(model_dir).score(query, PASSAGES)
    probabilities = OnnxCrossEncoder(model_dir, sigmoid=True).score(query, PASSAGES)
    assert probabilities.dtype == np.float32
    assert np.allclose(probabilities, 1 / (1 + np.exp(-raw.astype(np.float64))), atol=1e-7)
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_optimum_layout_is_found(tmp_path: Path) -> None:
    encoder = OnnxCrossEncoder(build_cross_encoder(tmp_path, model_file="onnx/model.onnx"))
    assert encoder.score("cat", ["cat"]).tolist() == [expected_logit("cat", "cat")]


def test_closed_encoder_refuses_work(model_dir: Path) -> None:
    encoder = OnnxCrossEncoder(model_dir)
    encoder.close()
    with pytest.raises(Unavailable):
        encoder.score("cat", ["cat"])


def test_loader_is_none_without_a_reranker() -> None:
    settings = ModelsSettings()
    assert settings.reranker == "none"
    assert reranker_loader(settings) is None
    assert load_reranker(settings) is None


def test_loader_builds_the_configured_cross_encoder(model_dir: Path) -> None:
    settings = ModelsSettings(reranker="onnx", reranker_path=model_dir, reranker_max_tokens=32)
    loader = reranker_loader(settings)
    assert loader is not None
    reranker = loader()
    assert isinstance(reranker, Reranker)
    assert isinstance(reranker, OnnxCrossEncoder) and reranker.max_tokens == 32
    assert reranker.score("cat", ["cat mat"]).tolist() == [expected_logit("cat", "cat mat")]
    reranker.close()


def test_loader_refuses_a_directory_without_model_files(tmp_path: Path) -> None:
    settings = ModelsSettings(reranker="onnx", reranker_path=tmp_path)
    with pytest.raises(ConfigurationError, match=r"tokenizer\.json.*model\.onnx"):
        reranker_loader(settings)
    missing = ModelsSettings(reranker="onnx", reranker_path=tmp_path / "nowhere")
    with pytest.raises(ConfigurationError, match="not found"):
        load_reranker(missing)


def test_a_corrupt_model_fails_to_load_clearly(tmp_path: Path) -> None:
    build_cross_encoder(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"not an onnx graph")
    loader = reranker_loader(ModelsSettings(reranker="onnx", reranker_path=tmp_path))
    assert loader is not None  # the files exist; loading is what fails
    with pytest.raises(ConfigurationError, match="cannot load reranker model"):
        loader()
