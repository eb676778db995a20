"""How a chunked index should rank documents (issue 17): candidate rules, cross-validated.

    .venv/bin/python bench/doc_ranking.py [--sets python-faq debian-faq] [--json out.json]

Simulates ragd's search on the dev sets with ragd's own parts: the real parser and chunker
(220-token target, 32 overlap: the defaults), the real embedder (exact cosine, no HNSW
error), tantivy BM25 over the chunks' embedded texts, the default fusion (``dense_boost``,
100 candidates per leg). Two indexes per set:

* **BEIR**: each corpus entry as a client uploads it (its text as the body, its title as the
  document's title, not in the body); a document ranks at its first chunk in the list;
  nDCG@10 over the qrels. At ``none`` this reproduces ``ragd eval`` (python-faq hybrid /
  dense / lexical 0.7405 / 0.7161 / 0.3831 there and here).
* **source**: the files of ``source/`` (as ``ragd eval --from-source`` ingests them); a hit is
  a chunk holding half the gold answer's words; hit@1 and MRR@10 at chunk level. The guard:
  a document-ranking rule must not cost the answers their passages.

Rules, applied to each chunk's score in a leg's (or the fused) list, on a small grid:

* ``prior p``: ``score - p`` for every chunk but its document's first;
* ``section p``: ``score - p`` for every chunk that continues the section of the chunk before
  it (same heading path): a section's opening carries its topic (a FAQ entry's question);
* ``head g``: ``score + g * cos(query, the document's first chunk)`` (document context from
  its opening);
* ``mean g``: ``score + g * cos(query, the mean of the document's chunk vectors)``.

Cross-validation tunes a rule's parameter on one set (the mean of its corpus hybrid nDCG@10
and its source hybrid MRR@10: documents ranked and answer passages found) and tests it on
the other, both ways. Vectors are cached under /tmp, so reruns only score. Found before (same
simulation): the title in BM25's text costs -0.007 / +0.002, prefixed to the dense text
-0.040 / -0.010 (python / debian hybrid): FAQ titles are section names shared by many entries.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from bench import _common as common
    from bench import chunk_scoring, fusion
except ImportError:
    import _common as common  # type: ignore[no-redef,unused-ignore]
    import chunk_scoring  # type: ignore[no-redef,unused-ignore]
    import fusion  # type: ignore[no-redef,unused-ignore]

NAME = "doc_ranking"
CACHE = Path(tempfile.gettempdir()) / "ragd-bench-doc-ranking"
TARGET_TOKENS, OVERLAP_TOKENS = 220, 32
DEPTH = 100
GRIDS: dict[str, tuple[float, ...]] = {
    "prior": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3),
    "section": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3),
    "head": (0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
    "mean": (0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
}
Ranking = list[tuple[int, float]]


@dataclass
class Index:
    """Chunks of one ingestion: embedded texts, owners, ordinals; and their legs' lists."""

    texts: list[str]
    chunk_texts: list[str]
    owner: np.ndarray
    position: np.ndarray
    continues: np.ndarray  # chunk -> whether it continues the section of the chunk before
    documents: int
    doc_ids: list[str]


def chunked(items: list[tuple[str, bytes, str | None, str | None]], embedder: Any) -> Index:
    """Parse and chunk ``(label, bytes, filename, declared type)`` items as ingestion does."""
    from ragd.ingestion.chunking import chunk_document
    from ragd.ingestion.parsers import parse
    from ragd.stores.catalog import embed_text

    texts, chunk_texts, owner, position, labels = [], [], [], [], []
    continues: list[bool] = []
    for label, data, filename, declared in items:
        try:
            doc = parse(data, filename=filename, declared_type=declared)
        except Exception:  # noqa: BLE001, S112 - a file ingestion refuses is not indexed
            continue
        index = len(labels)
        labels.append(label)
        previous = None
        for ordinal, chunk in enumerate(chunk_document(
            doc, tokenize=embedder.token_spans, target_tokens=TARGET_TOKENS,
            overlap_tokens=OVERLAP_TOKENS,
        )):
            continues.append(previous is not None and tuple(chunk.heading_path) == previous)
            previous = tuple(chunk.heading_path)
            texts.append(embed_text(chunk.heading_path, chunk.text))
            chunk_texts.append(chunk.text)
            owner.append(index)
            position.append(ordinal)
    return Index(texts, chunk_texts, np.asarray(owner), np.asarray(position),
                 np.asarray(continues), len(labels), labels)


