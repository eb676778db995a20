"""Cross-encoder reranking over ONNX Runtime.

A reranker model directory holds ``tokenizer.json`` (Hugging Face ``tokenizers`` format) and
``model.onnx`` (or ``onnx/model.onnx``, the layout of Optimum exports): the layout of BGE
rerankers and the ms-marco MiniLM cross-encoders. The graph takes ``input_ids`` and
``attention_mask`` (and ``token_type_ids`` when it declares it) and returns logits shaped
``(n,)``, ``(n, 1)`` or ``(n, 2)``; for two classes the second column (the "relevant" class) is
the score.

Each (query, passage) pair is encoded with the tokenizer's own pair template (for BERT:
``[CLS] query [SEP] passage [SEP]`` with token type 0 then 1), so any tokenizer.json works
without special cases here. Truncation to ``max_tokens`` is done by :func:`pair_budget`.

Vendor libraries (``onnxruntime``, ``tokenizers``) are imported when a model is built, never at
import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ragd.errors import ConfigurationError, Unavailable
from ragd.models.base import Reranker
from ragd.settings import ModelsSettings

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "RERANKERS",
    "OnnxCrossEncoder",
    "find_model_files",
    "load_reranker",
    "pair_budget",
    "reranker_loader",
]

logger = logging.getLogger(__name__)

#: Valid values of ``models.reranker``.
RERANKERS = ("none", "onnx")
TOKENIZER_FILE = "tokenizer.json"
#: Where the ONNX graph may live inside the model directory, in order of preference.
MODEL_FILES = ("model.onnx", "onnx/model.onnx")
DEFAULT_BATCH_SIZE = 16
#: A passage is cut to ``max_tokens * CHARS_PER_TOKEN`` characters before tokenisation. Real
#: tokens average 3-6 characters, so the cut never removes text that could fit in the window,
#: and a megabyte-long passage costs no more than a long one.
CHARS_PER_TOKEN = 32
_KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
_PAD_TOKENS = ("[PAD]", "<pad>")

FloatArray = npt.NDArray[np.float32]


def find_model_files(path: Path) -> tuple[Path, Path]:
    """Return ``(tokenizer.json, model.onnx)`` inside ``path``.

    Raises :class:`ConfigurationError` naming what is missing.
    """
    if not path.is_dir():
        raise ConfigurationError(f"reranker model directory not found: {path}")
    tokenizer = path / TOKENIZER_FILE
    model = next((path / name for name in MODEL_FILES if (path / name).is_file()), None)
    missing = []
    if not tokenizer.is_file():
        missing.append(TOKENIZER_FILE)
    if model is None:
        missing.append(" or ".join(MODEL_FILES))
    if missing or model is None:
        raise ConfigurationError(
            f"reranker model directory {path} lacks {', '.join(missing)} "
            "(expected a Hugging Face tokenizer.json and an ONNX cross-encoder)"
        )
    return tokenizer, model


def pair_budget(query_len: int, passage_len: int, budget: int) -> tuple[int, int]:
    """How many tokens of the query and of the passage fit in ``budget`` tokens.

    ``budget`` excludes the special tokens of the pair template. Longest-first truncation:
    a query that takes at most half the budget is kept whole and only the passage is cut
    (Hugging Face's ``only_second``); when both are longer than half, each keeps half, the query
    taking the odd token. The result is the same as Hugging Face ``longest_first``, computed
    in one step.
    """
    if budget < 2:
        raise ValueError("budget must leave room for at least one token of each text")
    if query_len + passage_len <= budget:
        return query_len, passage_len
    keep_query = min(query_len, max(budget - passage_len, (budget + 1) // 2))
    return keep_query, min(passage_len, budget - keep_query)


@contextmanager
def _vendor_errors(error: type[Exception], what: str) -> Iterator[None]:
    """Translate errors of ONNX Runtime and tokenizers (which raise bare ``Exception`` or
    pybind11 classes) into ragd errors at this boundary."""
    try:
        yield
    except (ConfigurationError, Unavailable):
        raise
    except Exception as exc:
        raise error(f"{what}: {exc}") from exc


def _sigmoid(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # exp of a non-positive number never overflows.
    e = np.exp(-np.abs(values))
    result: npt.NDArray[np.float64] = np.where(values >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return result


def _scores_from_logits(logits: npt.NDArray[Any], n: int) -> npt.NDArray[np.float64]:
    if logits.ndim == 1 and logits.shape[0] == n:
        return logits.astype(np.float64)
    if logits.ndim == 2 and logits.shape[0] == n and logits.shape[1] in (1, 2):
        # (n, 1): the logit; (n, 2): the "relevant" class.
        return logits[:, -1].astype(np.float64)
    raise ConfigurationError(
        f"unsupported reranker output shape {tuple(logits.shape)} for {n} pairs; "
        "expected (n,), (n, 1) or (n, 2)"
    )


def _load_tokenizer(tokenizer_file: Path) -> tuple[Tokenizer, int]:
    from tokenizers import Tokenizer

    with _vendor_errors(ConfigurationError, f"cannot read reranker tokenizer {tokenizer_file}"):
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    padding = tokenizer.padding
    pad_id = padding.get("pad_id") if padding else None
    if pad_id is None:
        found = (tokenizer.token_to_id(token) for token in _PAD_TOKENS)
        pad_id = next((token_id for token_id in found if token_id is not None), 0)
    # Truncation is ours (pair_budget) and padding is per batch; a tokenizer.json that ships
    # its own settings must not interfere.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer, int(pad_id)


def _open_session(model_file: Path, threads: int) -> Any:
    from ragd.models.onnx_embedder import open_session

    return open_session(model_file, threads, what="reranker model")


class OnnxCrossEncoder:
    """A cross-encoder reranker: scores each (query, passage) pair with one ONNX forward pass.

    Built (tokenizer read, ONNX session opened) by its constructor, which is blocking: the
    model registry calls it from its thread pool. Scores are raw logits, or probabilities with
    ``sigmoid=True``; higher is more relevant either way.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_tokens: int = 512,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int = 0,
        sigmoid: bool = False,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        tokenizer_file, model_file = find_model_files(path)
        self._name = name or f"onnx:{path.name}"
        self._batch_size = batch_size
        self._sigmoid = sigmoid
        self._max_tokens = max_tokens
        tokenizer, self._pad_id = _load_tokenizer(tokenizer_file)
        self._tokenizer: Tokenizer | None = tokenizer
        specials = tokenizer.num_special_tokens_to_add(is_pair=True)
        self._budget = max_tokens - specials
        if self._budget < 2:
            raise ConfigurationError(
                f"reranker max_tokens={max_tokens} leaves no room for text after the "
                f"{specials} special tokens of a pair"
            )
        self._session: Any = _open_session(model_file, threads)
        inputs = {node.name: node.type for node in self._session.get_inputs()}
        unknown = sorted(set(inputs) - _KNOWN_INPUTS)
        if "input_ids" not in inputs or unknown:
            raise ConfigurationError(
                f"reranker model {model_file} has inputs {sorted(inputs)}; expected input_ids, "
                "attention_mask and optionally token_type_ids"
            )
        self._input_names = tuple(sorted(inputs))
        self._int_dtype = np.int32 if inputs["input_ids"] == "tensor(int32)" else np.int64
        outputs = self._session.get_outputs()
        chosen = next((out for out in outputs if out.name == "logits"), outputs[0])
        self._output_name: str = chosen.name
        shape = list(chosen.shape)
        if len(shape) > 2 or (len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 2):
            raise ConfigurationError(
                f"reranker model {model_file} output {chosen.name!r} has shape {shape}; "
                "expected (n,), (n, 1) or (n, 2) logits"
            )
        logger.info(
            "reranker loaded",
            extra={"model": self._name, "max_tokens": max_tokens, "inputs": self._input_names},
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def encode_pairs(self, query: str, passages: Sequence[str]) -> list[Encoding]:
        """The tokenizer's pair encodings, truncated to ``max_tokens`` (see :func:`pair_budget`)."""
        tokenizer = self._tokenizer
        if tokenizer is None:
            raise Unavailable("the reranker is closed")
        limit = self._max_tokens * CHARS_PER_TOKEN
        with _vendor_errors(Unavailable, "reranker tokenisation failed"):
            query_len = len(tokenizer.encode(query, add_special_tokens=False).ids)
            bodies = tokenizer.encode_batch(
                [passage[:limit] for passage in passages], add_special_tokens=False
            )
            queries: dict[int, Encoding] = {}  # by kept length; usually one entry
            pairs = []
            for body in bodies:
                keep_query, keep_passage = pair_budget(query_len, len(body.ids), self._budget)
                head = queries.get(keep_query)
                if head is None:
                    head = tokenizer.encode(query, add_special_tokens=False)
                    if keep_query < query_len:
                        head.truncate(keep_query)
                    queries[keep_query] = head
                if keep_passage < len(body.ids):
                    body.truncate(keep_passage)
                pairs.append(tokenizer.post_process(head, body, add_special_tokens=True))
        return pairs

    def score(self, query: str, passages: Sequence[str]) -> FloatArray:
        """One score per passage, in input order, as float32."""
        if not passages:
            return np.zeros(0, dtype=np.float32)
        session = self._session
        if session is None:
            raise Unavailable("the reranker is closed")
        pairs = self.encode_pairs(query, passages)
        # Similar lengths share a batch so padding stays small; scores go back to input order.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i].ids))
        scores = np.empty(len(pairs), dtype=np.float64)
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            feed = self._feed([pairs[i] for i in chunk])
            with _vendor_errors(Unavailable, "reranker inference failed"):
                (logits,) = session.run([self._output_name], feed)
            scores[chunk] = _scores_from_logits(np.asarray(logits), len(chunk))
        if self._sigmoid:
            scores = _sigmoid(scores)
        return scores.astype(np.float32)

    def _feed(self, batch: Sequence[Encoding]) -> dict[str, npt.NDArray[Any]]:
        width = max(len(encoding.ids) for encoding in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=self._int_dtype)
        mask = np.zeros((len(batch), width), dtype=self._int_dtype)
        types = np.zeros((len(batch), width), dtype=self._int_dtype)
        for row, encoding in enumerate(batch):
            size = len(encoding.ids)
            ids[row, :size] = encoding.ids
            mask[row, :size] = encoding.attention_mask
            types[row, :size] = encoding.type_ids
        arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: arrays[name] for name in self._input_names}

    def close(self) -> None:
        """Drop the ONNX session and the tokenizer; later calls raise :class:`Unavailable`."""
        self._session = None
        self._tokenizer = None


def reranker_loader(settings: ModelsSettings) -> Callable[[], Reranker] | None:
    """A zero-argument loader for the configured reranker, or None when ``reranker = none``.

    Checks now (cheaply, without loading) that the model directory has its files, so a wrong
    path stops the process at startup; the loader itself does the expensive work on first use.
    """
    if settings.reranker == "none":
        return None
    if settings.reranker == "onnx":
        path = settings.reranker_path
        if path is None:
            raise ConfigurationError("models.reranker=onnx needs models.reranker_path")
        path = path.expanduser()
        find_model_files(path)
        max_tokens, threads = settings.reranker_max_tokens, settings.inference_threads

        def load() -> Reranker:
            return OnnxCrossEncoder(path, max_tokens=max_tokens, threads=threads)

        return load
    raise ConfigurationError(
        f"unknown reranker {settings.reranker!r}; valid values: {', '.join(RERANKERS)}"
    )


def load_reranker(settings: ModelsSettings) -> Reranker | None:
    """Build the configured reranker now (blocking), or None when ``reranker = none``."""
    loader = reranker_loader(settings)
    return loader() if loader is not None else None
