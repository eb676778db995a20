"""The model runtime: embedding throughput (raw ONNX Runtime vs the registry), first-use
latency, memory, and keyword extraction latency, for the default embedder.

The default embedder is all-MiniLM-L6-v2, prepared by ``ragd.models.minilm.prepare`` into a
temporary model dir first (timed and reported, but outside every other figure). Every part
runs in a fresh child interpreter (this file with ``--child NAME``), so no part inherits
another's threads, heap or loaded libraries; the parent only orchestrates and aggregates.

1. **Throughput** (one child, the same process for every mode, interleaved order, ``runs``
   repetitions, medians) on ``python-faq/corpus.jsonl`` (field ``text``; by default an
   evenly strided sample of the corpus to stay inside ``make bench``'s time budget,
   ``--docs all`` for every document):

   * ``raw``: a bare ``onnxruntime.InferenceSession`` on the prepared ``model.onnx`` plus
     ``tokenizers``, driven by this file's own loop with the same per-call batching policy as
     ``OnnxEmbedder`` (longest first; at most 32 texts / 512 tokens / 128x128 attention per
     run, and one text per run for a dynamically quantised graph, whose activation scale
     spans the batch), mean pooling over the mask and L2 normalisation. The same session
     options as ragd (intra-op threads = ``models.inference_threads`` or every core, one
     inter-op thread, sequential, all graph optimisations);
   * ``one_call``: ``await runtime.embed(docs)``, one request with every text (the
     micro-batcher splits it into ``max_batch`` chunks);
   * ``concurrent``: 8 asyncio callers, each sending requests of 16 texts one after the other
     (they share the micro-batcher, which coalesces them into batches of up to ``max_batch``).

   Sentences/s and tokens/s (tokens: ``embedder.count_tokens`` capped at ``max_tokens``, the
   work actually done), and the ratio registry/raw (target >= 0.9). Vectors of the three
   modes are compared (min cosine) to show they compute the same thing.
2. **First use** (``first_use_runs`` children each): building the runtime loads nothing;
   then the time of the first ``runtime.embed(["x"])`` (the lazy load: imports of ONNX
   Runtime/tokenizers, manifest and file hash check, session creation, probe run) and of the
   second call, (a) on an already prepared model dir, (b) on an empty one (the load prepares
   the model in a child process first).
3. **Memory** (one child, psutil RSS): bare interpreter, services built with
   ``open_services`` (nothing loaded), embedder loaded, keywords run on a few docs, 1,000
   passages embedded (target <= 600 MB, with the peak RSS), after
   ``registry.unload_all`` and after the memory manager's emergency cleanup, and after a
   reload (one text embedded again).
4. **Keywords** (one child, ``memory.keyword_cache_mb=0`` so every call computes):
   ``runtime.keywords`` on the first ``keyword_docs`` docs, p50/p95, after one unmeasured
   warm-up call (reported too: it includes loading the embedder).

Targets are reported, never enforced.

    .venv/bin/python bench/models.py [--docs N|all] [--runs 3] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "models"
CORPUS = Path(os.environ.get("RAGD_BENCH_CORPUS", "/work/shared/eval/python-faq/corpus.jsonl"))
if not CORPUS.is_file():  # the repo's sibling layout (../shared/eval/...)
    CORPUS = common.REPO_ROOT.parent / "shared" / "eval" / "python-faq" / "corpus.jsonl"

RATIO_TARGET = 0.9
RSS_TARGET_MB = 600.0
MODES = ("raw", "one_call", "concurrent")
CHILD_TIMEOUT_S = 1800.0  # bounds a wedged child; a full-corpus throughput run takes ~11 min
MIB = 2**20

DEFAULTS: dict[str, Any] = {
    # Strided sample: ~12 s a pass on 2 cores (~55 docs/s at ~220 tokens a doc), so the nine
    # passes fit make bench's ~5 min budget; --docs all takes ~70 s a pass (~11 min).
    "docs": 640,
    "runs": 3,
    "callers": 8,
    "request_texts": 16,
    "first_use_runs": 3,
    "memory_passages": 1000,
    "memory_keyword_docs": 5,
    "keyword_docs": 100,
}
QUICK: dict[str, Any] = {
    **DEFAULTS,
    "docs": 64,
    "runs": 2,
    "first_use_runs": 1,
    "keyword_docs": 30,
}

# OnnxEmbedder's per-run limits (see ragd.models.onnx_embedder); re-stated here so the raw
# loop is ours, not ragd's code.
RAW_BATCH_SIZE = 32
RAW_BATCH_TOKENS = 512
RAW_BATCH_ATTENTION = 128 * 128
RAW_COUPLED_OPS = (b"DynamicQuantizeLinear", b"DynamicQuantizeMatMul")


# -- helpers shared by the children -------------------------------------------------------------


def _rss_mb() -> float:
    return round(psutil.Process().memory_info().rss / MIB, 1)


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _load_docs(path: Path) -> list[str]:
    docs = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                text = json.loads(line).get("text")
                if isinstance(text, str) and text.strip():
                    docs.append(text)
    if not docs:
        raise RuntimeError(f"no documents with a 'text' field in {path}")
    return docs


def _strided(docs: Sequence[str], count: int | None) -> list[str]:
    """``count`` docs evenly spread over the corpus (its sections differ in length)."""
    if count is None or count >= len(docs):
        return list(docs)
    return [docs[(index * len(docs)) // count] for index in range(count)]


def _settings(data_dir: Path, cache_dir: Path, **groups: dict[str, Any]) -> Any:
    from ragd.settings import load_settings

    models = {"cache_dir": cache_dir, **groups.pop("models", {})}
    return load_settings(
        None, data_dir=data_dir, jwt_secret=common.bench_secret(), bootstrap_admin=False,
        models=models, **groups,
    )


def _runtime(settings: Any) -> Any:
    from ragd.container import build_runtime
    from ragd.ops.metrics import Metrics

    return build_runtime(settings, Metrics())


def _states(runtime: Any) -> dict[str, str]:
    return {stats.name: stats.state for stats in runtime.registry.stats()}


# -- child: prepare -----------------------------------------------------------------------------


def child_prepare(args: dict[str, Any]) -> dict[str, Any]:
    from ragd.models import minilm

    started = time.perf_counter()
    prepared = minilm.prepare(Path(args["cache_dir"]), threads=int(args.get("threads", 0)))
    seconds = time.perf_counter() - started
    manifest = prepared.manifest
    return {
        "seconds": round(seconds, 3),
        "reused": prepared.reused,
        "path": str(prepared.path),
        "variant": prepared.variant,
        "reason": manifest.get("reason"),
        "cosine_mean": manifest.get("cosine_mean"),
        "cosine_min": manifest.get("cosine_min"),
        "timings": manifest.get("timings"),
        "sample_sentences_per_second": manifest.get("sentences_per_second"),
        "model_bytes": prepared.model_path.stat().st_size,
        "peak_rss_mb": _peak_rss_mb(),
    }


# -- child: throughput --------------------------------------------------------------------------


class RawEmbedder:
    """all-MiniLM-L6-v2 straight on ONNX Runtime + tokenizers: the fastest plain use."""

    def __init__(self, model: Path, tokenizer: Path, *, max_tokens: int, threads: int) -> None:
        import numpy as np
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self.options = {
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "execution_mode": "sequential",
            "graph_optimization_level": "ORT_ENABLE_ALL",
        }
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.inputs = [arg.name for arg in self.session.get_inputs()]
        int32 = all(arg.type == "tensor(int32)" for arg in self.session.get_inputs())
        self.int_dtype = np.int32 if int32 else np.int64
        self.output = self.session.get_outputs()[0].name
        data = model.read_bytes()
        self.coupled = any(op in data for op in RAW_COUPLED_OPS)
        self.max_batch = 1 if self.coupled else RAW_BATCH_SIZE
        self.runs = 0

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        order = np.argsort(-lengths, kind="stable")
        out: Any = None
        start = 0
        while start < len(order):
            width = int(lengths[order[start]])
            size = max(1, min(self.max_batch, RAW_BATCH_TOKENS // width,
                              RAW_BATCH_ATTENTION // (width * width)))
            rows = order[start:start + size]
            start += size
            ids = np.full((len(rows), width), self.pad_id, dtype=self.int_dtype)
            mask = np.zeros((len(rows), width), dtype=self.int_dtype)
            types = np.zeros((len(rows), width), dtype=self.int_dtype)
            for row, index in enumerate(rows):
                encoding = encodings[index]
                ids[row, :len(encoding.ids)] = encoding.ids
                mask[row, :len(encoding.ids)] = 1
                types[row, :len(encoding.ids)] = encoding.type_ids
            arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            (states,) = self.session.run([self.output], {n: arrays[n] for n in self.inputs})
            self.runs += 1
            weights = mask.astype(np.float32)
            pooled = np.einsum("btd,bt->bd", states, weights) / np.maximum(
                weights.sum(axis=1, keepdims=True), 1.0
            )
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out


async def _throughput(args: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ragd.models import minilm

    root = Path(args["tmp"])
    settings = _settings(root / "throughput-data", Path(args["cache_dir"]))
    models = settings.models
    corpus = _load_docs(Path(args["corpus"]))
    docs = _strided(corpus, args["docs"])
    runtime = _runtime(settings)
    try:
        await runtime.embed(["warm-up: load the embedder"])
        embedder = await runtime.registry.get("embedder")
        max_tokens = embedder.info.max_tokens
        corpus_tokens = sum(min(n, max_tokens) for n in embedder.count_tokens(corpus))
        tokens = sum(min(n, max_tokens) for n in embedder.count_tokens(docs))
        session = getattr(embedder, "_session", None)  # private: only to report its threads
        ragd_options = None
        if session is not None:
            opts = session.get_session_options()
            ragd_options = {"intra_op_num_threads": opts.intra_op_num_threads,
                            "inter_op_num_threads": opts.inter_op_num_threads}
        target = minilm.prepared_dir(settings.model_cache_dir, quantize=models.quantize)
        raw = RawEmbedder(target / "model.onnx", target / "tokenizer.json",
                          max_tokens=max_tokens, threads=models.inference_threads)
        raw.embed(docs[:4])  # first-run allocations, as OnnxEmbedder's load-time probe does

        callers, per_request = int(args["callers"]), int(args["request_texts"])
        requests = [docs[i:i + per_request] for i in range(0, len(docs), per_request)]

        async def concurrent() -> Any:
            parts: list[Any] = [None] * len(requests)

            async def caller(index: int) -> None:
                for number in range(index, len(requests), callers):
                    parts[number] = await runtime.embed(requests[number])

            await asyncio.gather(*(caller(index) for index in range(callers)))
            return np.concatenate(parts)

        async def one_call() -> Any:
            return await runtime.embed(docs)

        async def raw_loop() -> Any:
            return raw.embed(docs)

        passes: dict[str, Callable[[], Any]] = {
            "raw": raw_loop, "one_call": one_call, "concurrent": concurrent,
        }
        samples: list[dict[str, Any]] = []
        vectors: dict[str, Any] = {}
        for rep in range(int(args["runs"])):
            order = MODES[rep % len(MODES):] + MODES[:rep % len(MODES)]  # rotate
            for mode in order:
                gc.collect()
                stats = runtime.batcher.stats
                before = (stats.batches, stats.texts)
                cpu = time.process_time()
                started = time.perf_counter()
                result = await passes[mode]()
                seconds = time.perf_counter() - started
                cpu = time.process_time() - cpu
                sample = {"rep": rep + 1, "mode": mode, "seconds": round(seconds, 4),
                          "cpu_seconds": round(cpu, 3),
                          "sentences_per_s": round(len(docs) / seconds, 2),
                          "tokens_per_s": round(tokens / seconds, 1)}
                if mode != "raw":
                    batches = stats.batches - before[0]
                    sample["batches"] = batches
                    sample["mean_batch"] = round((stats.texts - before[1]) / max(batches, 1), 1)
                samples.append(sample)
                vectors.setdefault(mode, result)
        agreement = {
            mode: round(float(np.min(np.sum(vectors["raw"] * vectors[mode], axis=1))), 6)
            for mode in ("one_call", "concurrent")
        }
        registry_stats = {s.name: s for s in runtime.registry.stats()}["embedder"]
        return {
            "corpus": {"path": str(args["corpus"]), "docs": len(corpus),
                       "tokens_capped": corpus_tokens},
            "sample": {"docs": len(docs), "tokens_capped": tokens,
                       "mean_tokens": round(tokens / len(docs), 1),
                       "selection": "all" if len(docs) == len(corpus) else "evenly strided"},
            "max_tokens": max_tokens,
            "threads": {
                "cpu_count": os.cpu_count(),
                "settings_inference_threads": models.inference_threads,
                "raw_session": raw.options,
                "ragd_session": ragd_options,
                "pool_workers": models.pool_workers,
                "embedder_concurrency": runtime.registry.concurrency("embedder"),
                "batch_window_ms": models.batch_window_ms,
                "max_batch": models.max_batch,
            },
            "raw_policy": {"graph_batch_coupled": raw.coupled, "texts_per_run": raw.max_batch,
                           "tokens_per_run": RAW_BATCH_TOKENS,
                           "attention_per_run": RAW_BATCH_ATTENTION},
            "variant": embedder.info.variant,
            "concurrent": {"callers": callers, "texts_per_request": per_request,
                           "requests": len(requests)},
            "min_cosine_vs_raw": agreement,
            "embedder_batch_latency_ms": {"p50": registry_stats.p50_ms,
                                          "p95": registry_stats.p95_ms},
            "samples": samples,
        }
    finally:
        await runtime.close()


def child_throughput(args: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_throughput(args))


# -- child: first use ---------------------------------------------------------------------------


async def _first_use(args: dict[str, Any]) -> dict[str, Any]:
    from ragd.models import minilm

    root = Path(args["tmp"])
    cache_dir = Path(args["cache_dir"])
    settings = _settings(root / "first-use-data", cache_dir)
    prepared_before = minilm.prepared_dir(cache_dir).is_dir()
    runtime = _runtime(settings)
    try:
        states_before = _states(runtime)
        onnxruntime_imported = "onnxruntime" in sys.modules
        rss_before = _rss_mb()
        started = time.perf_counter()
        await runtime.embed(["x"])
        first = time.perf_counter() - started
        started = time.perf_counter()
        await runtime.embed(["x"])
        second = time.perf_counter() - started
        stats = {s.name: s for s in runtime.registry.stats()}["embedder"]
        return {
            "model_dir_prepared_before": prepared_before,
            "states_before": states_before,
            "onnxruntime_imported_before": onnxruntime_imported,
            "first_s": round(first, 4),
            "second_s": round(second, 5),
            "registry_load_s": None if stats.load_seconds is None else round(stats.load_seconds, 4),
            "rss_before_mb": rss_before,
            "rss_after_mb": _rss_mb(),
            "variant": runtime.embedder_info.variant if runtime.embedder_info else None,
        }
    finally:
        await runtime.close()


def child_first_use(args: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_first_use(args))


# -- child: memory ------------------------------------------------------------------------------


async def _memory(args: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    from ragd.container import open_services

    def stage(name: str, **extra: Any) -> None:
        stages.append({"stage": name, "rss_mb": _rss_mb(), "peak_rss_mb": _peak_rss_mb(),
                       **extra})

    root = Path(args["tmp"])
    settings = _settings(root / "memory-data", Path(args["cache_dir"]))
    corpus = _load_docs(Path(args["corpus"]))
    count = int(args["passages"])
    passages = (corpus * (count // len(corpus) + 1))[:count]
    extra: dict[str, Any] = {}
    async with open_services(settings) as services:
        runtime = services.runtime
        stage("services built (open_services), nothing loaded", states=_states(runtime))
        await runtime.embed(["load the embedder"])
        stage("embedder loaded (1 text embedded)", states=_states(runtime))
        for text in corpus[: int(args["keyword_docs"])]:
            await runtime.keywords(text)
        stage(f"keywords run on {args['keyword_docs']} docs", states=_states(runtime))
        kept = []
        started = time.perf_counter()
        for start in range(0, len(passages), 100):
            kept.append(await runtime.embed(passages[start:start + 100]))
        seconds = time.perf_counter() - started
        stage(f"{len(passages)} passages embedded", seconds=round(seconds, 2),
              vectors=sum(len(part) for part in kept))
        del kept
        before = _rss_mb()
        unloaded = await runtime.registry.unload_all("bench")
        # The registry's own per-model figures, kept apart from the measured drop: unload_all
        # unloads concurrently and each unload's RSS window spans the others', so every
        # model is credited with (about) the whole drop.
        stage("after registry.unload_all", states=_states(runtime),
              freed_mb=round(before - _rss_mb(), 1),
              registry_reported_freed_mb={r.name: round(r.freed_bytes / MIB, 1)
                                          for r in unloaded})
        event = await services.memory.cleanup("emergency", "bench")
        stage("after memory emergency cleanup", freed_mb=round(event.freed_bytes / MIB, 1))
        await runtime.embed(["load the embedder again"])
        stage("embedder reloaded (1 text embedded)", states=_states(runtime))
        for _ in range(int(args.get("reload_cycles", 3))):
            await runtime.registry.unload_all("bench")
            await runtime.embed(["load the embedder again"])
        stage(f"after {args.get('reload_cycles', 3)} more unload/reload cycles",
              states=_states(runtime))
        extra["glibc_malloc_trim"] = sys.platform.startswith("linux")
    return extra


def child_memory(args: dict[str, Any]) -> dict[str, Any]:
    stages: list[dict[str, Any]] = [{"stage": "bare interpreter (ragd not imported)",
                                     "rss_mb": _rss_mb(),
                                     "peak_rss_mb": _peak_rss_mb()}]
    extra = asyncio.run(_memory(args, stages))
    return {"stages": stages, "passages": int(args["passages"]), **extra}


# -- child: keywords ----------------------------------------------------------------------------


async def _keywords(args: dict[str, Any]) -> dict[str, Any]:
    from ragd.models.keywords import candidates

    root = Path(args["tmp"])
    settings = _settings(root / "keywords-data", Path(args["cache_dir"]),
                         memory={"keyword_cache_mb": 0})
    docs = _load_docs(Path(args["corpus"]))[: int(args["docs"])]
    runtime = _runtime(settings)
    try:
        started = time.perf_counter()
        await runtime.keywords("Warm-up: how do I reverse a list in Python without copying it?")
        warmup = time.perf_counter() - started
        latencies = []
        results = 0
        for text in docs:
            started = time.perf_counter()
            found = await runtime.keywords(text)
            latencies.append(time.perf_counter() - started)
            results += len(found)
        cache = runtime.keyword_cache.stats()
        counts = [len(candidates(text)) for text in docs]
        return {
            "docs": len(docs),
            "warmup_first_call_s": round(warmup, 4),
            "latency": common.latency_summary(latencies),
            "keywords_returned": results,
            "candidates_per_doc": {"median": statistics.median(counts), "max": max(counts)},
            "chars_per_doc": {"median": statistics.median(len(t) for t in docs),
                              "max": max(len(t) for t in docs)},
            "top_n": settings.models.keywords_top_n,
            "cache": {"max_bytes": cache.max_bytes, "hits": cache.hits, "entries": cache.entries},
        }
    finally:
        await runtime.close()


def child_keywords(args: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_keywords(args))


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "prepare": child_prepare,
    "throughput": child_throughput,
    "first_use": child_first_use,
    "memory": child_memory,
    "keywords": child_keywords,
}


# -- the parent ---------------------------------------------------------------------------------


def _child(name: str, args: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Run one part in a fresh interpreter; its JSON, plus the launch-to-exit wall time."""
    command = [common.ragd_python(), str(Path(__file__).resolve()), "--child", name,
               json.dumps(args, default=str)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                          env=common.server_env(), timeout=CHILD_TIMEOUT_S, check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"child {name} failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["child_wall_s"] = round(wall, 3)
    return result


def _median(values: Sequence[float | None], digits: int = 4) -> float | None:
    clean = [value for value in values if value is not None]
    return round(statistics.median(clean), digits) if clean else None


def _aggregate_throughput(data: dict[str, Any]) -> dict[str, Any]:
    by_mode: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for sample in data["samples"]:
        by_mode[sample["mode"]].append(sample)
    modes = {}
    for mode, samples in by_mode.items():
        modes[mode] = {
            "seconds": common.summarize([s["seconds"] for s in samples]),
            "sentences_per_s": _median([s["sentences_per_s"] for s in samples], 2),
            "tokens_per_s": _median([s["tokens_per_s"] for s in samples], 1),
            "cpu_seconds": _median([s["cpu_seconds"] for s in samples], 3),
        }
        if mode != "raw":
            modes[mode]["mean_batch"] = _median([s["mean_batch"] for s in samples], 1)
    raw = modes["raw"]["sentences_per_s"]
    ratios: dict[str, Any] = {}
    for mode in ("one_call", "concurrent"):
        value = modes[mode]["sentences_per_s"]
        paired = [
            raw_sample["seconds"] / reg["seconds"]
            for raw_sample, reg in zip(by_mode["raw"], by_mode[mode], strict=True)
        ]
        ratios[mode] = {
            "ratio_of_medians": round(value / raw, 3) if raw and value else None,
            "paired_median": _median(paired, 3),
            "paired": [round(p, 3) for p in paired],
        }
    return {"modes": modes, "ratio_registry_over_raw": ratios}


def run(quick: bool = False, **options: Any) -> dict[str, Any]:
    cfg = {**(QUICK if quick else DEFAULTS),
           **{key: value for key, value in options.items() if value is not None}}
    cfg["runs"] = max(1, min(int(cfg["runs"]), 20))
    cfg["first_use_runs"] = max(1, min(int(cfg["first_use_runs"]), 20))
    cfg["memory_passages"] = max(1, min(int(cfg["memory_passages"]), 100_000))
    docs = None if cfg["docs"] in (None, "all", 0) else max(1, int(cfg["docs"]))
    started = time.perf_counter()
    result: dict[str, Any] = {
        "bench": NAME,
        "config": {**cfg, "docs": docs or "all", "corpus": str(CORPUS),
                   "embedder": "minilm (ragd default: all-MiniLM-L6-v2, quantize=true)",
                   "settings": "ragd defaults, except models.cache_dir=<tmp>/models-cache "
                               "and keyword_cache_mb=0 for the keyword part"},
        "environment": common.environment(),
        "targets": {"ratio_min": RATIO_TARGET, "rss_after_1000_passages_mb_max": RSS_TARGET_MB,
                    "judged_on": "median"},
    }
    with tempfile.TemporaryDirectory(prefix="ragd-bench-models-") as tmp:
        root = Path(tmp)
        cache_dir = root / "models-cache"
        base = {"tmp": str(root), "corpus": str(CORPUS)}
        print("[models] preparing the model", file=sys.stderr, flush=True)
        result["prepare"] = _child("prepare", {**base, "cache_dir": str(cache_dir)}, root)

        print("[models] first use", file=sys.stderr, flush=True)
        first_use: dict[str, list[dict[str, Any]]] = {"prepared": [], "empty": []}
        for index in range(cfg["first_use_runs"]):
            first_use["prepared"].append(
                _child("first_use", {**base, "cache_dir": str(cache_dir)}, root))
            empty = root / f"empty-{index}"
            first_use["empty"].append(_child("first_use", {**base, "cache_dir": str(empty)}, root))
        result["first_use"] = {
            kind: {
                "first_s": common.summarize([s["first_s"] for s in samples]),
                "second_s": common.summarize([s["second_s"] for s in samples], digits=5),
                "registry_load_s": common.summarize(
                    [s["registry_load_s"] for s in samples if s["registry_load_s"] is not None]),
                "models_loaded_before": sorted({
                    name for s in samples for name, state in s["states_before"].items()
                    if state != "not_loaded"}),
                "samples": samples,
            }
            for kind, samples in first_use.items()
        }

        print("[models] memory", file=sys.stderr, flush=True)
        result["memory"] = _child("memory", {
            **base, "cache_dir": str(cache_dir), "passages": cfg["memory_passages"],
            "keyword_docs": cfg["memory_keyword_docs"]}, root)

        print("[models] keywords", file=sys.stderr, flush=True)
        result["keywords"] = _child("keywords", {
            **base, "cache_dir": str(cache_dir), "docs": cfg["keyword_docs"]}, root)

        print(f"[models] throughput ({docs or 'all'} docs x {cfg['runs']} runs x 3 modes)",
              file=sys.stderr, flush=True)
        data = _child("throughput", {
            **base, "cache_dir": str(cache_dir), "docs": docs, "runs": cfg["runs"],
            "callers": cfg["callers"], "request_texts": cfg["request_texts"]}, root)
        result["throughput"] = {**data, **_aggregate_throughput(data)}
    result["elapsed_s"] = round(time.perf_counter() - started, 2)
    result["summary"] = summary_rows(result)
    return result


def _stage(result: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next((s for s in result["memory"]["stages"] if s["stage"].startswith(prefix)), {})


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tp = result["throughput"]
    sample = tp["sample"]
    where = (f"{sample['docs']} docs ({sample['selection']} of {tp['corpus']['docs']}), "
             f"{sample['mean_tokens']} tokens/doc, "
             f"{tp['threads']['raw_session']['intra_op_num_threads']} ORT threads both")
    for mode, label in (("raw", "raw ONNX Runtime loop"), ("one_call", "registry, one call"),
                        ("concurrent", "registry, 8 callers x 16 texts")):
        part = tp["modes"][mode]
        note = where if mode == "raw" else f"mean batch {part.get('mean_batch')} texts"
        rows.append(common.row(f"embed throughput, {label}", part["sentences_per_s"],
                               "sentences/s", note=f"{part['tokens_per_s']} tokens/s; {note}"))
    for mode, label in (("one_call", "one call"), ("concurrent", "8 callers x 16")):
        ratio = tp["ratio_registry_over_raw"][mode]
        rows.append(common.row(
            f"throughput ratio registry/raw ({label})", ratio["ratio_of_medians"], "",
            target=f">= {RATIO_TARGET}",
            status=common.verdict(ratio["ratio_of_medians"], RATIO_TARGET, lower_is_better=False),
            note=f"paired per rep {ratio['paired']}; min cosine vs raw "
                 f"{tp['min_cosine_vs_raw'][mode]}",
        ))
    prep = result["prepare"]
    rows.append(common.row("model preparation (minilm.prepare)", prep["seconds"], "s",
                           note=f"{prep['variant']}, cosine {prep['cosine_mean']} vs fp32"))
    for kind, label in (("prepared", "prepared model dir"), ("empty", "empty model dir")):
        part = result["first_use"][kind]
        first, second = part["first_s"], part["second_s"]
        rows.append(common.row(
            f"first-use latency ({label}), median", first.get("median"), "s",
            note=f"min {first.get('min')} / max {first.get('max')}, n={first.get('n')}; "
                 f"2nd call {second.get('median')} s"
                 + ("; includes preparation in a child" if kind == "empty" else ""),
        ))
    loaded = _stage(result, "services built")
    after = _stage(result, f"{result['memory']['passages']} passages")
    rows.append(common.row("RSS, services built (nothing loaded)", loaded.get("rss_mb"), "MB"))
    rows.append(common.row("RSS, embedder loaded", _stage(result, "embedder loaded").get("rss_mb"),
                           "MB"))
    rows.append(common.row(
        f"RSS after embedder + keywords + {result['memory']['passages']} passages",
        after.get("rss_mb"), "MB", target=f"<= {RSS_TARGET_MB:.0f}",
        status=common.verdict(after.get("rss_mb"), RSS_TARGET_MB),
        note=f"peak {after.get('peak_rss_mb')} MB; embedded in {after.get('seconds')} s",
    ))
    rows.append(common.row("RSS after unload_all + emergency cleanup",
                           _stage(result, "after memory emergency").get("rss_mb"), "MB",
                           note=f"after unload_all alone: "
                                f"{_stage(result, 'after registry').get('rss_mb')} MB; reloaded: "
                                f"{_stage(result, 'embedder reloaded').get('rss_mb')} MB, after "
                                f"3 more cycles: {_stage(result, 'after 3').get('rss_mb')} MB"))
    kw = result["keywords"]
    rows.append(common.row(
        "keyword extraction p50", kw["latency"].get("p50_ms"), "ms",
        note=f"p95 {kw['latency'].get('p95_ms')} ms, max {kw['latency'].get('max_ms')} ms; "
             f"{kw['docs']} docs, cache off, median {kw['candidates_per_doc']['median']} "
             f"candidates/doc",
    ))
    return rows


def render(result: dict[str, Any]) -> str:
    tp = result["throughput"]
    per_rep = common.format_table(
        ["rep", "mode", "seconds", "sentences/s", "tokens/s", "CPU s", "batches", "mean batch"],
        [[s["rep"], s["mode"], s["seconds"], s["sentences_per_s"], s["tokens_per_s"],
          s["cpu_seconds"], s.get("batches"), s.get("mean_batch")] for s in tp["samples"]],
    )
    first_use = common.format_table(
        ["model dir", "run", "first s", "second s", "registry load s", "RSS before", "RSS after"],
        [[kind, index + 1, s["first_s"], s["second_s"], s["registry_load_s"], s["rss_before_mb"],
          s["rss_after_mb"]]
         for kind in ("prepared", "empty")
         for index, s in enumerate(result["first_use"][kind]["samples"])],
    )
    memory = common.format_table(
        ["stage", "RSS MB", "peak MB", "detail"],
        [[s["stage"], s["rss_mb"], s["peak_rss_mb"],
          ", ".join(f"{k}={v}" for k, v in s.items()
                    if k not in ("stage", "rss_mb", "peak_rss_mb"))]
         for s in result["memory"]["stages"]],
    )
    threads = tp["threads"]
    return (
        f"models: {result['environment']['cpu_count']} CPU(s), {result['elapsed_s']} s; "
        f"threads: raw {threads['raw_session']}, ragd {threads['ragd_session']}, "
        f"pool_workers {threads['pool_workers']}, embedder concurrency "
        f"{threads['embedder_concurrency']}\n\n"
        f"throughput per repetition ({tp['sample']['docs']} docs, "
        f"{tp['sample']['tokens_capped']} tokens):\n{per_rep}\n\n"
        f"first use:\n{first_use}\n\nmemory:\n{memory}\n\n"
        f"{common.summary_table(result['summary'])}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", default=None,
                        help=f"throughput docs: a number (strided sample) or 'all' "
                             f"(default {DEFAULTS['docs']}, --quick {QUICK['docs']})")
    parser.add_argument("--runs", type=int, default=None, help="throughput repetitions")
    parser.add_argument("--first-use-runs", type=int, default=None)
    parser.add_argument("--keyword-docs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="fewer docs and runs")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.child_args or "{}")),
                         default=str), flush=True)
        return 0
    docs: Any = args.docs
    if docs is not None and docs != "all":
        docs = int(docs)
    result = run(args.quick, docs=docs, runs=args.runs, first_use_runs=args.first_use_runs,
                 keyword_docs=args.keyword_docs)
    common.emit(result, render(result), json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
