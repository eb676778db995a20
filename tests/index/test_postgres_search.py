"""The PostgreSQL search backend (``index/postgres.py``) on a real PostgreSQL with pgvector:
both dense paths (exact and the HNSW walk with its exact fallback), tenant isolation on each,
the lexical leg's bounded candidate set against exact BM25, hostile query text, metadata
filters in SQL (against the Python predicate they translate), verify and rebuild, a commit
seen at once by another engine, the upgrade of a populated database to migration 0007, and
the factory. The contract every backend keeps is ``tests/contracts/test_search_backend.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.pgsearch import vector_literal
from ragd.errors import InvalidInput
from ragd.index.base import Hit, Scope
from ragd.index.bm25 import (
    RARER_THAN_LISTED,
    Term,
    bm25_sql,
    idf,
    level_tsquery,
    plan,
    relaxations,
    tsquery,
)
from ragd.index.factory import build_search_backend
from ragd.index.postgres import PostgresSearch, _Where
from ragd.index.sql_filter import metadata_condition
from ragd.ops.files import FileChangeSignal
from ragd.retrieval.filters import _as_date, compile_filter
from ragd.stores.catalog import Catalog, CommitOutcome, Upload
from ragd.stores.sql_catalog import SqlCatalog
from tests.conftest import make_settings
from tests.contracts.backends import PostgresBackend
from tests.contracts.content import (
    Ingested,
    chunks,
    claim,
    ingest,
    new_collection,
    unit_vector,
    version_commit,
)
from tests.contracts.site import Site, open_site
from tests.postgres import PostgresServer


@pytest.fixture
async def site(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Site]:
    """A deployment on a fresh database of the run's PostgreSQL (started by ``postgres``)."""
    opened = await open_site(PostgresBackend(), tmp_path / "data")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def tenants(site: Site) -> tuple[str, str]:
    identity = site.identity()
    return (await identity.create_tenant("acme")).id, (await identity.create_tenant("globex")).id


def _keys(hits: Sequence[Hit]) -> list[int]:
    return [hit.key for hit in hits]


def _backend(site: Site, catalog: Catalog, **tuning: Any) -> PostgresSearch:
    return PostgresSearch(site.db, catalog, **tuning)


async def _documents(
    site: Site, catalog: Catalog, tenant: str, collection: str, count: int, *, seed: int,
    texts: Sequence[str] = ("a note",), per_document: int = 1,
    metadata: Sequence[dict[str, Any]] | None = None,
) -> list[Ingested]:
    """``count`` documents of ``per_document`` chunks each (texts cycled), committed as a
    worker commits them; chunk ``j`` of document ``i`` has the unit vector of
    ``seed + i * per_document + j``."""
    queue = site.queue()
    made = []
    for i in range(count):
        body = [texts[(i * per_document + j) % len(texts)] for j in range(per_document)]
        content = f"{seed}:{i}:" + "\n".join(body)  # unique: no document is a duplicate
        accepted = await catalog.add_document(tenant, collection, Upload(
            content=content.encode(), content_sha256=hashlib.sha256(content.encode()).hexdigest(),
            content_type="text/plain", filename=None, title=f"doc {i}",
            metadata=None if metadata is None else metadata[i],
        ), max_attempts=3)
        assert accepted.job is not None
        job = await claim(queue, accepted.job.id)
        new = chunks(accepted.document.id, 1, body, seed=seed + i * per_document)
        outcome = await catalog.commit_version(version_commit(job, accepted.document.id, 1, new))
        assert outcome is CommitOutcome.COMMITTED
        assert await queue.complete(job.id, "worker-1")
        stored = await catalog.list_chunks(tenant, accepted.document.id, limit=500)
        document = await catalog.get_document(tenant, accepted.document.id)
        assert document is not None
        made.append(Ingested(document, tuple(chunk.key for chunk in stored)))
    return made


# -- dense ------------------------------------------------------------------------------------


