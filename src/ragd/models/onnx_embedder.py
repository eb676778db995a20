"""Sentence embeddings from a local ONNX model directory (ONNX Runtime + ``tokenizers``).

A model directory holds ``tokenizer.json`` (Hugging Face ``tokenizers`` format) and
``model.onnx`` (or ``onnx/model.onnx``, the layout of Optimum exports). The graph takes
``input_ids`` and ``attention_mask`` (and ``token_type_ids`` when it declares them) and returns
either token states ``(batch, tokens, dim)`` — pooled here, by mean over the attention mask or
by the first (CLS) token — or sentence vectors ``(batch, dim)`` that are used as they are.

Texts are tokenised once, sorted by length and run in batches padded to the longest text of
each batch, so a batch of short texts does not pay for one long text elsewhere in the call;
results come back in input order. Batches are small on purpose (see
:data:`DEFAULT_BATCH_TOKENS`), and a dynamically quantised graph runs one text at a time: its
``DynamicQuantizeLinear`` picks one int8 scale per *tensor*, so in a batch each text's vector
would depend on its batch mates (cosine down to 0.94 between a text embedded alone and in a
batch, measured with all-MiniLM-L6-v2) and a query would not match the same passage exactly.

Vendor libraries (``onnxruntime``, ``tokenizers``) are imported when a model is built, never at
import time: importing this module loads no model.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from ragd.errors import ConfigurationError, InvalidInput, Unavailable
from ragd.models.base import EmbedderInfo, TextKind, TokenVectors, Vectors
from ragd.settings import ModelsSettings

if TYPE_CHECKING:
    from onnxruntime import InferenceSession, SessionOptions
    from tokenizers import Encoding, Tokenizer

__all__ = [
    "DEFAULT_BATCH_ATTENTION",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BATCH_TOKENS",
    "MODEL_FILES",
    "TOKENIZER_FILE",
    "OnnxEmbedder",
    "Pooling",
    "directory_name",
    "find_model_files",
    "model_token_limit",
    "open_session",
    "session_options",
]

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
TOKENIZER_FILE = "tokenizer.json"
#: Where the ONNX graph may live inside the model directory, in order of preference.
MODEL_FILES = ("model.onnx", "onnx/model.onnx")
#: Batch limits for one ONNX Runtime call: at most this many texts, this many tokens (rows x
#: padded width) and this much attention (rows x width^2). Measured on 2 cores with
#: all-MiniLM-L6-v2 int8: throughput peaks at ~256-512 tokens per call (the activations then
#: stay in the 2 MB L2 cache) and falls by half at 32 x 256 tokens, where peak RSS also
#: reaches ~950 MB against ~220 MB with these limits. Long texts therefore run one at a time.
DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_TOKENS = 512
DEFAULT_BATCH_ATTENTION = 128 * 128
#: Ops whose activation scale spans the whole batch (see the module docstring).
_BATCH_COUPLED_OPS = (b"DynamicQuantizeLinear", b"DynamicQuantizeMatMul")
_KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
#: Output names that hold ready sentence vectors, then token states, by preference. A BERT
#: export's ``pooler_output`` (tanh over CLS) is *not* a sentence embedding and is never chosen
#: by name.
_SENTENCE_OUTPUTS = ("sentence_embedding", "sentence_embeddings", "embeddings")
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
_PROBE = "dimension probe"


def find_model_files(path: Path) -> tuple[Path, Path]:
    """Return ``(tokenizer.json, model.onnx)`` inside ``path``.

    Raises :class:`ConfigurationError` naming what is missing.
    """
    if not path.is_dir():
        raise ConfigurationError(f"embedder model directory not found: {path}")
    tokenizer = path / TOKENIZER_FILE
    model = next((path / name for name in MODEL_FILES if (path / name).is_file()), None)
    missing = []
    if not tokenizer.is_file():
        missing.append(TOKENIZER_FILE)
    if model is None:
        missing.append(" or ".join(MODEL_FILES))
    if missing or model is None:
        raise ConfigurationError(f"embedder model directory {path} lacks {', '.join(missing)}")
    return tokenizer, model


def directory_name(path: Path) -> str:
    """The name an embedder loaded from ``path`` reports (and indexes record)."""
    return path.expanduser().resolve().name


def model_token_limit(path: Path) -> int | None:
    """The longest input the model in ``path`` was trained for, when its configs say so.

    ``sentence_bert_config.json``'s ``max_seq_length`` (what sentence-transformers truncates
    to) wins over ``config.json``'s ``max_position_embeddings`` (what the graph can take).
    """
    for file, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("config.json", "max_position_embeddings"),
    ):
        try:
            value = json.loads((path / file).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


def session_options(threads: int = 0) -> SessionOptions:
    """ONNX Runtime options for one embedding session.

    ``threads`` intra-op threads (0 = every core); one inter-op thread and sequential
    execution, since a transformer is a chain of ops with nothing to run side by side.

    The CPU memory arena stays on. It keeps the buffers of the largest run for the life of the
    session, which with unbounded batches cost 1.6 GB RSS after 500 long passages (32 x 256
    tokens per run); with the batch limits above a run needs little, and the arena measured
    ~10 MB more RSS than no arena for ~5 % more throughput.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not our logs
    # Idle intra-op threads sleep instead of spinning: with concurrent calls, spinning
    # threads burn the cores the other calls need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEmbedder:
    """:class:`ragd.models.base.Embedder` over an ONNX sentence-embedding graph.

    Construction opens the session (the registry calls the loader in a worker thread). All
    methods are blocking and thread-safe: ONNX Runtime sessions and ``tokenizers`` encoders
    may be used from several threads at once.
    """

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        name: str,
        max_tokens: int = 256,
        pooling: Pooling = "mean",
        normalize: bool = True,
        query_prefix: str = "",
        passage_prefix: str = "",
        threads: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        batch_attention: int = DEFAULT_BATCH_ATTENTION,
        variant: str = "onnx",
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise ConfigurationError(f"unknown pooling {pooling!r}; valid: mean, cls")
        if max_tokens < 2:
            raise ConfigurationError("max_tokens must be at least 2")
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        self._pooling: Pooling = pooling
        self._normalize = normalize
        self._max_tokens = max_tokens
        self._prefixes: dict[TextKind, str] = {"query": query_prefix, "passage": passage_prefix}
        self._batch_size = 1 if _batch_coupled(model_path) else batch_size
        self._loose_batch_size = batch_size
        self._batch_tokens = batch_tokens
        self._batch_attention = batch_attention
        self._tokenizer_path = tokenizer_path
        self._tokenizer = _load_tokenizer(tokenizer_path, max_tokens)
        self._pad_id = _pad_id(self._tokenizer)
        self._counter: Tokenizer | None = None
        self._counter_lock = threading.Lock()
        self._session: InferenceSession | None = open_session(model_path, threads)
        self._model_path = model_path
        self._inputs, self._int_dtype, self._output, declared = _graph_io(
            self._session, model_path
        )
        # One run at load time: proves the graph works with our inputs (a broken model fails
        # the load, not the first request), finds the dimension when the graph leaves it
        # symbolic, and takes ORT's first-run allocations out of the first request's latency.
        self._token_output = False
        dimension = self._embed(self._session, [_PROBE]).shape[1]
        if declared is not None and declared != dimension:
            raise ConfigurationError(
                f"{model_path}: graph declares {declared}-d output but produced {dimension}-d"
            )
        self._info = EmbedderInfo(
            name=name,
            dimension=dimension,
            max_tokens=max_tokens,
            normalized=normalize,
            variant=variant,
        )

    @classmethod
    def from_directory(
        cls,
        path: Path,
        settings: ModelsSettings,
        *,
        name: str | None = None,
        variant: str = "onnx",
    ) -> OnnxEmbedder:
        """Load the model in ``path`` with the pooling, prefixes and limits of ``settings``.

        ``max_tokens`` is clamped, with a warning, to the limit the model's configs declare.
        """
        tokenizer, model = find_model_files(path)
        max_tokens = settings.max_tokens
        limit = model_token_limit(path)
        if limit is not None and max_tokens > limit:
            logger.warning(
                "models.max_tokens %d exceeds the model's limit; using %d",
                max_tokens,
                limit,
                extra={"model": str(path)},
            )
            max_tokens = limit
        return cls(
            model,
            tokenizer,
            name=name or directory_name(path),
            max_tokens=max_tokens,
            pooling=settings.pooling,
            normalize=settings.normalize,
            query_prefix=settings.query_prefix,
            passage_prefix=settings.passage_prefix,
            threads=settings.inference_threads,
            variant=variant,
        )

    @property
    def info(self) -> EmbedderInfo:
        return self._info

    @property
    def model_path(self) -> Path:
        return self._model_path

    def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Embed ``texts`` (each truncated to ``max_tokens``); rows in input order."""
        return self._embed_texts(texts, kind, self._batch_size)

    def _embed_texts(self, texts: Sequence[str], kind: TextKind, batch_size: int) -> Vectors:
        session = self._session
        if session is None:
            raise Unavailable(f"embedder {self._info.name} is closed")
        _check_texts(texts)
        if kind not in self._prefixes:
            raise InvalidInput(f"unknown text kind {kind!r}; valid: query, passage")
        if not texts:
            return np.empty((0, self._info.dimension), dtype=np.float32)
        prefix = self._prefixes[kind]
        return self._embed(
            session, [prefix + text for text in texts] if prefix else texts, batch_size
        )

    @property
    def token_vectors(self) -> bool:
        """Whether the graph outputs token vectors (pooled here), so :meth:`embed_tokens`
        works."""
        return self._token_output and self._pooling == "mean"

    def embed_tokens(
        self, texts: Sequence[str], *, kind: TextKind = "passage"
    ) -> list[TokenVectors]:
        """Like :meth:`embed`, keeping each text's token vectors and their character spans
        (special tokens and the prefix left out)."""
        session = self._session
        if session is None:
            raise Unavailable(f"embedder {self._info.name} is closed")
        if not self.token_vectors:
            raise Unavailable(f"embedder {self._info.name} does not output token vectors")
        _check_texts(texts)
        prefix = self._prefixes[kind]
        found: list[TokenVectors | None] = [None] * len(texts)

        def keep(index: int, vector: Vectors, tokens: Vectors, encoding: Encoding) -> None:
            # Both are lists built anew on every access: read each once.
            offsets, special = encoding.offsets, encoding.special_tokens_mask
            rows = [
                row for row, (_, end) in enumerate(offsets)
                if not special[row] and end > len(prefix)
            ]
            found[index] = TokenVectors(
                vector=vector,
                tokens=np.ascontiguousarray(tokens[rows], dtype=np.float32),
                spans=tuple(
                    (max(0, offsets[row][0] - len(prefix)), offsets[row][1] - len(prefix))
                    for row in rows
                ),
            )

        if texts:
            self._embed(
                session, [prefix + text for text in texts] if prefix else texts, keep=keep
            )
        return [item for item in found if item is not None]

    def embed_many(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Like :meth:`embed`, but batched even when the graph quantises activations per
        batch: a text's vector then depends slightly on its batch-mates. For callers that
        only rank the texts against each other (keyword candidates), where the speed-up of
        batching short texts (~20x) matters more than the last digits."""
        return self._embed_texts(texts, kind, self._loose_batch_size)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text uses as a passage (prefix and special tokens included), before
        truncation to ``max_tokens``."""
        _check_texts(texts)
        counter = self._untruncated()
        prefix = self._prefixes["passage"]
        inputs = [prefix + text for text in texts] if prefix else list(texts)
        return [len(encoding.ids) for encoding in counter.encode_batch(inputs)]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text``'s tokens, without special tokens or truncation."""
        _check_texts([text])
        encoding = self._untruncated().encode(text, add_special_tokens=False)
        return [(int(start), int(end)) for start, end in encoding.offsets]

    def _untruncated(self) -> Tokenizer:
        counter = self._counter
        if counter is None:
            with self._counter_lock:
                if self._counter is None:
                    self._counter = _load_tokenizer(self._tokenizer_path, None)
                counter = self._counter
        return counter

    def close(self) -> None:
        """Drop the session; ``embed`` then raises :class:`Unavailable`."""
        self._session = None
        self._counter = None

    def _embed(
        self,
        session: InferenceSession,
        texts: Sequence[str],
        batch_size: int | None = None,
        *,
        keep: Callable[[int, Vectors, Vectors, Encoding], None] | None = None,
    ) -> Vectors:
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        # Longest first: each batch is padded to its first member, and the biggest
        # allocation happens first so later batches reuse the memory.
        order = np.argsort(-lengths, kind="stable")
        result: Vectors | None = None
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])
            size = max(
                1,
                min(
                    batch_size or self._batch_size,
                    self._batch_tokens // width,
                    self._batch_attention // (width * width),
                ),
            )
            rows = order[start : start + size]
            start += size
            batch = [encodings[i] for i in rows]
            output, mask = self._forward(session, batch, width)
            vectors = self._pool(output, mask)
            if keep is not None and output.ndim == 3:
                for position, index in enumerate(rows):
                    size_of = len(batch[position].ids)
                    keep(int(index), vectors[position], output[position, :size_of],
                         batch[position])
            if result is None:
                result = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            result[rows] = vectors
        assert result is not None  # noqa: S101 - texts is never empty here
        return result

    def _forward(
        self, session: InferenceSession, batch: list[Encoding], width: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[Any]]:
        """The graph's raw output for a padded batch, and the attention mask."""
        ids = np.full((len(batch), width), self._pad_id, dtype=self._int_dtype)
        mask = np.zeros((len(batch), width), dtype=self._int_dtype)
        types = np.zeros((len(batch), width), dtype=self._int_dtype)
        for row, encoding in enumerate(batch):
            size = len(encoding.ids)
            ids[row, :size] = encoding.ids
            mask[row, :size] = 1
            types[row, :size] = encoding.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feed = {name: arrays[name] for name in self._inputs}
        try:
            (output,) = session.run([self._output], feed)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
            raise Unavailable(f"embedder {self._model_path.name} failed: {exc}") from exc
        array = np.asarray(output, dtype=np.float32)
        self._token_output = array.ndim == 3
        return array, mask

    def _pool(self, output: npt.NDArray[np.float32], mask: npt.NDArray[Any]) -> Vectors:
        if output.ndim == 3:
            if self._pooling == "cls":
                vectors = output[:, 0, :]
            else:
                weights = mask.astype(np.float32)
                summed = np.einsum("btd,bt->bd", output, weights)
                vectors = summed / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
        elif output.ndim == 2:
            vectors = output
        else:
            raise Unavailable(
                f"embedder {self._model_path.name} returned a {output.ndim}-d output; "
                "expected (batch, tokens, dim) or (batch, dim)"
            )
        if self._normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _batch_coupled(path: Path) -> bool:
    """Whether the graph quantises activations dynamically (per tensor, so per batch).

    Op types are plain strings in the ONNX protobuf, so a byte search over the mapped file
    answers without importing ``onnx`` into the server (~10 ms for a 23 MB graph).
    """
    try:
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            return any(data.find(op) >= 0 for op in _BATCH_COUPLED_OPS)
    except (OSError, ValueError):  # empty or unreadable: ORT reports it when loading
        return False


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise InvalidInput("texts must be a list of strings, not one string")
    if not all(isinstance(text, str) for text in texts):
        raise InvalidInput("texts must be strings")


