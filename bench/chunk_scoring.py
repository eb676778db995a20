"""How a chunked index should score documents for dense retrieval (issue 5's dense gap).

    .venv/bin/python bench/chunk_scoring.py [--sets python-faq debian-faq] [--json out.json]

The dev sets' reference embeds each corpus entry once, truncated to 256 tokens. ragd chunks
every entry (target 220 tokens, overlap 32) and ranks a document at its best chunk; through
the pipeline dense nDCG@10 was 0.055 / 0.043 below the reference. This bench embeds the
entries the way the pipeline does (the real parser and chunker, the real embedder) and
compares, at document level with exact cosine (no HNSW error), nDCG@10 of:

* ``reference``: one vector per entry, its first 256 tokens (what the reference does);
* ``chunks, max``: the pipeline's chunks, a document scores its best chunk (current ragd);
* ``chunks + title, max``: every chunk's embedded text starts with the document title (a
  contextual chunk header), best chunk;
* ``first chunk only``: only each document's first chunk (an upper bound on what truncation
  buys on FAQ data, not a serious option: it cannot find anything past the first chunk).

Vectors are cached under /tmp (keyed by texts and model), so reruns only score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    from bench import _common as common
    from bench import fusion
except ImportError:
    import _common as common  # type: ignore[no-redef,unused-ignore]
    import fusion  # type: ignore[no-redef,unused-ignore]

NAME = "chunk_scoring"
CACHE = Path(tempfile.gettempdir()) / "ragd-bench-chunk-scoring"
TARGET_TOKENS, OVERLAP_TOKENS = 220, 32


def cached_vectors(embedder: Any, texts: list[str], label: str, cache: Path = CACHE
                   ) -> np.ndarray:
    """Passage vectors of ``texts``, from ``cache`` when the texts and model match."""
    digest = hashlib.sha256(f"{embedder.info.name}|{embedder.info.variant}|".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    path = cache / f"{label}-{digest.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    parts = [embedder.embed(texts[i:i + 64], kind="passage") for i in range(0, len(texts), 64)]
    vectors = np.concatenate(parts).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _chunks(data: Any, embedder: Any) -> tuple[list[str], list[str], list[int]]:
    """Embedded texts of the pipeline's chunks, with the title prefixed, and chunk -> doc."""
    from ragd.ingestion.chunking import chunk_document
    from ragd.ingestion.parsers import parse
    from ragd.stores.catalog import embed_text

    plain, titled, owner = [], [], []
    for index, text in enumerate(data.texts):
        title = text.split("\n\n", 1)[0] if "\n\n" in text else ""
        doc = parse(text.encode("utf-8"), filename=None, declared_type="text/plain")
        for position, chunk in enumerate(chunk_document(
            doc, tokenize=embedder.token_spans, target_tokens=TARGET_TOKENS,
            overlap_tokens=OVERLAP_TOKENS,
        )):
            body = embed_text(chunk.heading_path, chunk.text)
            plain.append(body)
            titled.append(body if position == 0 or not title else f"{title}\n\n{body}")
            owner.append(index)
    return plain, titled, owner


def _ndcg(data: Any, scores: np.ndarray, owner: np.ndarray | None, only: np.ndarray | None
          ) -> float:
    """Mean document-level nDCG@10; a document scores its best row."""
    ndcg, _ = fusion.ndcg_function()
    total = 0.0
    n_docs = len(data.doc_ids)
    for qi, query_id in enumerate(data.query_ids):
        row = scores[qi]
        if owner is None:
            best = row
        else:
            mask = np.ones(row.shape[0], bool) if only is None else only
            best = np.full(n_docs, -np.inf, dtype=np.float32)
            np.maximum.at(best, owner[mask], row[mask])
        order = np.lexsort((np.arange(n_docs), -best))[:10]
        total += ndcg([data.doc_ids[i] for i in order], data.qrels[query_id], 10)
    return total / len(data.query_ids)


def run(quick: bool = False, *, sets: tuple[str, ...] = tuple(fusion.REFERENCE)) -> dict[str, Any]:
    embedder = fusion.load_embedder(fusion.MODEL_CACHE)
    out: dict[str, Any] = {"sets": {}}
    for name in sets:
        data = fusion.load_set(name)
        started = time.perf_counter()
        plain, titled, owner_list = _chunks(data, embedder)
        reference = cached_vectors(embedder, data.texts, f"{name}-reference")
        chunk_vectors = cached_vectors(embedder, plain, f"{name}-chunks")
        titled_vectors = cached_vectors(embedder, titled, f"{name}-titled")
        queries = embedder.embed(data.queries, kind="query")
        owner = np.asarray(owner_list)
        first = np.zeros(len(owner), bool)
        first[np.unique(owner, return_index=True)[1]] = True
        out["sets"][name] = {
            "documents": len(data.doc_ids), "chunks": len(plain),
            "reference": round(_ndcg(data, queries @ reference.T, None, None), 4),
            "chunks, max": round(_ndcg(data, queries @ chunk_vectors.T, owner, None), 4),
            "chunks + title, max": round(
                _ndcg(data, queries @ titled_vectors.T, owner, None), 4),
            "first chunk only": round(_ndcg(data, queries @ chunk_vectors.T, owner, first), 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return out


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, scores in result["sets"].items():
        for rule in ("reference", "chunks, max", "chunks + title, max", "first chunk only"):
            rows.append(common.row(f"{name}: dense nDCG@10, {rule}", scores[rule], "",
                                   note=f"{scores['chunks']} chunks"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(fusion.REFERENCE))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(sets=tuple(args.sets))
    rows = summary_rows(result)
    common.emit({"bench": NAME, **result, "rows": rows},
                common.summary_table(rows, bench=NAME))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