def lexical(texts: list[str], queries: list[str]) -> list[Ranking]:
    from ragd.index.lexical import TantivyPartition
    from ragd.stores.catalog import IndexEntry

    with tempfile.TemporaryDirectory(prefix="ragd-bench-doc-ranking-") as tmp:
        partition = TantivyPartition(Path(tmp) / "lexical")
        try:
            partition.upsert([IndexEntry(key=i, document_id=str(i), collection_id="eval",
                                         text=text, vector=None)
                              for i, text in enumerate(texts)])
            partition.commit(1)
            return [[(hit.key, float(hit.score)) for hit in partition.search(q, DEPTH)]
                    for q in queries]
        finally:
            partition.close()


def top(scores: np.ndarray) -> list[Ranking]:
    out = []
    for row in scores:
        best = np.argpartition(-row, DEPTH)[:DEPTH]
        order = best[np.lexsort((best, -row[best]))]
        out.append([(int(i), float(row[i])) for i in order])
    return out


@dataclass
class Legs:
    lexical: list[Ranking]
    dense: list[Ranking]
    hybrid: list[Ranking]
    head: np.ndarray  # query x document: cosine with the document's first chunk
    mean: np.ndarray  # query x document: cosine with the document's normalised mean vector


def legs(index: Index, embedder: Any, queries: list[str], label: str) -> Legs:
    from ragd.retrieval.fusion import fuse

    chunk_vectors = chunk_scoring.cached_vectors(embedder, index.texts, label, CACHE)
    query_vectors = np.asarray(embedder.embed(queries, kind="query"), np.float32)
    scores = query_vectors @ chunk_vectors.T
    firsts = np.full(index.documents, -1)
    for key in range(len(index.owner) - 1, -1, -1):
        if index.position[key] == 0:
            firsts[index.owner[key]] = key
    means = np.zeros((index.documents, chunk_vectors.shape[1]), np.float32)
    np.add.at(means, index.owner, chunk_vectors)
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-9)
    lex, den = lexical(index.texts, queries), top(scores)
    hybrid = [[(hit.key, hit.score) for hit in fuse(None, lex[q], den[q])]
              for q in range(len(queries))]
    return Legs(lex, den, hybrid, scores[:, firsts], query_vectors @ means.T)


def rescored(index: Index, legs_: Legs, ranked: Ranking, q: int, rule: str, value: float
             ) -> Ranking:
    if rule == "none":
        return ranked
    if rule == "prior":
        changed = [(k, s - (value if index.position[k] > 0 else 0.0)) for k, s in ranked]
    elif rule == "section":
        changed = [(k, s - (value if index.continues[k] else 0.0)) for k, s in ranked]
    else:
        context = legs_.head if rule == "head" else legs_.mean
        changed = [(k, s + value * float(context[q, index.owner[k]])) for k, s in ranked]
    return sorted(changed, key=lambda item: (-item[1], item[0]))


def beir_ndcg(index: Index, ranked: Ranking, relevant: dict[str, int]) -> float:
    ndcg, _ = fusion.ndcg_function()
    seen: dict[str, None] = {}
    for key, _ in ranked:
        seen.setdefault(index.doc_ids[int(index.owner[key])], None)
        if len(seen) == 10:
            break
    return float(ndcg(list(seen), relevant, 10))


def source_ranks(index: Index, ranked: Ranking, answer: str) -> int | None:
    from ragd.cli.evaluate import answer_hit

    for rank, (key, _) in enumerate(ranked[:10], start=1):
        if answer_hit(index.chunk_texts[key], answer):
            return rank
    return None


def rules() -> list[tuple[str, float]]:
    return [("none", 0.0), *((rule, v) for rule, grid in GRIDS.items() for v in grid)]