async def test_the_hnsw_walk_and_the_exact_scan_agree_and_stay_in_the_tenant(
    site: Site, tenants: tuple[str, str]
) -> None:
    mine, theirs = tenants
    catalog = site.catalog()
    ours = await _documents(site, catalog, mine, await new_collection(catalog, mine), 12,
                            seed=100, per_document=10)
    await _documents(site, catalog, theirs, await new_collection(catalog, theirs), 12,
                     seed=1000, per_document=10)
    exact = _backend(site, catalog, exact_max=10**6)
    walk = _backend(site, catalog, exact_max=0)
    await walk.publish(mine)  # builds the HNSW index of the dimension now in use
    async with site.db.read() as s:
        indexes = (await s.execute(text(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' "
            "AND indexname LIKE 'ix_chunks_embedding_%'"
        ))).scalars().all()
    assert indexes == ["ix_chunks_embedding_8"]
    own = {key for document in ours for key in document.keys}
    for probe in (100, 157, 219, 1003):  # three of ours, one of theirs
        query = unit_vector(probe)
        by_walk = await walk.dense_search(mine, query, 10)
        by_scan = await exact.dense_search(mine, query, 10)
        assert set(_keys(by_walk)) <= own and set(_keys(by_scan)) <= own
        assert _keys(by_walk) == _keys(by_scan)
        assert [h.score for h in by_walk] == pytest.approx([h.score for h in by_scan], abs=1e-5)
        scores = [hit.score for hit in by_walk]
        assert scores == sorted(scores, reverse=True)
        if probe < 1000:
            assert by_walk[0].score == pytest.approx(1.0, abs=1e-5)
            assert math.isclose(by_scan[0].score, 1.0, abs_tol=1e-5)


async def test_a_small_tenant_in_a_big_table_gets_complete_results(
    site: Site, tenants: tuple[str, str]
) -> None:
    """The walk visits a bounded number of tuples, most of them another tenant's: it comes
    back short, and the search is then done exactly."""
    big, small = tenants
    catalog = site.catalog()
    await _documents(site, catalog, big, await new_collection(catalog, big), 20, seed=0,
                     per_document=15)
    few = await _documents(site, catalog, small, await new_collection(catalog, small), 3,
                           seed=5000, per_document=4)
    search = _backend(site, catalog, exact_max=5, ef_search=1, max_scan_tuples=1)
    await search.publish(small)
    everything = {key for document in few for key in document.keys}
    hits = await search.dense_search(small, unit_vector(42), 12)
    assert set(_keys(hits)) == everything
    expected = await _backend(site, catalog, exact_max=10**6).dense_search(
        small, unit_vector(42), 12
    )
    assert _keys(hits) == _keys(expected)
    # Once the planner knows the table's size, the tenant's share (12 of 312 rows) is too
    # small for a walk of one tuple: searched exactly at once, just as complete.
    async with site.db.engine.connect() as base:
        conn = await base.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE chunks"))
    analysed = _backend(site, catalog, exact_max=5, ef_search=1, max_scan_tuples=1)
    assert _keys(await analysed.dense_search(small, unit_vector(42), 12)) == _keys(expected)
    # The walk alone is short here: the exact scan is what completed the answer.
    async with site.db.read() as s:
        conn = await s.connection()
        where = _Where(small, None)
        walked = await search._walk(conn, where, 8, {
            **where.params, "query": vector_literal(unit_vector(42)), "limit": 12,
        }, 12, settings=True)
    assert len(walked) < 12


async def test_dense_search_of_odd_vectors_is_empty_not_an_error(
    site: Site, tenants: tuple[str, str]
) -> None:
    mine, _ = tenants
    catalog = site.catalog()
    await _documents(site, catalog, mine, await new_collection(catalog, mine), 2, seed=1)
    search = _backend(site, catalog)
    assert await search.dense_search(mine, unit_vector(1, dimension=16), 5) == []  # other dim
    assert await search.dense_search(mine, np.full(8, np.nan, dtype=np.float32), 5) == []
    assert await search.dense_search(mine, np.zeros((2, 4), dtype=np.float32), 5) == []
    assert await search.dense_search(mine, unit_vector(1), 0) == []
    assert await search.dense_search(mine, unit_vector(1), 5, Scope(collection_ids=set())) == []


# -- lexical ----------------------------------------------------------------------------------

COMMON = "Cranes unload containers in the harbour {n}"
RARE = "The lighthouse keeper watched the harbour cranes {pad}"


