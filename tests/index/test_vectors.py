"""The usearch (HNSW, cosine) partition, on real files."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import ragd.index.vectors as vectors_module
from ragd.index.base import Scope, Vector, VectorPartition
from ragd.index.vectors import UsearchPartition
from ragd.stores.catalog import IndexEntry

DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> npt.NDArray[np.float32]:
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    normed: npt.NDArray[np.float32] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return normed


def entry(key: int, vector: Vector, document_id: str = "d", collection_id: str = "c") -> IndexEntry:
    return IndexEntry(key, document_id, collection_id, f"text {key}", vector)


def strip_section_flags(partition: Path) -> None:
    """Rewrite a vector partition's entries file as ragd saved it before it kept flags."""
    (entries,) = partition.glob("entries.*.npz")
    with np.load(entries) as npz:
        legacy = {name: npz[name] for name in npz.files if name != "continues"}
    with open(entries, "wb") as handle:
        np.savez(handle, **legacy)  # type: ignore[arg-type]


def filled(path: Path, n: int = 200, seed: int = 7) -> tuple[UsearchPartition, np.ndarray]:
    vectors = unit(np.random.default_rng(seed), n)
    part = UsearchPartition(path, DIM)
    part.upsert([entry(i, vectors[i], f"doc{i % 20}", f"coll{i % 4}") for i in range(n)])
    part.commit(n)
    return part, vectors


def test_satisfies_protocol(tmp_path: Path) -> None:
    part: VectorPartition = UsearchPartition(tmp_path / "p")
    assert part.dimension is None
    assert part.applied_seq == 0
    assert part.count() == 0
    assert part.search(np.ones(DIM, dtype=np.float32), 5) == []
    part.close()


def test_nearest_neighbour_and_cosine_score(tmp_path: Path) -> None:
    part, vectors = filled(tmp_path / "p")
    hits = part.search(vectors[17], 5)
    assert len(hits) == 5
    assert hits[0].key == 17
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    expected = vectors @ vectors[17]
    for hit in hits:
        assert hit.score == pytest.approx(float(expected[hit.key]), abs=1e-4)
    # A scaled query has the same cosine similarities.
    assert part.search(vectors[17] * 3.0, 1)[0].key == 17
    # The true top 5 are found (200 entries: the graph search is effectively exact).
    assert [h.key for h in hits] == list(np.argsort(-expected)[:5])
    assert part.search(vectors[3], 0) == []
    assert len(part.search(vectors[3], 1000)) == 200


def test_wrong_dimension_is_rejected(tmp_path: Path) -> None:
    part, _ = filled(tmp_path / "p", n=10)
    with pytest.raises(ValueError):
        part.upsert([entry(99, np.ones(DIM + 1, dtype=np.float32))])
    with pytest.raises(ValueError):
        part.search(np.ones(DIM - 1, dtype=np.float32), 3)
    with pytest.raises(ValueError):
        part.upsert([IndexEntry(98, "d", "c", "no vector", None)])
    part.close()
    with pytest.raises(ValueError):
        UsearchPartition(tmp_path / "p", DIM * 2)
    assert UsearchPartition(tmp_path / "p").dimension == DIM


def test_first_upsert_fixes_dimension(tmp_path: Path) -> None:
    part = UsearchPartition(tmp_path / "p")
    part.upsert([entry(1, np.ones(8, dtype=np.float32))])
    assert part.dimension == 8
    with pytest.raises(ValueError):
        part.upsert([entry(2, np.ones(9, dtype=np.float32))])
    part.commit(1)
    assert UsearchPartition(tmp_path / "p").dimension == 8
    # Bytes blobs (as stored in SQL) are accepted too.
    part.upsert([entry(3, np.arange(8, dtype=np.float32).tobytes())])  # type: ignore[arg-type]
    part.commit(2)
    assert part.search(np.arange(8, dtype=np.float32), 1)[0].key == 3


def test_scope_filters(tmp_path: Path) -> None:
    part, vectors = filled(tmp_path / "p")
    hits = part.search(vectors[0], 10, Scope(collection_ids=["coll1"]))
    assert len(hits) == 10
    assert all(hit.key % 4 == 1 for hit in hits)
    hits = part.search(vectors[0], 10, Scope(document_ids=["doc3", "doc5"]))
    assert len(hits) == 10
    assert all(hit.key % 20 in (3, 5) for hit in hits)
    both = Scope(collection_ids=["coll1"], document_ids=["doc3", "doc4", "doc5"])
    hits = part.search(vectors[0], 100, both)
    assert {hit.key for hit in hits} == {k for k in range(200) if k % 20 in (5,)}
    assert part.search(vectors[0], 10, Scope(collection_ids=["nope"])) == []
    assert part.search(vectors[0], 10, Scope(collection_ids=[])) == []
    assert len(part.search(vectors[0], 10, Scope())) == 10
    # Exact scores within a scope.
    expected = vectors @ vectors[0]
    for hit in part.search(vectors[0], 5, Scope(collection_ids=["coll2"])):
        assert hit.score == pytest.approx(float(expected[hit.key]), abs=1e-4)


