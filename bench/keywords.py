"""Keywords from the chunk's own forward pass against KeyBERT proper: cost and a quality proxy.

Ingestion takes each chunk's keywords from the forward pass that embeds it
(``KeywordExtractor.extract_from_tokens``: a candidate's vector is the mean of the model's
contextual vectors of its tokens). KeyBERT proper (``KeywordExtractor.extract``, what ragd
did before) embeds every candidate phrase alone. This bench compares them, and a third way
that was considered: the forward pass's 15 best candidates re-ranked by embedding those
alone ("shortlist").

Per eval set (``../shared/eval/{python-faq,debian-faq}``): the first ``--pairs`` (120)
(query, relevant passage) pairs of ``qrels/``; each passage embedded as ragd embeds a chunk
(title, blank line, text; the text cut at 1,200 characters, about a chunk), keywords
(``top_n`` 5) taken from the text by each method with ragd's default settings and model
(all-MiniLM-L6-v2, quantised, prepared in ``--model-cache``).

Figures per method: ms per chunk for the keywords alone (the forward pass is shared, and not
counted), and the **query-word recall**: the share of the query's content words (not stop
words, two characters or more) found among the keywords' words: do the keywords name what
people ask about? A proxy, with no gold keywords to compare against; also the overlap of each
method's keywords with KeyBERT's.

    .venv/bin/python bench/keywords.py [--pairs 120] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:  # imported as part of the ``bench`` directory (e.g. from the repo root) ...
    from bench import _common as common
except ImportError:  # ... or run as a script, with bench/ on sys.path
    import _common as common  # type: ignore[no-redef,unused-ignore]

NAME = "keywords"
EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "eval"
SETS = ("python-faq", "debian-faq")
MODEL_CACHE = Path(tempfile.gettempdir()) / "ragd-model-cache"
TEXT_CHARS = 1200
SHORTLIST = 15


def _pairs(name: str, limit: int) -> list[tuple[str, dict[str, str]]]:
    base = EVAL / name
    if not base.is_dir():
        raise SystemExit(f"missing eval set {base}")
    corpus = {row["_id"]: row for row in map(json.loads, (base / "corpus.jsonl").open())}
    queries = {row["_id"]: row["text"] for row in map(json.loads, (base / "queries.jsonl").open())}
    qrels = next((base / "qrels").glob("*.tsv"))
    with qrels.open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    pairs = [(queries[q], corpus[d]) for q, d, *_ in rows if q in queries and d in corpus]
    return pairs[:limit]


def _content_words(text: str) -> set[str]:
    from ragd.models.keywords import ENGLISH_STOP_WORDS, normalize, tokenize

    return {word for word, _ in tokenize(normalize(text))
            if word not in ENGLISH_STOP_WORDS and len(word) > 1}


def _words(keywords: Sequence[str]) -> set[str]:
    return {word for keyword in keywords for word in keyword.split()}


def run(pairs: int = 120) -> dict[str, Any]:
    from ragd.models import minilm
    from ragd.models.keywords import KeywordExtractor, mmr
    from ragd.models.onnx_embedder import OnnxEmbedder
    from ragd.settings import ModelsSettings

    settings = ModelsSettings()
    prepared = minilm.prepare(MODEL_CACHE, quantize=settings.quantize)  # reused when there
    embedder = OnnxEmbedder.from_directory(prepared.path, settings)
    extractor = KeywordExtractor.from_settings(settings)

    def shortlist(text: str, forward: Any, offset: int) -> list[str]:
        # The forward pass ranks; the best SHORTLIST candidates are embedded alone.
        ranked = extractor.extract_from_tokens(text, forward, offset=offset, top_n=SHORTLIST)
        phrases = [keyword.keyword for keyword in ranked]
        if not phrases:
            return []
        vectors = embedder.embed_many(phrases)
        return [phrase for phrase, _ in mmr(forward.vector, vectors, phrases,
                                           extractor.top_n, extractor.diversity)]

    results: dict[str, Any] = {}
    for name in SETS:
        methods: dict[str, Callable[[str, Any, int, Any], list[str]]] = {
            "keybert": lambda text, forward, offset, vector: [
                k.keyword for k in extractor.extract(
                    text, lambda batch: np.stack([vector, *embedder.embed_many(batch[1:])]))],
            "forward_pass": lambda text, forward, offset, vector: [
                k.keyword for k in extractor.extract_from_tokens(text, forward, offset=offset)],
            "shortlist": lambda text, forward, offset, vector: shortlist(text, forward, offset),
        }
        recall: dict[str, list[float]] = {method: [] for method in methods}
        overlap: dict[str, list[float]] = {method: [] for method in methods}
        seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
        chosen = _pairs(name, pairs)
        for query, passage in chosen:
            text = passage["text"][:TEXT_CHARS]
            embedded = f"{passage['title']}\n\n{text}"
            forward = embedder.embed_tokens([embedded])[0]
            asked = _content_words(query)
            found: dict[str, list[str]] = {}
            for method, keywords_of in methods.items():
                started = time.perf_counter()
                found[method] = keywords_of(text, forward, len(embedded) - len(text),
                                            forward.vector)
                seconds[method] += time.perf_counter() - started
                recall[method].append(len(asked & _words(found[method])) / max(1, len(asked)))
            reference = set(found["keybert"])
            for method in methods:
                overlap[method].append(
                    len(reference & set(found[method])) / max(1, len(reference)))
        results[name] = {
            method: {
                "query_word_recall": round(statistics.fmean(recall[method]), 4),
                "overlap_with_keybert": round(statistics.fmean(overlap[method]), 4),
                "ms_per_chunk": round(1000 * seconds[method] / max(1, len(chosen)), 2),
            }
            for method in methods
        } | {"pairs": len(chosen)}
    return {"bench": NAME, "sets": results, "environment": common.environment()}


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, figures in result["sets"].items():
        for method in ("keybert", "forward_pass", "shortlist"):
            part = figures[method]
            rows.append(common.row(
                f"{name}: {method} query-word recall", part["query_word_recall"], "",
                note=f"{part['ms_per_chunk']} ms/chunk for keywords; overlap with KeyBERT "
                     f"{part['overlap_with_keybert']}; {figures['pairs']} pairs"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=120)
    parser.add_argument("--json", action="store_true", help="JSON only")
    args = parser.parse_args(argv)
    result = run(args.pairs)
    result["summary"] = summary_rows(result)
    common.emit(result, common.summary_table(result["summary"], bench=NAME), json_only=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