async def test_common_words_over_many_chunks_still_find_the_best_hits(
    site: Site, tenants: tuple[str, str]
) -> None:
    """300 chunks hold the common words; five also hold a rare one. With a candidate budget
    far below the matches, the five rank first, in exact BM25's order."""
    mine, theirs = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    texts = [COMMON.format(n=n) for n in range(300)]
    await _documents(site, catalog, mine, collection, 30, seed=0, texts=texts, per_document=10)
    rare = [RARE.format(pad=" ".join(["again"] * n)) for n in range(5)]
    keepers = await _documents(site, catalog, mine, collection, 5, seed=900, texts=rare)
    await _documents(site, catalog, theirs, await new_collection(catalog, theirs), 3, seed=7,
                     texts=rare)
    bounded = _backend(site, catalog, df_cap=20, budget=40)
    exact = _backend(site, catalog, df_cap=10**6, budget=10**6)
    query = "harbour cranes lighthouse"
    expected = [k for document in keepers for k in document.keys]  # shortest first
    found = await bounded.lexical_search(mine, query, 10)
    assert _keys(found)[:5] == expected
    assert _keys(await exact.lexical_search(mine, query, 10))[:5] == expected
    assert len(found) == 10
    # Common words alone still rank a bounded set of their matches.
    common = await bounded.lexical_search(mine, "harbour containers", 100)
    assert 0 < len(common) <= 100
    scores = [hit.score for hit in common]
    assert scores == sorted(scores, reverse=True)
    # The other tenant's copies of the rare text are never found here.
    mine_keys = {key for key in _keys(await exact.lexical_search(mine, "lighthouse", 100))}
    assert mine_keys == set(expected)


async def test_queries_of_common_words_rank_the_rows_holding_the_most_of_them(
    site: Site, tenants: tuple[str, str]
) -> None:
    """Every query word is common, no row holds all of them, and a hundred rows holding only
    the commonest come first in the table. The candidates are relaxed one word at a time,
    the commonest first, so the five rows holding the two rarer words are found, in exact
    BM25's order (an arbitrary sample of rows holding any of the words would be the first
    hundred)."""
    mine, _ = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    await _documents(site, catalog, mine, collection, 10, seed=0, per_document=10,
                     texts=[f"harbour pilots {n}" for n in range(100)])
    await _documents(site, catalog, mine, collection, 2, seed=200, per_document=10,
                     texts=[f"containers stacked {n}" for n in range(20)])
    await _documents(site, catalog, mine, collection, 5, seed=300, per_document=5,
                     texts=[f"cranes idle {n}" for n in range(25)])
    keepers = await _documents(site, catalog, mine, collection, 5, seed=400, texts=[
        "cranes lift containers " + " ".join(["again"] * n) for n in range(5)])
    async with site.db.statements() as conn:
        await conn.execute(text("ANALYZE chunks"))
    bounded = _backend(site, catalog, df_cap=20, budget=40)
    exact = _backend(site, catalog, df_cap=10**6, budget=10**6)
    query = "harbour cranes containers"
    expected = [k for document in keepers for k in document.keys]  # shortest first
    assert _keys(await exact.lexical_search(mine, query, 5)) == expected
    assert _keys(await bounded.lexical_search(mine, query, 5)) == expected


async def test_a_word_that_a_new_document_brings_is_found_at_once(
    site: Site, tenants: tuple[str, str]
) -> None:
    """Term counts and a word's terms are remembered between searches; a word in no chunk
    is not, so the search right after the commit that brings it finds it."""
    mine, _ = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    await _documents(site, catalog, mine, collection, 3, seed=0, texts=["harbour cranes"])
    search = _backend(site, catalog)
    assert len(await search.lexical_search(mine, "harbour lighthouse", 10)) == 3
    assert await search.lexical_search(mine, "lighthouse", 10) == []
    [made] = await _documents(site, catalog, mine, collection, 1, seed=50,
                              texts=["the lighthouse keeper"])
    assert _keys(await search.lexical_search(mine, "lighthouse", 10)) == list(made.keys)
    assert _keys(await search.lexical_search(mine, "harbour lighthouse", 10))[0] in made.keys


async def test_lexical_scores_are_bm25(site: Site, tenants: tuple[str, str]) -> None:
    """The score of a one-chunk match is tantivy's BM25 for the tenant's statistics."""
    mine, _ = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    texts = ["Glaciers carve fjords", "Meltwater feeds the rivers below the glaciers",
             "Basalt columns by the sea", "Pilots guide ships into port"]
    await _documents(site, catalog, mine, collection, 4, seed=0, texts=texts)
    hits = await _backend(site, catalog).lexical_search(mine, "fjords", 10)
    assert len(hits) == 1
    chunks_total, df = 4, 1
    average = sum(len(t.split()) for t in texts) / 4  # token counts of the test chunks
    idf = math.log(1 + (chunks_total - df + 0.5) / (df + 0.5))
    length = len(texts[0].split())
    expected = idf * 2.2 / (1 + 1.2 * (1 - 0.75 + 0.75 * length / average))
    assert hits[0].score == pytest.approx(expected, rel=1e-6)