def _load_tokenizer(path: Path, max_tokens: int | None) -> Tokenizer:
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises bare Exception
        raise ConfigurationError(f"cannot read tokenizer {path}: {exc}") from exc
    # tokenizer.json files often carry a fixed padding/truncation of their own (128 for
    # all-MiniLM-L6-v2); ours replace them: pad per batch, truncate to max_tokens.
    tokenizer.no_padding()
    if max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def _pad_id(tokenizer: Tokenizer) -> int:
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    return 0


def open_session(path: Path, threads: int, *, what: str = "ONNX model") -> InferenceSession:
    """An ONNX Runtime CPU session with :func:`session_options`; load errors become
    ``ConfigurationError("cannot load <what> <path>: ...")``. Shared by every ONNX family."""
    import onnxruntime as ort

    started = time.perf_counter()
    try:
        session = ort.InferenceSession(
            str(path), session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors
        raise ConfigurationError(f"cannot load {what} {path}: {exc}") from exc
    logger.debug(
        "onnx session created",
        extra={"model": str(path), "seconds": round(time.perf_counter() - started, 3)},
    )
    return session


def _graph_io(
    session: InferenceSession, path: Path
) -> tuple[tuple[str, ...], type[np.integer[Any]], str, int | None]:
    """Inputs to feed, their integer type, the output to read and its declared width."""
    inputs = session.get_inputs()
    names = tuple(arg.name for arg in inputs)
    unknown = [name for name in names if name not in _KNOWN_INPUTS]
    if unknown or "input_ids" not in names:
        raise ConfigurationError(
            f"{path}: unsupported graph inputs {list(names)}; expected input_ids, "
            "attention_mask and optionally token_type_ids"
        )
    types = {arg.type for arg in inputs}
    if types == {"tensor(int32)"}:
        dtype: type[np.integer[Any]] = np.int32
    elif types == {"tensor(int64)"}:
        dtype = np.int64
    else:
        raise ConfigurationError(f"{path}: graph inputs must be int32 or int64, not {types}")
    outputs = {arg.name: arg for arg in session.get_outputs()}
    chosen = next(
        (name for name in (*_SENTENCE_OUTPUTS, *_TOKEN_OUTPUTS) if name in outputs),
        next(iter(outputs)),
    )
    shape = outputs[chosen].shape
    declared = shape[-1] if shape and isinstance(shape[-1], int) else None
    return names, dtype, chosen, declared