def test_scope_fallback_on_large_partition(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 6000
    vectors = unit(rng, n)
    part = UsearchPartition(tmp_path / "p", DIM)
    rare = {17, 2500, 5999}
    part.upsert(
        [entry(i, vectors[i], f"doc{i}", "rare" if i in rare else f"coll{i % 2}") for i in range(n)]
    )
    part.commit(1)
    # Only 3 entries match: all are returned, best first, even far from the query.
    query = -vectors[2500]
    hits = part.search(query, 10, Scope(collection_ids=["rare"]))
    assert {hit.key for hit in hits} == rare
    assert hits == sorted(hits, key=lambda hit: -hit.score)
    assert part.search(query, 2, Scope(document_ids=["doc5999", "doc17", "doc1"])) != []
    # A large scope (more than the exact-search threshold) goes through the graph.
    hits = part.search(vectors[10], 5, Scope(collection_ids=["coll0"]))
    assert len(hits) == 5
    assert hits[0].key == 10
    assert all(hit.key % 2 == 0 and hit.key not in rare for hit in hits)


def test_graph_overfetch_falls_back_to_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force the graph path for every scope, with a tiny over-fetch, so the filtered graph
    # results are too few and the exact fallback must supply the rest.
    monkeypatch.setattr(vectors_module, "EXACT_SEARCH_MAX", 0)
    monkeypatch.setattr(vectors_module, "MAX_OVERFETCH", 8)
    rng = np.random.default_rng(5)
    n = 2000
    vectors = unit(rng, n)
    part = UsearchPartition(tmp_path / "p", DIM)
    rare = {3, 1000, 1999}
    part.upsert([entry(i, vectors[i], "d", "rare" if i in rare else "common") for i in range(n)])
    part.commit(1)
    hits = part.search(vectors[0], 10, Scope(collection_ids=["rare"]))
    assert {hit.key for hit in hits} == rare
    expected = vectors @ vectors[0]
    assert [hit.key for hit in hits] == sorted(rare, key=lambda k: -expected[k])
    for hit in hits:
        assert hit.score == pytest.approx(float(expected[hit.key]), abs=1e-4)
    # When the graph's filtered hits suffice, they are used as they are.
    hits = part.search(vectors[10], 1, Scope(collection_ids=["common"]))
    assert [hit.key for hit in hits] == [10]


def test_upsert_replaces_and_delete_is_idempotent(tmp_path: Path) -> None:
    part, vectors = filled(tmp_path / "p", n=50)
    part.upsert([entry(5, vectors[40], "moved", "elsewhere")])
    part.commit(51)
    assert part.count() == 50
    hits = part.search(vectors[40], 2)
    assert {hit.key for hit in hits} == {5, 40}
    assert all(hit.score == pytest.approx(1.0, abs=1e-5) for hit in hits)
    assert [h.key for h in part.search(vectors[40], 5, Scope(collection_ids=["elsewhere"]))] == [5]
    assert {h.key for h in part.search(vectors[5], 5, Scope(document_ids=["doc5"]))} == {25, 45}
    # Replay of the same upsert: unchanged.
    part.upsert([entry(5, vectors[40], "moved", "elsewhere")])
    part.commit(51)
    assert part.count() == 50
    part.delete([5, 12345])
    part.commit(52)
    part.delete([5])
    part.commit(53)
    assert part.count() == 49
    assert 5 not in part.keys()
    assert 5 not in {hit.key for hit in part.search(vectors[40], 10)}
    assert part.search(vectors[40], 5, Scope(collection_ids=["elsewhere"])) == []


def test_persistence_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part, vectors = filled(path, n=100)
    part.commit(120)
    part.close()
    with pytest.raises(RuntimeError):
        part.search(vectors[0], 1)
    again = UsearchPartition(path)
    assert again.applied_seq == 120
    assert again.dimension == DIM
    assert again.count() == 100
    assert again.keys() == set(range(100))
    assert again.search(vectors[42], 1)[0].key == 42
    hits = again.search(vectors[0], 3, Scope(collection_ids=["coll3"]))
    assert all(hit.key % 4 == 3 for hit in hits)
    # Only the current generation's files are kept.
    assert len(list(path.glob("vectors.*.usearch"))) == 1
    assert len(list(path.glob("entries.*.npz"))) == 1


def test_section_flags_are_kept_replaced_dropped_and_saved(tmp_path: Path) -> None:
    path = tmp_path / "p"
    vectors = unit(np.random.default_rng(3), 6)
    part = UsearchPartition(path, DIM)
    part.upsert([
        IndexEntry(key, "d", "c", f"text {key}", vectors[key], continues=key % 2 == 1)
        for key in range(6)
    ])
    assert part.continuing(range(6)) == set()  # buffered until the commit
    part.commit(6)
    assert part.continuing(range(6)) == {1, 3, 5}
    assert part.continuing([0, 3, 99]) == {3}  # unknown keys continue nothing
    # An upsert replaces the flag; a delete drops it.
    part.upsert([IndexEntry(1, "d", "c", "text 1", vectors[1], continues=False)])
    part.delete([5])
    part.commit(8)
    assert part.continuing(range(6)) == {3}
    part.close()
    again = UsearchPartition(path)
    assert again.continuing(range(10)) == {3}
    again.close()


def test_a_partition_saved_without_flags_cannot_tell_until_restored_or_cleared(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p"
    part, vectors = filled(path, n=10)
    part.close()
    strip_section_flags(path)
    old = UsearchPartition(path)
    assert old.continuing([1, 2]) is None
    # New entries do not make the old ones known, and the flags are not saved as if they were.
    old.upsert([IndexEntry(50, "d", "c", "text", vectors[0], continues=True)])
    old.commit(11)
    assert old.continuing([50]) is None
    old.close()
    reopened = UsearchPartition(path)
    assert reopened.continuing([50]) is None
    # Flags read for other entries than it holds are refused; for its own, they are set.
    assert not reopened.restore_sections(range(10), [1])
    assert reopened.continuing([1]) is None
    assert reopened.restore_sections([*range(10), 50], [1, 50, 77])
    assert reopened.continuing([1, 2, 50, 77]) == {1, 50}
    # A rebuild starts with a clear: from then on the flags are complete.
    reopened.clear()
    reopened.upsert([IndexEntry(50, "d", "c", "text", vectors[0], continues=True)])
    reopened.commit(1)
    assert reopened.continuing([50, 1]) == {50}
    reopened.close()
    assert UsearchPartition(path).continuing([50]) == {50}


def test_uncommitted_changes_invisible_and_lost(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part, vectors = filled(path, n=30)
    part.upsert([entry(100, -vectors[0])])
    part.delete([0])
    assert part.search(vectors[0], 1)[0].key == 0
    assert part.count() == 30
    assert 100 not in part.keys()
    part.close()
    again = UsearchPartition(path, DIM)
    assert again.applied_seq == 30
    assert again.keys() == set(range(30))


def test_clear(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part, vectors = filled(path, n=30)
    part.upsert([entry(100, vectors[1])])
    part.clear()
    assert part.applied_seq == 0
    assert part.count() == 0
    assert part.keys() == set()
    assert part.search(vectors[0], 5) == []
    assert part.dimension == DIM
    part.commit(0)
    assert part.count() == 0
    again = UsearchPartition(path)
    assert again.count() == 0
    assert again.applied_seq == 0
    part.upsert([entry(7, vectors[3])])
    part.commit(1)
    assert part.search(vectors[3], 5)[0].key == 7


def test_two_instances_share_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "p"
    first, vectors = filled(path, n=40)
    second = UsearchPartition(path)
    assert second.count() == 40
    first.upsert([entry(500, -vectors[0], "new", "newc")])
    first.commit(41)
    assert second.count() == 40
    second.refresh()
    assert second.applied_seq == 41
    assert second.count() == 41
    assert second.search(-vectors[0], 1)[0].key == 500
    # The second writes next (the caller serialises writers); the first picks it up.
    second.delete([500])
    second.commit(42)
    first.refresh()
    assert first.applied_seq == 42
    assert 500 not in first.keys()
    first.commit(43)  # the mark alone moves
    second.refresh()
    assert second.applied_seq == 43
    second.refresh()  # nothing changed
    first.clear()
    second.refresh()
    assert second.count() == 0
    assert second.applied_seq == 0


def test_keys_count_memory(tmp_path: Path) -> None:
    part, _ = filled(tmp_path / "p", n=60)
    assert part.count() == len(part.keys()) == 60
    assert part.memory_bytes() > 60 * DIM * 4


def test_searches_while_committing(tmp_path: Path) -> None:
    part, vectors = filled(tmp_path / "p", n=100)
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                assert part.search(vectors[1], 3)
                part.search(vectors[2], 3, Scope(collection_ids=["coll1"]))
                part.count()
                part.keys()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    rng = np.random.default_rng(11)
    for seq in range(101, 111):
        part.upsert([entry(1000 + seq, unit(rng, 1)[0], "x", "coll1")])
        part.delete([seq - 100])
        part.commit(seq)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert part.count() == 100


def test_checkpointed_commits_save_lazily_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "vectors"
    part = UsearchPartition(path, 4, checkpoint_seconds=3600)
    part.upsert([entry(1, np.array([1, 0, 0, 0], dtype=np.float32))])
    part.commit(1)  # a first commit right after opening is within the checkpoint interval
    assert part.applied_seq == 1 and part.count() == 1
    assert part.durable_seq == 0
    # Another instance sees only what was saved: a crash now would replay from seq 0.
    other = UsearchPartition(path, 4)
    assert other.applied_seq == 0 and other.count() == 0
    other.close()
    part.flush()
    assert part.durable_seq == 1
    part.upsert([entry(2, np.array([0, 1, 0, 0], dtype=np.float32))])
    part.commit(2)
    part.close()  # saves the rest
    reopened = UsearchPartition(path, 4)
    assert reopened.applied_seq == 2 and reopened.keys() == {1, 2}
    reopened.close()