HOSTILE = [
    "", "   ", "\x00", "harbour\x00cranes", "\ud800harbour", "'", "''", "\\", "\\'",
    "a & b | !c", "harbour:*", "harbour <-> cranes", "(((", "harbour:A", "!!!!", "-harbour",
    '"unbalanced', "AND OR NOT", "the of and a", "*", "\u200b\u200b", "\U0001f600 harbour",
    "\u05e9\u05dc\u05d5\u05dd", "e\u0301te\u0301", "x" * 5000,
    " ".join(f"w{i}" for i in range(2000)), "harbour " * 1000, "%s %(x)s :tenant $1 ?",
    "'; DROP TABLE chunks; --",
]


async def test_hostile_query_text_never_raises(site: Site, tenants: tuple[str, str]) -> None:
    mine, _ = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    await _documents(site, catalog, mine, collection, 2, seed=0,
                     texts=["Cranes unload containers in the harbour", "Pilots guide ships"])
    search = _backend(site, catalog)
    for query in HOSTILE:
        hits = await search.lexical_search(mine, query, 5)
        assert isinstance(hits, list), query
    assert await search.lexical_search(mine, "the of and a", 5) == []  # stop words only
    assert len(await search.lexical_search(mine, "harbour\x00cranes", 5)) == 1
    assert len(await search.lexical_search(mine, "HARBOUR!!!", 5)) == 1
    assert len(await search.lexical_search(mine, "'; DROP TABLE chunks; --", 5)) == 0
    assert len(await search.lexical_search(mine, "harbour", 5)) == 1  # the table is still there


async def test_words_are_split_like_the_embedded_index_whatever_the_locale(
    site: Site, tenants: tuple[str, str]
) -> None:
    mine, _ = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    texts = ["Use os.path.join() on CAFÉ_Übermäßig files", "apt-get install python3.11"]
    found = await _documents(site, catalog, mine, collection, 2, seed=0, texts=texts)
    search = _backend(site, catalog)
    for query, document in (("path join", 0), ("café", 0), ("übermäßig", 0), ("apt", 1),
                            ("python3", 1), ("11", 1), ("get install", 1)):
        assert _keys(await search.lexical_search(mine, query, 5)) == list(found[document].keys)


# -- scope and metadata filters -----------------------------------------------------------------


async def test_filters_and_scopes_run_in_sql_in_both_legs(
    site: Site, tenants: tuple[str, str]
) -> None:
    """A selective filter narrows the candidates, so the few matches are all found even
    with a small limit (a filter after retrieval would have starved)."""
    mine, _ = tenants
    catalog = site.catalog()
    first = await new_collection(catalog, mine, "First")
    second = await new_collection(catalog, mine, "Second")
    metadata = [{"year": 2000 + i, "lang": "de" if i % 10 == 0 else "en",
                 "tags": ["ports"] if i % 7 == 0 else []} for i in range(40)]
    docs = await _documents(site, catalog, mine, first, 40, seed=0, metadata=metadata,
                            texts=["Cranes unload containers in the harbour"])
    other = await _documents(site, catalog, mine, second, 2, seed=500,
                             texts=["Cranes unload containers in the harbour"])
    search = _backend(site, catalog)
    german = {docs[i].keys[0] for i in (0, 10, 20, 30)}
    by_lang = Scope(metadata={"lang": "de"})
    assert set(_keys(await search.dense_search(mine, unit_vector(5), 4, by_lang))) == german
    assert set(_keys(await search.lexical_search(mine, "harbour", 4, by_lang))) == german
    ranged = Scope(metadata={"year": {"gte": 2035}, "tags": {"exists": True}})
    expected = {docs[i].keys[0] for i in range(35, 40)}
    assert set(_keys(await search.dense_search(mine, unit_vector(1), 10, ranged))) == expected
    listed = Scope(metadata={"tags": "ports"})
    sevens = {docs[i].keys[0] for i in range(0, 40, 7)}
    assert set(_keys(await search.lexical_search(mine, "cranes", 50, listed))) == sevens
    # Scopes: a collection, a document, and a filter with a scope.
    in_second = Scope(collection_ids={second})
    assert set(_keys(await search.lexical_search(mine, "harbour", 50, in_second))) == {
        key for document in other for key in document.keys
    }
    one = Scope(document_ids={docs[3].document.id}, metadata={"lang": "en"})
    assert _keys(await search.dense_search(mine, unit_vector(30), 5, one)) == list(docs[3].keys)
    nothing = Scope(document_ids={docs[0].document.id}, metadata={"lang": "en"})
    assert await search.dense_search(mine, unit_vector(0), 5, nothing) == []