def run_set(name: str, embedder: Any) -> dict[str, Any]:
    from ragd.cli.evaluate import source_files
    from ragd.retrieval.beir import load_dataset

    root = fusion.EVAL_ROOT / name
    dataset = load_dataset(root)
    query_ids = [q for q in dataset.queries if q in dataset.qrels]
    queries = [dataset.queries[q] for q in query_ids]
    beir = chunked([(doc_id, (p.text if p.text.strip() else p.title or doc_id).encode(),
                     None, "text/plain") for doc_id, p in dataset.corpus.items()], embedder)
    beir_legs = legs(beir, embedder, queries, f"{name}-beir")
    judged = [q for q in dataset.queries if q in dataset.answers]
    source = chunked([(str(path), path.read_bytes(), path.name, None)
                      for path in source_files(root / "source")], embedder)
    source_legs = legs(source, embedder, [dataset.queries[q] for q in judged], f"{name}-source")
    out: dict[str, Any] = {"beir_chunks": len(beir.texts), "source_chunks": len(source.texts),
                           "rules": {}}
    for rule, value in rules():
        tag = rule if rule == "none" else f"{rule} {value}"
        row: dict[str, float] = {}
        for mode in ("hybrid", "dense", "lexical"):
            lists = getattr(beir_legs, mode)
            row[f"{mode} ndcg@10"] = round(sum(
                beir_ndcg(beir, rescored(beir, beir_legs, lists[q], q, rule, value),
                          dataset.qrels[query_id])
                for q, query_id in enumerate(query_ids)) / len(query_ids), 4)
        ranks = [source_ranks(source, rescored(source, source_legs, source_legs.hybrid[q], q,
                                               rule, value), dataset.answers[query_id])
                 for q, query_id in enumerate(judged)]
        row["source hybrid hit@1"] = round(sum(r == 1 for r in ranks) / len(ranks), 4)
        row["source hybrid mrr@10"] = round(sum(1 / r for r in ranks if r) / len(ranks), 4)
        out["rules"][tag] = row
    return out


def objective(row: dict[str, float]) -> float:
    """What a parameter is tuned for: documents ranked (corpus hybrid nDCG@10) and the
    answers' passages found (source hybrid MRR@10), equally. Tuning on nDCG alone picks
    the largest penalty of any grid (the corpus entries have no headings, and nDCG keeps
    rising), at a large cost to the passages an answer needs."""
    return (row["hybrid ndcg@10"] + row["source hybrid mrr@10"]) / 2


def cross_validate(per_set: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rule family: the parameter best on one set's :func:`objective`, tested on the
    other, both ways."""
    folds = []
    for family in GRIDS:
        for train, test in itertools.permutations(per_set, 2):
            tags = [t for t in per_set[train]["rules"] if t.startswith(family + " ")]
            best = max(tags, key=lambda t: (objective(per_set[train]["rules"][t]), t))
            folds.append({"family": family, "train": train, "test": test, "chosen": best,
                          "train_objective": round(objective(per_set[train]["rules"][best]), 4),
                          **{f"test {k}": v for k, v in per_set[test]["rules"][best].items()}})
    return folds


def run(sets: Sequence[str]) -> dict[str, Any]:
    embedder = fusion.load_embedder(fusion.MODEL_CACHE)
    started = time.perf_counter()
    per_set = {name: run_set(name, embedder) for name in sets}
    return {"sets": per_set, "cross_validation": cross_validate(per_set) if len(sets) > 1
            else [], "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["python-faq", "debian-faq"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.sets)
    tables = []
    for name, scores in result["sets"].items():
        columns = list(next(iter(scores["rules"].values())))
        tables.append(f"{name} ({scores['beir_chunks']} corpus chunks, "
                      f"{scores['source_chunks']} source chunks)\n" + common.format_table(
                          ["rule", *columns],
                          [[tag, *row.values()] for tag, row in scores["rules"].items()]))
    if result["cross_validation"]:
        keys = [k for k in result["cross_validation"][0] if k.startswith("test ")]
        tables.append("cross-validation (tuned on the objective)\n" + common.format_table(
            ["family", "tuned on", "chosen", "train objective", *keys],
            [[f["family"], f["train"], f["chosen"], f["train_objective"], *(f[k] for k in keys)]
             for f in result["cross_validation"]]))
    common.write_json(args.json, {"bench": NAME, **result})
    common.emit({"bench": NAME, **result}, "\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
