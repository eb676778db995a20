"""ragd's lexical leg against plain BM25 on the dev sets, and the analyser variants tried.

    .venv/bin/python bench/lexical_leg.py [--json out.json]
    <a venv with bm25s and PyStemmer>/bin/python bench/lexical_leg.py --bm25s

Default: tantivy BM25 over the corpus as ``ragd eval`` ingests it (chunks, through the real
parser and chunker) and over whole entries, with ragd's analyser (simple tokenizer, lowercase,
English Snowball stemmer) and variants (English stopwords; tokens of two or more characters,
bm25s's pattern), scored by corpus nDCG@10 and by the answer passages' hit@1 / MRR@10 of the
``source/`` files (as ``ragd eval --from-source``).

``--bm25s``: the reference, bm25s Okapi (k1 1.5, b 0.75) over whole corpus entries in four
tokenisations (with and without Snowball stemming and English stopwords). It needs only bm25s
and PyStemmer, which ragd does not depend on: run it with another interpreter.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval"
SETS = ("python-faq", "debian-faq")
DEPTH = 100
NAME = "lexical_leg"
#: (stopwords, tokenizer) of each analyser tried; the first is ragd's.
VARIANTS = ((False, "simple"), (True, "simple"), (False, "2+ chars"), (True, "2+ chars"))


def _ndcg(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    best = sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / best if best else 0.0


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def bm25s_reference() -> dict[str, Any]:
    import bm25s  # type: ignore[import-not-found]  # noqa: PLC0415 - another interpreter's
    import Stemmer  # type: ignore[import-not-found]  # noqa: PLC0415

    out: dict[str, Any] = {}
    for name in SETS:
        corpus = _jsonl(EVAL / name / "corpus.jsonl")
        queries = {row["_id"]: row["text"] for row in _jsonl(EVAL / name / "queries.jsonl")}
        qrels: dict[str, dict[str, int]] = {}
        for line in (EVAL / name / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[-1].isdigit():  # noqa: PLR2004 - the header is skipped
                qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        ids = [row["_id"] for row in corpus]
        texts = [row["text"] for row in corpus]
        for stem in (None, "english"):
            for stopwords in (None, "en"):
                stemmer = Stemmer.Stemmer(stem) if stem else None
                tokens = bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer,
                                        show_progress=False)
                retriever = bm25s.BM25()
                retriever.index(tokens, show_progress=False)
                scores = []
                for query_id, relevant in qrels.items():
                    query = bm25s.tokenize([queries[query_id]], stopwords=stopwords,
                                           stemmer=stemmer, show_progress=False)
                    if not query.vocab:
                        scores.append(0.0)
                        continue
                    found, _ = retriever.retrieve(query, k=10, show_progress=False)
                    scores.append(_ndcg([ids[d] for d in found[0]], relevant))
                tag = f"stemming {stem or 'none'}, stopwords {stopwords or 'none'}"
                out.setdefault(name, {})[tag] = round(sum(scores) / len(scores), 4)
    return out


def _analyzer(stopwords: bool, tokenizer: str) -> Any:
    import tantivy

    base = (tantivy.Tokenizer.simple() if tokenizer == "simple"
            else tantivy.Tokenizer.regex(r"\w\w+"))
    builder = (tantivy.TextAnalyzerBuilder(base).filter(tantivy.Filter.remove_long(40))
               .filter(tantivy.Filter.lowercase()))
    if stopwords:
        builder = builder.filter(tantivy.Filter.stopword("english"))
    return builder.filter(tantivy.Filter.stemmer("english")).build()


def _search(texts: list[str], queries: list[str], variant: tuple[bool, str]
            ) -> list[list[tuple[int, float]]]:
    import tantivy

    schema_builder = tantivy.SchemaBuilder()
    schema_builder.add_unsigned_field("key", stored=True, indexed=True, fast=True)
    schema_builder.add_text_field("text", tokenizer_name="variant", index_option="position")
    schema = schema_builder.build()
    analyzer = _analyzer(*variant)
    with tempfile.TemporaryDirectory(prefix="ragd-bench-lexical-") as tmp:
        index = tantivy.Index(schema, path=tmp)
        index.config_reader(reload_policy="manual")
        index.register_tokenizer("variant", analyzer)
        writer = index.writer(100_000_000)
        for key, text in enumerate(texts):
            document = tantivy.Document()
            document.add_unsigned("key", key)
            document.add_text("text", text)
            writer.add_document(document)
        writer.commit()
        writer.wait_merging_threads()
        index.reload()
        searcher = index.searcher()
        out = []
        for query in queries:
            # As ragd's lexical leg: each distinct analysed word, any may match.
            terms = list(dict.fromkeys(analyzer.analyze(query)))
            if not terms:
                out.append([])
                continue
            combined = tantivy.Query.boolean_query(
                [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "text", term))
                 for term in terms])
            hits = searcher.search(combined, DEPTH).hits
            keys = searcher.fast_field_values("key", [address for _, address in hits])
            out.append([(int(k), float(score)) for (score, _), k in zip(hits, keys, strict=True)])
        return out


def tantivy_variants() -> dict[str, Any]:
    import numpy as np

    try:
        from bench import doc_ranking, fusion
    except ImportError:
        import doc_ranking  # type: ignore[no-redef,unused-ignore]
        import fusion  # type: ignore[no-redef,unused-ignore]
    from ragd.cli.evaluate import source_files
    from ragd.retrieval.beir import load_dataset

    embedder = fusion.load_embedder(fusion.MODEL_CACHE)  # its tokenizer, for the chunker
    out: dict[str, Any] = {}
    for name in SETS:
        root = fusion.EVAL_ROOT / name
        dataset = load_dataset(root)
        query_ids = [q for q in dataset.queries if q in dataset.qrels]
        queries = [dataset.queries[q] for q in query_ids]
        bodies = {d: (p.text if p.text.strip() else p.title or d)
                  for d, p in dataset.corpus.items()}
        chunks = doc_ranking.chunked(
            [(d, body.encode(), None, "text/plain") for d, body in bodies.items()], embedder)
        count = len(bodies)
        whole = doc_ranking.Index(list(bodies.values()), list(bodies.values()),
                                  np.arange(count), np.zeros(count, dtype=int),
                                  np.zeros(count, dtype=bool), count, list(bodies))
        judged = [q for q in dataset.queries if q in dataset.answers]
        source = doc_ranking.chunked([(str(p), p.read_bytes(), p.name, None)
                                      for p in source_files(root / "source")], embedder)
        rows: dict[str, dict[str, float]] = {}
        for variant in VARIANTS:
            tag = f"{variant[1]}{', stopwords' if variant[0] else ''}"
            row: dict[str, float] = {}
            for label, index in (("chunks", chunks), ("whole entries", whole)):
                runs = _search(index.texts, queries, variant)
                row[f"{label} ndcg@10"] = round(sum(
                    doc_ranking.beir_ndcg(index, runs[i], dataset.qrels[q])
                    for i, q in enumerate(query_ids)) / len(query_ids), 4)
            runs = _search(source.texts, [dataset.queries[q] for q in judged], variant)
            ranks = [doc_ranking.source_ranks(source, runs[i], dataset.answers[q])
                     for i, q in enumerate(judged)]
            row["source hit@1"] = round(sum(r == 1 for r in ranks) / len(ranks), 4)
            row["source mrr@10"] = round(sum(1 / r for r in ranks if r) / len(ranks), 4)
            rows[tag] = row
        out[name] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bm25s", action="store_true", help="the bm25s reference instead")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = {"bench": NAME, "bm25s" if args.bm25s else "tantivy":
              bm25s_reference() if args.bm25s else tantivy_variants()}
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