_FIELDS = ("a", "year", "tags", "when")
_DATES = [
    "2024-01-01", "2024-01-01T10:00", "2024-01-01T10:00:00Z", "2024-01-01T12:00:00+02:00",
    "2024-01-01 09:30:00.5", "2023-12-31T23:59:59-01:00", "2024-06-30T00:00:00.000001",
    "20240101", "2024-W01-1", "2024-02-30", "2024-13-01", "1999-12-31T23:59:60",
]
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-50, 50),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False),
    st.sampled_from(["x", "y", "", "x y", "ünï", *_DATES]),
)
_METADATA = st.dictionaries(
    st.sampled_from(_FIELDS), st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3)), max_size=4
)
_BOUNDS = st.one_of(st.integers(-50, 50), st.floats(-100, 100, allow_nan=False),
                    st.sampled_from(_DATES))
_CONDITION = st.one_of(
    _SCALARS,
    st.dictionaries(
        st.sampled_from(["eq", "ne", "in", "nin", "exists", "gt", "gte", "lt", "lte"]),
        st.one_of(_SCALARS, _BOUNDS, st.lists(_SCALARS, min_size=1, max_size=3),
                  st.booleans()),
        min_size=1, max_size=2,
    ),
)
_FILTERS = st.dictionaries(st.sampled_from(_FIELDS), _CONDITION, min_size=1, max_size=3)
_CANONICAL_DATE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?)?$"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.fixture(scope="module")
def sql_truth(postgres: PostgresServer) -> Iterator[Any]:
    """Evaluates a filter's SQL condition on one metadata object, in PostgreSQL."""
    loop = asyncio.new_event_loop()
    engine: AsyncEngine = create_async_engine(postgres.url("postgres"))

    def evaluate(spec: dict[str, Any], metadata: dict[str, Any]) -> bool:
        condition = metadata_condition(spec)
        assert condition is not None

        async def run() -> bool:
            async with engine.connect() as conn:
                return bool((await conn.execute(
                    text(f"SELECT ({condition.text}) FROM "  # noqa: S608 - the code under test
                         "(SELECT CAST(:metadata AS jsonb) AS metadata_jsonb) AS d"),
                    {**condition.params, "metadata": json.dumps(metadata)},
                )).scalar_one())

        return loop.run_until_complete(run())

    try:
        yield evaluate
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_FILTERS, metadata=_METADATA)
def test_the_sql_filter_accepts_whatever_the_python_filter_accepts(
    sql_truth: Any, spec: dict[str, Any], metadata: dict[str, Any]
) -> None:
    """Never narrower than the Python predicate (which always runs after retrieval), and
    the same wherever dates are in the canonical forms the SQL compares."""
    import re

    try:
        predicate = compile_filter(spec)
    except InvalidInput:
        assume(False)
        return
    assert predicate is not None
    expected = predicate(metadata)
    found = sql_truth(spec, metadata)
    if expected:
        assert found, (spec, metadata)
    # Exact where every string is a canonical date Python reads, or cannot be a date.
    odd = [s for s in _strings([spec, metadata])
           if not (re.match(_CANONICAL_DATE, s) and _as_date(s) is not None)
           and 8 <= len(s) <= 40 and s[:4].isdigit()]
    if not odd:
        assert found == expected, (spec, metadata)


# -- keeping in step --------------------------------------------------------------------------


async def test_a_commit_is_searchable_at_once_from_another_engine(
    site: Site, tenants: tuple[str, str]
) -> None:
    mine, _ = tenants
    catalog = site.catalog()
    collection = await new_collection(catalog, mine)
    there = site.another_process()
    remote = _backend(there, there.catalog())
    assert await remote.lexical_search(mine, "fjords", 5) == []
    glacier = await ingest(catalog, site.queue(), mine, collection,
                           ["Glaciers carve fjords", "Meltwater feeds rivers"], seed=3)
    # No sync, no notify: the commit that made the version active made it searchable.
    assert _keys(await remote.lexical_search(mine, "fjords", 5)) == [glacier.keys[0]]
    assert _keys(await remote.dense_search(mine, unit_vector(3), 1)) == [glacier.keys[0]]
    assert await catalog.delete_document(mine, glacier.document.id)
    assert await remote.lexical_search(mine, "fjords", 5) == []
    assert await remote.dense_search(mine, unit_vector(3), 5) == []
    assert remote.memory_bytes() == 0 and await remote.sync(mine) == 0


