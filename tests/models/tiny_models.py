"""Tiny, deterministic models built inside the test suite (no download).

:func:`build_cross_encoder` writes a directory in the BERT cross-encoder layout that
:class:`ragd.models.reranker.OnnxCrossEncoder` reads: a WordPiece ``tokenizer.json`` with the BERT
pair template, and a ``model.onnx`` written with ``onnx.helper``. The graph is an attention-free
encoder whose logit means something:

    logit = (query tokens that also occur in the passage) - (attended tokens) / 1024

Token embeddings are one-hot (special tokens embed to zero); the query and passage bags are
summed separately using ``token_type_ids`` and ``attention_mask``; their overlap goes through a
linear head. The length term makes the score depend on the attention mask, so wrong padding
shows up as a changed score; every value is a multiple of 1/1024, exact in float32, so scores
must be identical whatever the batching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
WORDS = (
    "the a an of on in to and is are was it this that with for as by at from "
    "cat cats dog dogs mat rug sat sleeps runs jumps bird fish mouse horse cow "
    "python rust java code compiler parser tokenizer vector index search query "
    "database table row column memory cache thread process server client request "
    "response error token model embedding reranker passage document keyword "
    "red green blue yellow black white big small fast slow old new happy sad "
    "river mountain forest ocean city village road bridge house garden "
    "apple banana bread cheese water coffee tea milk"
).split()
VOCAB = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *WORDS))}
#: Per attended token, subtracted from the logit (a power of two: exact in float32).
LENGTH_PENALTY = 1.0 / 1024

LogitsShape = Literal["n", "n1", "n2", "n3"]


def build_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(VOCAB, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", VOCAB["[SEP]"]), ("[CLS]", VOCAB["[CLS]"])
    )
    # Settings a downloaded tokenizer.json may carry; the reranker must override them.
    tokenizer.enable_truncation(8)
    tokenizer.enable_padding(pad_id=VOCAB["[PAD]"], pad_token="[PAD]", length=600)
    return tokenizer


def build_graph(
    *,
    logits: LogitsShape = "n1",
    token_types: bool = True,
    int32: bool = False,
) -> onnx.ModelProto:
    """The overlap cross-encoder. Without ``token_types`` the graph cannot tell the query from
    the passage and its logit is the number of attended non-special tokens (minus the length
    term), a model that ignores token types altogether (as XLM-R based BGE rerankers do)."""
    size = len(VOCAB)
    classes = {"n": 1, "n1": 1, "n2": 2, "n3": 3}[logits]
    embeddings = np.eye(size, dtype=np.float32)
    embeddings[[VOCAB[token] for token in SPECIAL_TOKENS]] = 0.0
    head = np.ones((size, classes), dtype=np.float32)
    if classes >= 2:
        head[:, 0] = -1.0  # the "not relevant" class moves the opposite way
    initializers = [
        numpy_helper.from_array(embeddings, "embeddings"),
        numpy_helper.from_array(head, "head"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array(LENGTH_PENALTY, dtype=np.float32), "penalty"),
        numpy_helper.from_array(np.array([-1, classes], dtype=np.int64), "shape2d"),
    ]
    node = helper.make_node
    nodes = [
        node("Gather", ["embeddings", "input_ids"], ["emb"], axis=0),  # (B, L, V)
        node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),  # (B, L)
    ]
    if token_types:
        initializers.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"))
        nodes += [
            node("Cast", ["token_type_ids"], ["segment"], to=TensorProto.FLOAT),
            node("Mul", ["mask", "segment"], ["w_passage"]),
            node("Sub", ["mask", "w_passage"], ["w_query"]),
            node("Unsqueeze", ["w_query", "axis1"], ["w_query3"]),  # (B, 1, L)
            node("Unsqueeze", ["w_passage", "axis1"], ["w_passage3"]),
            node("MatMul", ["w_query3", "emb"], ["query_bag"]),  # (B, 1, V) token counts
            node("MatMul", ["w_passage3", "emb"], ["passage_bag"]),
            node("Min", ["passage_bag", "one"], ["passage_seen"]),  # 0/1 per token
            node("Mul", ["query_bag", "passage_seen"], ["features"]),
        ]
    else:
        nodes += [
            node("Unsqueeze", ["mask", "axis1"], ["mask3"]),
            node("MatMul", ["mask3", "emb"], ["features"]),
        ]
    nodes += [
        node("MatMul", ["features", "head"], ["raw3"]),  # (B, 1, K)
        node("Reshape", ["raw3", "shape2d"], ["raw"]),  # (B, K)
        node("ReduceSum", ["mask", "axis1"], ["length"], keepdims=1),  # (B, 1)
        node("Mul", ["length", "penalty"], ["cost"]),
    ]
    if logits == "n":
        initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "shape1d"))
        nodes += [
            node("Sub", ["raw", "cost"], ["logits2d"]),
            node("Reshape", ["logits2d", "shape1d"], ["logits"]),
        ]
        out_shape: list[str | int] = ["batch"]
    else:
        nodes.append(node("Sub", ["raw", "cost"], ["logits"]))
        out_shape = ["batch", classes]
    int_type = TensorProto.INT32 if int32 else TensorProto.INT64
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    graph = helper.make_graph(
        nodes,
        "tiny_overlap_cross_encoder",
        [helper.make_tensor_value_info(name, int_type, ["batch", "sequence"]) for name in names],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build_cross_encoder(
    directory: Path,
    *,
    logits: LogitsShape = "n1",
    token_types: bool = True,
    int32: bool = False,
    model_file: str = "model.onnx",
) -> Path:
    """Write ``tokenizer.json`` and ``model_file`` into ``directory`` and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save(str(directory / "tokenizer.json"))
    target = directory / model_file
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_graph(logits=logits, token_types=token_types, int32=int32), str(target))
    return directory


def expected_logit(query: str, passage: str) -> float:
    """What the overlap graph returns for an untruncated pair of in-vocabulary words."""
    query_words = [word for word in query.lower().split() if word in VOCAB]
    passage_words = {word for word in passage.lower().split() if word in VOCAB}
    overlap = sum(1 for word in query_words if word in passage_words)
    attended = len(query.split()) + len(passage.split()) + 3  # [CLS] [SEP] [SEP]
    return overlap - attended * LENGTH_PENALTY
