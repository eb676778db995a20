"""The tantivy (BM25) partition, on real files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ragd.index.base import STATE_FILE, LexicalPartition, Scope
from ragd.index.lexical import TantivyPartition
from ragd.ops.files import write_json_atomic
from ragd.stores.catalog import IndexEntry

DOCS = [
    (1, "d1", "c1", "The quick brown fox jumps over the lazy dog"),
    (2, "d1", "c1", "Runner runs every morning in the park"),
    (3, "d2", "c1", "Installing the printer driver on Linux"),
    (4, "d3", "c2", "The printer jammed while printing invoices"),
    (5, "d4", "c2", "Quarterly invoices are stored in the finance folder"),
]


def entry(key: int, document_id: str, collection_id: str, text: str) -> IndexEntry:
    return IndexEntry(key, document_id, collection_id, text, None)


def filled(path: Path, seq: int = 5) -> TantivyPartition:
    part = TantivyPartition(path)
    part.upsert([entry(*row) for row in DOCS])
    part.commit(seq)
    return part


def keys_of(part: TantivyPartition, query: str, scope: Scope | None = None) -> list[int]:
    return [hit.key for hit in part.search(query, 10, scope)]


def test_satisfies_protocol(tmp_path: Path) -> None:
    part: LexicalPartition = TantivyPartition(tmp_path / "p")
    assert part.applied_seq == 0
    assert part.count() == 0
    assert part.search("anything", 10) == []
    part.close()


def test_search_ranks_matching_document_first(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    hits = part.search("printer driver linux", 10)
    assert hits[0].key == 3
    assert {hit.key for hit in hits} == {3, 4}
    assert hits[0].score > hits[1].score > 0
    assert [hit.key for hit in part.search("printer driver linux", 1)] == [3]
    assert part.search("xylophone", 10) == []
    assert part.search("", 10) == []
    assert part.search("   ...  ", 10) == []
    assert part.search("printer", 0) == []


def test_stemming(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    assert keys_of(part, "running") == [2]
    assert keys_of(part, "RUN") == [2]
    assert set(keys_of(part, "invoice")) == {4, 5}


@pytest.mark.parametrize(
    "query",
    [
        'AND OR NOT "unbalanced ( ) : * ~ ^ title:foo',
        "text:printer",
        "key:1",
        "printer^10",
        "[1 TO 5]",
        "-printer +invoices",
        "*",
        "\\",
        '"',
        "\x00\u200b🙂 日本語",
        "a" * 500,
        "printer " * 5000,
    ],
)
def test_hostile_queries_never_raise(tmp_path: Path, query: str) -> None:
    part = filled(tmp_path / "p")
    hits = part.search(query, 10)
    assert all(isinstance(hit.key, int) for hit in hits)


def test_query_words_are_not_syntax(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    # "text:printer" is the two words "text" and "printer", not a field query.
    assert set(keys_of(part, "text:printer")) == {3, 4}
    # NOT is a word (or a stop word), never negation: printer documents still match.
    assert set(keys_of(part, "NOT printer")) == {3, 4}


def test_scope_filters(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    unscoped = {hit.key: hit.score for hit in part.search("printer invoices", 10)}
    assert set(unscoped) == {3, 4, 5}
    assert set(keys_of(part, "printer invoices", Scope(collection_ids=["c1"]))) == {3}
    assert set(keys_of(part, "printer invoices", Scope(collection_ids=["c2"]))) == {4, 5}
    assert set(keys_of(part, "printer invoices", Scope(collection_ids=["c1", "c2"]))) == {
        3,
        4,
        5,
    }
    assert set(keys_of(part, "printer invoices", Scope(document_ids=["d4"]))) == {5}
    assert set(keys_of(part, "printer invoices", Scope(document_ids=["d2", "d3"]))) == {3, 4}
    both = Scope(collection_ids=["c2"], document_ids=["d2", "d3"])
    assert keys_of(part, "printer invoices", both) == [4]
    assert keys_of(part, "printer invoices", Scope(collection_ids=["nope"])) == []
    assert keys_of(part, "printer invoices", Scope(collection_ids=[])) == []
    assert set(keys_of(part, "printer invoices", Scope())) == {3, 4, 5}
    # Filtering does not change the BM25 scores.
    scoped = part.search("printer invoices", 10, Scope(collection_ids=["c2"]))
    for hit in scoped:
        assert hit.score == pytest.approx(unscoped[hit.key])


def test_scope_ids_are_exact_not_tokenized(tmp_path: Path) -> None:
    part = TantivyPartition(tmp_path / "p")
    part.upsert([entry(1, "Doc A-1", "Coll X", "alpha"), entry(2, "doc", "coll", "alpha")])
    part.commit(1)
    assert keys_of(part, "alpha", Scope(document_ids=["Doc A-1"])) == [1]
    assert keys_of(part, "alpha", Scope(document_ids=["doc a-1"])) == []
    assert keys_of(part, "alpha", Scope(collection_ids=["Coll"])) == []
    assert keys_of(part, "alpha", Scope(collection_ids=["coll"])) == [2]


def test_upsert_replaces(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    part.upsert([entry(3, "d2", "c1", "Configuring the scanner")])
    part.upsert([entry(3, "d2", "c1", "Configuring the scanner on Windows")])
    part.commit(6)
    assert part.count() == len(DOCS)
    assert keys_of(part, "scanner") == [3]
    assert 3 not in keys_of(part, "printer")
    # Replaying the same upsert (after a crash) changes nothing.
    part.upsert([entry(3, "d2", "c1", "Configuring the scanner on Windows")])
    part.commit(6)
    assert part.count() == len(DOCS)
    assert keys_of(part, "scanner windows") == [3]


def test_delete_is_idempotent(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    part.delete([4, 999])
    part.commit(6)
    assert part.count() == len(DOCS) - 1
    assert keys_of(part, "printer") == [3]
    part.delete([4])
    part.delete([4, 12345])
    part.commit(7)
    assert part.count() == len(DOCS) - 1
    assert part.keys() == {1, 2, 3, 5}
    assert part.applied_seq == 7


def test_delete_then_upsert_in_one_batch(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    part.delete([1])
    part.upsert([entry(1, "d1", "c1", "resurrected zebra")])
    part.upsert([entry(2, "d1", "c1", "soon gone")])
    part.delete([2])
    part.commit(6)
    assert keys_of(part, "zebra") == [1]
    assert part.keys() == {1, 3, 4, 5}


def test_persistence_and_applied_seq(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part = filled(path, seq=42)
    assert part.applied_seq == 42
    part.commit(43)  # nothing buffered: only the mark moves
    part.close()
    again = TantivyPartition(path)
    assert again.applied_seq == 43
    assert again.count() == len(DOCS)
    assert again.keys() == {1, 2, 3, 4, 5}
    assert keys_of(again, "printer driver")[0] == 3
    with pytest.raises(RuntimeError):
        part.search("printer", 10)


def test_uncommitted_changes_invisible_and_lost(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part = filled(path)
    part.upsert([entry(10, "d9", "c9", "pending zebra")])
    part.delete([1])
    assert keys_of(part, "zebra") == []
    assert keys_of(part, "fox") == [1]
    assert part.count() == len(DOCS)
    part.close()
    again = TantivyPartition(path)
    assert again.applied_seq == 5
    assert keys_of(again, "zebra") == []
    assert keys_of(again, "fox") == [1]


def test_clear(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part = filled(path)
    part.upsert([entry(10, "d9", "c9", "pending zebra")])
    part.clear()
    assert part.applied_seq == 0
    assert part.count() == 0
    assert part.keys() == set()
    assert part.search("printer", 10) == []
    part.commit(0)
    assert part.search("zebra", 10) == []  # the pending upsert went with the clear
    assert TantivyPartition(path).applied_seq == 0
    part.upsert([entry(7, "d", "c", "printer")])
    part.commit(1)
    assert keys_of(part, "printer") == [7]


def test_two_instances_share_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "p"
    first = filled(path)
    second = TantivyPartition(path)
    assert second.applied_seq == 5
    first.upsert([entry(10, "d9", "c9", "zebra crossing")])
    first.commit(6)
    second.refresh()
    assert second.applied_seq == 6
    assert keys_of(second, "zebra") == [10]
    # The first's writer is released after its commit: the second can write now...
    second.delete([10])
    second.commit(7)
    first.refresh()
    assert first.applied_seq == 7
    assert keys_of(first, "zebra") == []
    # ...and the first again after that.
    first.clear()
    second.refresh()
    assert second.count() == 0
    assert second.applied_seq == 0
    second.refresh()  # nothing changed: cheap no-op
    assert second.count() == 0


@pytest.mark.slow
def test_another_process_can_write_after_commit(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part = filled(path)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from ragd.stores.catalog import IndexEntry
        from ragd.index.lexical import TantivyPartition
        part = TantivyPartition(Path({str(path)!r}))
        assert part.applied_seq == 5, part.applied_seq
        part.upsert([IndexEntry(20, "d", "c", "giraffe", None)])
        part.commit(6)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    part.refresh()
    assert part.applied_seq == 6
    assert keys_of(part, "giraffe") == [20]
    part.upsert([entry(21, "d", "c", "giraffe neck")])
    part.commit(7)
    assert set(keys_of(part, "giraffe")) == {20, 21}


def test_memory_bytes_and_keys(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    assert part.memory_bytes() > 0
    assert part.keys() == {1, 2, 3, 4, 5}
    assert part.count() == len(part.keys())


def test_searches_while_committing(tmp_path: Path) -> None:
    part = filled(tmp_path / "p")
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                assert part.search("printer", 3)
                part.search("invoices", 3, Scope(collection_ids=["c2"]))
                part.count()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for thread in threads:
        thread.start()
    for seq in range(6, 16):
        part.upsert([entry(100 + seq, "dx", "c2", f"invoices batch {seq}")])
        part.commit(seq)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert part.count() == len(DOCS) + 10


def test_crash_between_data_and_sidecar_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "p"
    part = filled(path)
    part.upsert([entry(3, "d2", "c1", "scanner manual")])
    part.delete([1])
    part.commit(6)
    part.close()
    # Simulate a crash after tantivy's commit but before the sidecar was written.
    write_json_atomic(path / STATE_FILE, {"applied_seq": 5})
    again = TantivyPartition(path)
    assert again.applied_seq == 5
    again.upsert([entry(3, "d2", "c1", "scanner manual")])  # the replay
    again.delete([1])
    again.commit(6)
    assert again.applied_seq == 6
    assert again.keys() == {2, 3, 4, 5}
    assert keys_of(again, "scanner") == [3]