async def test_verify_finds_rows_without_their_search_columns_and_rebuild_refills_them(
    site: Site, tenants: tuple[str, str]
) -> None:
    mine, theirs = tenants
    catalog = site.catalog()
    ours = await ingest(catalog, site.queue(), mine, await new_collection(catalog, mine),
                        ["Glaciers carve fjords", "Meltwater feeds rivers"], seed=3)
    await ingest(catalog, site.queue(), theirs, await new_collection(catalog, theirs),
                 ["Glaciers carve fjords"], seed=9)
    search = _backend(site, catalog)
    assert (await search.verify(mine)).ok
    async with site.db.transaction() as s:
        await s.execute(text("UPDATE chunks SET lexemes = NULL WHERE key = :key"),
                        {"key": ours.keys[0]})
        await s.execute(text("UPDATE chunks SET embedding = NULL WHERE key = :key"),
                        {"key": ours.keys[1]})
    broken = await search.verify(mine)
    assert not broken.ok
    assert (broken.chunks, broken.lexical_missing, broken.vector_missing) == (2, 1, 1)
    assert await search.lexical_search(mine, "fjords", 5) == []
    assert await search.rebuild(mine) == 2
    assert (await search.verify(mine)).ok and (await search.verify(theirs)).ok
    assert _keys(await search.lexical_search(mine, "fjords", 5)) == [ours.keys[0]]
    assert _keys(await search.dense_search(mine, unit_vector(4), 1)) == [ours.keys[1]]


async def test_a_new_version_replaces_the_old_one_in_one_step(
    site: Site, tenants: tuple[str, str]
) -> None:
    """A version staged in batches (the site commits 2 chunks a batch) is invisible until
    the transaction that activates it, then replaces the old one entirely."""
    mine, _ = tenants
    catalog = site.catalog()
    queue = site.queue()
    old = await ingest(catalog, queue, mine, await new_collection(catalog, mine),
                       ["Cranes unload containers"], seed=1)
    replaced = await catalog.replace_document(mine, old.document.id, Upload(
        content=b"v2", content_sha256=hashlib.sha256(b"v2").hexdigest(),
        content_type="text/plain", filename=None), max_attempts=3)
    assert replaced is not None and replaced.job is not None
    job = await claim(queue, replaced.job.id)
    new = chunks(old.document.id, 2, ["Basalt columns", "Basalt flows", "Basalt sand"], seed=7)
    search = _backend(site, catalog)
    assert await catalog.commit_version(version_commit(job, old.document.id, 2, new)) is (
        CommitOutcome.COMMITTED
    )
    assert await search.lexical_search(mine, "cranes", 5) == []
    assert len(await search.lexical_search(mine, "basalt", 5)) == 3
    assert len(await search.dense_search(mine, unit_vector(1), 10)) == 3


# -- schema and wiring --------------------------------------------------------------------------


