"""Retrieval quality: the heading-path prefix of ``Chunk.embed_text`` and the chunk size.

Question: does prepending a chunk's heading path ("Chapter 1 > 1.2 What is X\\n\\n<text>") to
the text that is embedded and BM25-indexed help retrieval, compared with the bare chunk text?
And does ``chunking.chunk_target_tokens`` (128 / 220 / 256, overlap 32) matter?

Corpus, per eval set (``/work/shared/eval/{python-faq,debian-faq}``): the FAQ source files
(role ``faq`` in ``source/MANIFEST.tsv``, HTML only: ``faq-alt-format`` files are the same
content) plus the distractor files (role ``distractor``), each parsed in-process with
``ragd.ingestion.parsers.parse`` and chunked with ``ragd.ingestion.chunking.chunk_document``
(the embedder's own ``token_spans``). Embedding every distractor chunk for six variants takes
~40 min on 2 cores, so the dense part uses an evenly strided sample of the distractor files
(``--distractor-share``, default 1/32; ``--distractor-share 1`` for all); BM25 is cheap and is
also run on the full corpus.

Variants: prefix on (``chunk.embed_text``) / off (``chunk.text``) x target tokens, for

* ``dense``: the ragd default embedder (all-MiniLM-L6-v2, quantised, prepared by
  ``ragd.models.minilm`` into ``--model-cache``), passages ``kind="passage"``, queries
  ``kind="query"``, ranked by cosine (vectors are L2-normalised);
* ``bm25``: a plain BM25 (k1=0.9, b=0.4, lower-cased ``\\w+`` tokens, no stop words).

Gold: ``answers.jsonl`` (``query_id``, ``answer``). A retrieved chunk is a *hit* when its
display text (``chunk.text``, never the prefix) contains >= 50 % of the answer's distinct
lower-cased ``\\w+`` words. Per variant: hit@1/@5/@10, MRR@10, and the ceiling (queries for
which some chunk of the corpus is a hit at all: long answers spread over several chunks can
have none, which caps every metric, more so for small chunks). ``lenient_*`` repeats them
with a chunk-size-neutral hit: such a chunk, or one whose distinct words are >= 80 % answer
words (at least 10 of them), i.e. a piece of the answer.

    .venv/bin/python bench/heading_prefix.py [--sets python-faq,debian-faq]
        [--targets 128,220,256] [--distractor-share 0.03125] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "heading_prefix"
EVAL_ROOT = Path(os.environ.get("RAGD_BENCH_EVAL", "/work/shared/eval"))
if not EVAL_ROOT.is_dir():  # the repo's sibling layout (../shared/eval)
    EVAL_ROOT = common.REPO_ROOT.parent / "shared" / "eval"
MODEL_CACHE = Path(
    os.environ.get("RAGD_BENCH_MODEL_CACHE") or Path(tempfile.gettempdir()) / "ragd-model-cache"
)

HIT_SHARE = 0.5
INSIDE_SHARE = 0.8
INSIDE_MIN_WORDS = 10
K1, B = 0.9, 0.4
CUTOFFS = (1, 5, 10)
WORD = re.compile(r"\w+")

DEFAULTS: dict[str, Any] = {
    "sets": ("python-faq", "debian-faq"),
    "targets": (128, 220, 256),
    "overlap": 32,
    "distractor_share": 1 / 32,
    "bm25_full": True,
}
QUICK: dict[str, Any] = {**DEFAULTS, "distractor_share": 1 / 64, "targets": (220,)}


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


# -- corpus -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: Path
    role: str  # "faq" | "distractor"


def source_files(eval_set: str) -> list[SourceFile]:
    root = EVAL_ROOT / eval_set / "source"
    files = []
    with (root / "MANIFEST.tsv").open(encoding="utf-8", newline="") as handle:
        for entry in csv.DictReader(handle, delimiter="\t"):
            role = entry["role"]
            if role == "distractor" or (role == "faq" and entry["path"].endswith(".html")):
                files.append(SourceFile(root / entry["path"], role))
    if not any(f.role == "faq" for f in files):
        raise RuntimeError(f"{root}/MANIFEST.tsv lists no FAQ html file")
    return files


def strided(items: Sequence[Any], share: float) -> list[Any]:
    """An evenly spread ``share`` of ``items`` (all of them for share >= 1)."""
    if share >= 1:
        return list(items)
    count = max(1, round(len(items) * share))
    return [items[(index * len(items)) // count] for index in range(count)]


def load_gold(eval_set: str) -> tuple[list[str], list[str], dict[str, list[set[str]]]]:
    base = EVAL_ROOT / eval_set
    ids, texts = [], []
    with (base / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                query = json.loads(line)
                ids.append(query["_id"])
                texts.append(query["text"])
    answers: dict[str, list[set[str]]] = {}
    with (base / "answers.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                entry = json.loads(line)
                answers.setdefault(entry["query_id"], []).append(set(words(entry["answer"])))
    return ids, texts, answers


@dataclass
class Corpus:
    """Chunks of one target size; ``sampled[i]`` says whether chunk i is in the dense corpus."""

    display: list[str]
    embed: list[str]
    sampled: np.ndarray
    faq: np.ndarray
    headed: np.ndarray  # the chunk has a heading path (prefix on changes its text)


def build_corpus(docs: list[tuple[Any, bool, bool]], embedder: Any, target: int,
                 overlap: int) -> Corpus:
    from ragd.ingestion.chunking import chunk_document

    display, embed, sampled, faq, headed = [], [], [], [], []
    for doc, is_faq, in_sample in docs:
        for chunk in chunk_document(doc, tokenize=embedder.token_spans, target_tokens=target,
                                    overlap_tokens=overlap):
            display.append(chunk.text)
            embed.append(chunk.embed_text)
            sampled.append(in_sample)
            faq.append(is_faq)
            headed.append(chunk.embed_text != chunk.text)
    return Corpus(display, embed, np.array(sampled), np.array(faq), np.array(headed))


def hit_matrix(display: Sequence[str], answers: list[list[set[str]]]
               ) -> tuple[list[set[int]], list[set[int]]]:
    """For each query, the chunks that hold >= HIT_SHARE of an answer's words (``cover``, the
    brief's definition) and, as a chunk-size-neutral check, the chunks that hold those or
    consist mostly of the answer (``lenient``: >= INSIDE_SHARE of the chunk's distinct words,
    at least INSIDE_MIN_WORDS of them, are answer words)."""
    chunk_words = [set(words(text)) for text in display]
    cover, lenient = [], []
    for answer_sets in answers:
        found, inside = set(), set()
        for gold in answer_sets:
            if not gold:
                continue
            need = HIT_SHARE * len(gold)
            for i, have in enumerate(chunk_words):
                common_words = len(gold & have)
                if common_words >= need:
                    found.add(i)
                elif (common_words >= INSIDE_MIN_WORDS
                      and common_words >= INSIDE_SHARE * len(have)):
                    inside.add(i)
        cover.append(found)
        lenient.append(found | inside)
    return cover, lenient


# -- retrieval ----------------------------------------------------------------------------------


class BM25:
    def __init__(self, texts: Sequence[str], k1: float = K1, b: float = B) -> None:
        self.size = len(texts)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        lengths = np.zeros(self.size, dtype=np.float64)
        for index, text in enumerate(texts):
            counts = Counter(words(text))
            lengths[index] = sum(counts.values())
            for term, tf in counts.items():
                docs, tfs = postings.setdefault(term, ([], []))
                docs.append(index)
                tfs.append(tf)
        norm = k1 * (1 - b + b * lengths / max(lengths.mean(), 1e-9))
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (docs, tfs) in postings.items():
            idx = np.array(docs)
            tf = np.array(tfs, dtype=np.float64)
            idf = math.log(1 + (self.size - len(idx) + 0.5) / (len(idx) + 0.5))
            self.postings[term] = (idx, idf * tf * (k1 + 1) / (tf + norm[idx]))

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.float64)
        for term in set(words(query)):
            entry = self.postings.get(term)
            if entry is not None:
                out[entry[0]] += entry[1]
        return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]  # by score, ties by chunk order


def evaluate(rankings: Sequence[np.ndarray], hits: tuple[list[set[int]], list[set[int]]]
             ) -> dict[str, Any]:
    strict = _metrics(rankings, hits[0])
    lenient = _metrics(rankings, hits[1])
    return {**strict, **{f"lenient_{key}": value for key, value in lenient.items()}}


def _metrics(rankings: Sequence[np.ndarray], hits: Sequence[set[int]]) -> dict[str, Any]:
    n = len(rankings)
    result: dict[str, Any] = {f"hit@{k}": 0.0 for k in CUTOFFS}
    rr = 0.0
    for ranked, gold in zip(rankings, hits, strict=True):
        first = next((rank for rank, i in enumerate(ranked[:10]) if int(i) in gold), None)
        if first is not None:
            rr += 1 / (first + 1)
            for k in CUTOFFS:
                if first < k:
                    result[f"hit@{k}"] += 1
    for k in CUTOFFS:
        result[f"hit@{k}"] = round(result[f"hit@{k}"] / n, 4)
    result["mrr@10"] = round(rr / n, 4)
    result["ceiling"] = round(sum(1 for gold in hits if gold) / n, 4)
    return result


class EmbedCache:
    """Passage vectors by text, shared across variants of a run (identical chunks embed once)."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.vectors: dict[str, np.ndarray] = {}
        self.seconds = 0.0
        self.embedded = 0

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            started = time.perf_counter()
            for start in range(0, len(missing), 256):
                batch = missing[start:start + 256]
                vectors = self.embedder.embed(batch, kind="passage")
                self.vectors.update(zip(batch, np.asarray(vectors, dtype=np.float32),
                                        strict=True))
            self.seconds += time.perf_counter() - started
            self.embedded += len(missing)
        return np.stack([self.vectors[t] for t in texts])