async def test_upgrading_a_populated_database_backfills_the_search_columns(
    postgres: PostgresServer,
) -> None:
    from alembic import command
    from alembic.config import Config

    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    url = await postgres.create_database(name)

    def to_0006(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        command.upgrade(config, "0006")

    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(to_0006)
        vector = unit_vector(11).tobytes()
        async with db.engine.begin() as conn:
            for sql in (
                "INSERT INTO tenants VALUES ('t1', 'T', 't', 'active', now(), now())",
                "INSERT INTO collections (id, tenant_id, name, name_key, metadata, status, "
                "embedder_name, embedder_dimension, created_at, updated_at) VALUES "
                "('c1', 't1', 'C', 'c', '{}', 'active', 'e', 8, now(), now())",
                "INSERT INTO documents (id, tenant_id, collection_id, title, content_type, "
                "content_sha256, size_bytes, metadata, status, latest_version, active_version, "
                "chunk_count, token_count, keywords, warnings, timings, created_at, updated_at) "
                "VALUES ('d1', 't1', 'c1', 'D', 'text/plain', 'x', 1, '{\"lang\": \"en\"}', "
                "'ready', 1, 1, 1, 4, '[]', '[]', '{}', now(), now())",
            ):
                await conn.execute(text(sql))
            await conn.execute(text(
                "INSERT INTO chunks (id, tenant_id, collection_id, document_id, version, "
                "ordinal, text, heading_path, token_count, start, \"end\", keywords, vector, "
                "created_at) VALUES ('k1', 't1', 'c1', 'd1', 1, 0, 'Glaciers carve fjords', "
                "'[\"Ice > age\"]', 4, 0, 21, '[]', :vector, now())"
            ), {"vector": vector})
        assert await migrate.upgrade(db)
        search = PostgresSearch(db, SqlCatalog(db))
        assert (await search.verify("t1")).ok
        assert len(await search.lexical_search("t1", "fjord age", 5)) == 1
        hits = await search.dense_search("t1", unit_vector(11), 5, Scope(metadata={"lang": "en"}))
        assert len(hits) == 1 and hits[0].score == pytest.approx(1.0, abs=1e-6)
        async with db.read() as s:
            index = (await s.execute(text(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_chunks_embedding_8'"
            ))).scalar_one()
        assert "hnsw" in index and "vector_dims(embedding) = 8" in index
    finally:
        await db.dispose()
        await postgres.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_sqlite_has_none_of_the_search_columns(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'ragd.db'}")
    try:
        await migrate.upgrade(db)
        async with db.read() as s:
            columns = {row[1] for row in (await s.execute(text("PRAGMA table_info(chunks)")))}
        assert "lexemes" not in columns and "embedding" not in columns
    finally:
        await db.dispose()


async def test_the_factory_builds_the_database_backend_and_opens_nothing_on_disk(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data",
                             database={"url": await postgres.fresh_database("factory")})
    db = Database(settings.database_url)
    try:
        built = build_search_backend(settings, db, SqlCatalog(db),
                                     FileChangeSignal(tmp_path / "marker"))
        assert isinstance(built, PostgresSearch) and built.filters_metadata
        assert not (tmp_path / "data").exists()
        assert await built.sync_all() == 0
        built.close()
    finally:
        await db.dispose()


def test_index_verify_and_rebuild_commands_on_postgresql(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """``ragd index verify|rebuild`` reach the database backend: a row without its lexemes
    is reported (exit 1), rebuilt, and then verifies; nothing appears in the data dir's
    index directory."""
    from typer.testing import CliRunner

    from ragd.cli import app as cli
    from tests.conftest import TEST_SECRET

    url = asyncio.run(postgres.fresh_database("cli"))
    tenant = asyncio.run(_one_broken_tenant(url, tmp_path))
    data_dir = tmp_path / "data"
    env = {"RAGD_JWT_SECRET": TEST_SECRET, "RAGD_DATABASE__URL": url}
    runner = CliRunner()
    broken = runner.invoke(cli, ["index", "verify", "--json", "--data-dir", str(data_dir)],
                           env=env)
    assert broken.exit_code == 1, broken.output
    report = json.loads(broken.stdout[broken.stdout.index("["):])
    assert [(r["tenant_id"], r["tenant_name"], r["lexical_missing"], r["state"])
            for r in report] == [(tenant, "acme", 1, "broken")]
    rebuilt = runner.invoke(cli, ["index", "rebuild", "--data-dir", str(data_dir)], env=env)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert f"acme ({tenant})  rebuilt with 2 entries" in rebuilt.output
    fine = runner.invoke(cli, ["index", "verify", "--data-dir", str(data_dir)], env=env)
    assert fine.exit_code == 0 and "ok" in fine.output, fine.output
    assert not (data_dir / "indexes" / tenant).exists()


async def _one_broken_tenant(url: str, tmp_path: Path) -> str:
    """A tenant with one document of two chunks, one of them without its lexemes."""
    from ragd.jobs.queue import SqlJobQueue
    from ragd.stores.factory import build_identity_store, catalog_finalisers

    settings = make_settings(tmp_path / "setup", database={"url": url})
    db = Database(url)
    try:
        tenant = (await build_identity_store(settings, db).create_tenant("acme")).id
        catalog = SqlCatalog(db)
        queue = SqlJobQueue(db, finalisers=catalog_finalisers(settings))
        made = await ingest(catalog, queue, tenant, await new_collection(catalog, tenant),
                            ["Glaciers carve fjords", "Meltwater feeds rivers"], seed=3)
        async with db.transaction() as s:
            await s.execute(text("UPDATE chunks SET lexemes = NULL WHERE key = :key"),
                            {"key": made.keys[0]})
    finally:
        await db.dispose()
    return tenant


# -- the BM25 plan (pure) -----------------------------------------------------------------------

_TERMS = st.lists(
    st.builds(Term, st.text("abcdefgh", min_size=1, max_size=4), st.integers(0, 5000),
              st.booleans()),
    max_size=12, unique_by=lambda term: term.lexeme,
)


@given(terms=_TERMS, cap=st.integers(1, 500), budget=st.integers(1, 2000),
       chunks=st.integers(0, 10_000))
def test_a_plan_bounds_its_candidates_and_keeps_every_term(
    terms: list[Term], cap: int, budget: int, chunks: int
) -> None:
    planned = plan(terms, chunks=chunks, average_length=100.0,
                   frequencies={"ab": 0.5, RARER_THAN_LISTED: 0.01}, cap=cap, budget=budget)
    by_lexeme = {term.lexeme: term for term in terms}
    assert sum(by_lexeme[lexeme].df for lexeme in planned.rare) <= budget
    assert all(by_lexeme[lexeme].df < cap for lexeme in planned.rare)
    assert set(planned.rare) | set(planned.common) == {t.lexeme for t in terms if t.df > 0}
    assert not set(planned.rare) & set(planned.common)
    assert planned.terms == [term.lexeme for term in terms]
    assert all(weight > 0 for weight in planned.idf)
    assert planned.fill >= budget // 4
    if planned.matches_nothing:
        with pytest.raises(ValueError, match="matches nothing"):
            bm25_sql("AND c.tenant_id = :tenant", {"tenant": "t"}, planned, 10)


@given(common=st.lists(st.text("abcdefghij", min_size=1, max_size=3), min_size=1,
                       max_size=30, unique=True),
       levels=st.integers(1, 10), rows=st.lists(st.sets(st.integers(0, 29)), max_size=40))
def test_relaxation_levels_are_disjoint_and_cover_the_rows_of_the_rarest_term(
    common: list[str], levels: int, rows: list[set[int]]
) -> None:
    found = relaxations(common, levels)
    assert 1 <= len(found) <= max(2, levels)
    assert found[0] == (common, [])  # every term first
    assert found[-1][0] == common[:1]  # the rarest alone last
    assert all(len(a[0]) > len(b[0]) for a, b in zip(found, found[1:], strict=False))

    def holds(row: set[int], terms: list[str]) -> bool:
        return all(common.index(term) in row for term in terms)

    for row in rows:
        levels_of_row = [
            n for n, (required, excluded) in enumerate(found)
            if holds(row, required) and not (excluded and holds(row, excluded))
        ]
        assert len(levels_of_row) == (1 if 0 in row else 0)


def test_idf_falls_as_a_term_gets_commoner() -> None:
    weights = [idf(1000, df) for df in (1, 10, 100, 500, 1000)]
    assert weights == sorted(weights, reverse=True) and weights[-1] > 0


async def test_a_relaxation_level_matches_in_postgresql_as_it_reads(site: Site) -> None:
    levels = relaxations(["fjord", "glacier", "isle", "harbour"])
    rows = {"fjord glacier isle harbour": 0, "fjord glacier isle": 1, "fjord glacier harbour": 2,
            "fjord glacier": 2, "fjord isle harbour": 3, "fjord": 3, "glacier isle harbour": None}
    async with site.db.read() as s:
        for words, level in rows.items():
            matched = [
                n for n, (required, excluded) in enumerate(levels)
                if (await s.execute(
                    text("SELECT to_tsvector('simple', :words) @@ CAST(:q AS tsquery)"),
                    {"words": words, "q": level_tsquery(required, excluded)},
                )).scalar_one()
            ]
            assert matched == ([] if level is None else [level]), words


async def test_any_lexeme_is_quoted_into_a_query_of_itself(site: Site) -> None:
    lexemes = ["plain", "it's", "back\\slash", "a:b", "&|!", "'", "\\'", "x y", "ünï", "<->"]
    async with site.db.read() as s:
        for lexeme in lexemes:
            parsed = (await s.execute(
                text("SELECT querytree(CAST(:q AS tsquery))"), {"q": tsquery([lexeme], "|")}
            )).scalar_one()
            literal = "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
            assert parsed == literal, lexeme
    with pytest.raises(ValueError, match="operator"):
        tsquery(["a"], "<->")