# -- the run ------------------------------------------------------------------------------------


def load_embedder(cache_dir: Path) -> Any:
    from ragd.models import minilm
    from ragd.settings import ModelsSettings

    cache_dir.mkdir(parents=True, exist_ok=True)
    return minilm.load(ModelsSettings(), cache_dir)  # prepares in a child first if needed


def run_set(eval_set: str, cfg: dict[str, Any], embedder: Any) -> dict[str, Any]:
    from ragd.ingestion.parsers import ParseError, parse

    started = time.perf_counter()
    files = source_files(eval_set)
    distractors = [f for f in files if f.role == "distractor"]
    in_sample = {f.path for f in strided(distractors, cfg["distractor_share"])}
    docs = []
    parse_errors = []
    for source in files:
        keep = source.role == "faq" or source.path in in_sample
        if not keep and not cfg["bm25_full"]:
            continue
        try:
            doc = parse(source.path.read_bytes(), filename=source.path.name, declared_type=None)
        except ParseError as exc:  # a distractor the parser refuses is reported, not fatal
            parse_errors.append(f"{source.path.name}: {type(exc).__name__}: {exc}")
            continue
        docs.append((doc, source.role == "faq", keep))
    parse_seconds = time.perf_counter() - started
    query_ids, queries, answers = load_gold(eval_set)
    gold = [answers.get(qid, []) for qid in query_ids]
    query_vectors = np.asarray(embedder.embed(queries, kind="query"), dtype=np.float32)
    cache = EmbedCache(embedder)

    variants: list[dict[str, Any]] = []
    sizes: dict[str, Any] = {}
    for target in cfg["targets"]:
        print(f"[{NAME}] {eval_set}: T={target}", file=sys.stderr, flush=True)
        corpus = build_corpus(docs, embedder, target, cfg["overlap"])
        sample = np.flatnonzero(corpus.sampled)
        full_hits = hit_matrix(corpus.display, gold)
        position = {int(i): j for j, i in enumerate(sample)}
        sample_hits = (
            [{position[i] for i in h if i in position} for h in full_hits[0]],
            [{position[i] for i in h if i in position} for h in full_hits[1]],
        )
        sizes[str(target)] = {
            "chunks_sample": len(sample), "chunks_full": len(corpus.display),
            "faq_chunks": int(corpus.faq.sum()),
            "headed_share_faq": round(float(corpus.headed[corpus.faq].mean()), 3),
            "headed_share_distractor_sample": round(
                float(corpus.headed[corpus.sampled & ~corpus.faq].mean()), 3),
            "mean_hit_chunks_per_query": round(
                float(np.mean([len(h) for h in sample_hits[0]])), 2),
        }
        for prefix in (False, True):
            texts = corpus.embed if prefix else corpus.display
            sample_texts = [texts[i] for i in sample]
            matrix = cache.passages(sample_texts)
            sims = query_vectors @ matrix.T
            dense = [top_k(row, 10) for row in sims]
            variants.append({"retriever": "dense", "corpus": "sample", "target": target,
                             "prefix": prefix, **evaluate(dense, sample_hits)})
            index = BM25(sample_texts)
            lexical = [top_k(index.scores(q), 10) for q in queries]
            variants.append({"retriever": "bm25", "corpus": "sample", "target": target,
                             "prefix": prefix, **evaluate(lexical, sample_hits)})
            if cfg["bm25_full"] and len(sample) < len(texts):
                index = BM25(texts)
                lexical = [top_k(index.scores(q), 10) for q in queries]
                variants.append({"retriever": "bm25", "corpus": "full", "target": target,
                                 "prefix": prefix, **evaluate(lexical, full_hits)})
    return {
        "queries": len(queries),
        "files": {"faq": sum(f.role == "faq" for f in files),
                  "distractors_total": len(distractors), "distractors_sampled": len(in_sample)},
        "parse_errors": parse_errors,
        "chunks": sizes,
        "embedded_passages": cache.embedded,
        "embed_seconds": round(cache.seconds, 1),
        "parse_seconds": round(parse_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "variants": variants,
    }


def run(quick: bool = False, **options: Any) -> dict[str, Any]:
    cfg = {**(QUICK if quick else DEFAULTS),
           **{key: value for key, value in options.items() if value is not None}}
    cfg["distractor_share"] = min(max(float(cfg["distractor_share"]), 0.0), 1.0)
    started = time.perf_counter()
    embedder = load_embedder(Path(cfg.get("model_cache") or MODEL_CACHE))
    try:
        sets = {name: run_set(name, cfg, embedder) for name in cfg["sets"]}
        info = embedder.info
    finally:
        embedder.close()
    result: dict[str, Any] = {
        "bench": NAME,
        "config": {**cfg, "eval_root": str(EVAL_ROOT), "hit_share": HIT_SHARE,
                   "lenient": {"inside_share": INSIDE_SHARE, "inside_min_words": INSIDE_MIN_WORDS},
                   "bm25": {"k1": K1, "b": B, "tokens": "lower-cased \\w+"},
                   "embedder": f"{info.name} ({info.variant}, max_tokens {info.max_tokens})"},
        "environment": common.environment(),
        "sets": sets,
        "seconds": round(time.perf_counter() - started, 1),
    }
    result["summary"] = summary_rows(result)
    return result


def _find(variants: list[dict[str, Any]], **keys: Any) -> dict[str, Any] | None:
    for variant in variants:
        if all(variant.get(k) == v for k, v in keys.items()):
            return variant
    return None


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, data in result["sets"].items():
        for retriever, corpus in (("dense", "sample"), ("bm25", "full")):
            for target in result["config"]["targets"]:
                on = _find(data["variants"], retriever=retriever, corpus=corpus,
                           target=target, prefix=True)
                off = _find(data["variants"], retriever=retriever, corpus=corpus,
                            target=target, prefix=False)
                if on is None or off is None:
                    continue
                rows.append(common.row(
                    f"{name} {retriever} T={target} MRR@10 prefix on/off",
                    f"{on['mrr@10']:.3f}/{off['mrr@10']:.3f}", "",
                    note=f"hit@10 {on['hit@10']:.3f}/{off['hit@10']:.3f}, "
                         f"ceiling {on['ceiling']:.3f} ({corpus} corpus)"))
    return rows


def render(result: dict[str, Any]) -> str:
    parts = []
    headers = ["set", "retriever", "corpus", "T", "prefix", "hit@1", "hit@5", "hit@10",
               "mrr@10", "ceiling", "len hit@10", "len mrr@10", "len ceiling"]
    lines = []
    for name, data in result["sets"].items():
        for v in sorted(data["variants"], key=lambda v: (v["retriever"] != "dense",
                                                         v["corpus"], v["target"], v["prefix"])):
            lines.append([name, v["retriever"], v["corpus"], v["target"],
                          "on" if v["prefix"] else "off", v["hit@1"], v["hit@5"],
                          v["hit@10"], v["mrr@10"], v["ceiling"], v["lenient_hit@10"],
                          v["lenient_mrr@10"], v["lenient_ceiling"]])
    parts.append(common.format_table(headers, lines))
    size_lines = []
    for name, data in result["sets"].items():
        for target, info in data["chunks"].items():
            size_lines.append([name, target, info["chunks_sample"], info["chunks_full"],
                               info["faq_chunks"], info["mean_hit_chunks_per_query"],
                               info["headed_share_faq"], info["headed_share_distractor_sample"]])
    parts.append(common.format_table(
        ["set", "T", "chunks (sample)", "chunks (full)", "faq chunks", "hit chunks/query",
         "headed faq", "headed distractors"],
        size_lines))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=None, help="comma-separated eval sets")
    parser.add_argument("--targets", default=None, help="comma-separated target tokens")
    parser.add_argument("--overlap", type=int, default=None)
    parser.add_argument("--distractor-share", type=float, default=None,
                        help="share of distractor files in the dense corpus (1 = all)")
    parser.add_argument("--no-bm25-full", action="store_true",
                        help="skip BM25 on the full corpus")
    parser.add_argument("--model-cache", default=None, help=f"default {MODEL_CACHE}")
    parser.add_argument("--quick", action="store_true",
                        help="T=220 only, 1/64 of the distractor files")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {
        "sets": tuple(args.sets.split(",")) if args.sets else None,
        "targets": tuple(int(t) for t in args.targets.split(",")) if args.targets else None,
        "overlap": args.overlap,
        "distractor_share": args.distractor_share,
        "bm25_full": False if args.no_bm25_full else None,
        "model_cache": args.model_cache,
    }
    result = run(quick=args.quick, **options)
    common.emit(result, render(result), json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
