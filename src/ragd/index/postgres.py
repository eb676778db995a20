"""The PostgreSQL search backend: full-text search and pgvector inside the catalog's database.

:class:`PostgresSearch` implements :class:`~ragd.index.base.SearchBackend` over the columns
migration 0007 adds to ``chunks`` (see :mod:`ragd.db.pgsearch`): ``lexemes`` and
``embedding`` are written with the chunk row, so the transaction that activates a version
makes it searchable in every process at once. There is nothing to replay (``sync``,
``notify``, ``publish``, ``flush`` do no index work) and nothing on local disk.

Both legs read the same rows the catalog's search reads return: chunks of their document's
active version, in a collection that is not being deleted, of the caller's tenant, within
the scope (collections, documents) and the metadata filter, all in SQL.

**Dense.** Cosine distance to the query vector. A tenant or scope of at most
``exact_max`` chunk rows (counted with a bound, so the count costs at most that many index
entries) is searched exactly: every row scored, complete and cheap. A larger one goes
through the HNSW index of the query's dimension with pgvector's iterative scan
(``relaxed_order``, re-sorted afterwards): the tenant and scope conditions filter while the
graph is walked, up to ``max_scan_tuples`` tuples. A tenant that is too small a share of
the table for the walk to find ``limit`` of its rows within those tuples is searched
exactly at once; a walk that still comes back short (a narrow scope, a selective filter) is
repeated exactly, so a result is never short because of the index.

**Lexical.** The query is only ever split into words (:func:`~ragd.db.pgsearch.search_words`,
then the ``english`` configuration's stems), never parsed as a query language, so no input
raises and stop words alone find nothing. Any word may match (OR, like the embedded BM25
leg). Ranking is BM25 over a bounded candidate set (:mod:`ragd.index.bm25`), because
scoring every match of a common word is what makes full-text ranking slow on big tenants.
Its term statistics: each query term's document frequency in the tenant is counted up to
``budget`` rows (exact for the terms that discriminate); a common term's is estimated from
the planner's statistics of the column (its share of all rows, scaled to the tenant), and a
term those statistics already call common is not counted at all (counting costs every one
of its entries in the index). The tenant's chunk count and average length come from its
documents' totals. Candidates for common words are relaxed a word at a time, the commonest
dropped first (:func:`~ragd.index.bm25.relaxations`).

**Round trips.** A search is three reads (this module's two legs and the catalog's fetch of
the hits), each a connection of its own, so each leg is one statement when it can be (12
round trips a search before, 3 after; with the relaxed candidates, hybrid p95 at 100k chunks,
two replicas and 8 clients went from 176 to 117 ms): statements run without a transaction
(:meth:`~ragd.db.engine.Database.statements`); a word's terms and a term's count in a tenant
are remembered (a count for ``STATS_SECONDS``; a term in no row is counted again each time,
so the word of a new document is found at once); the walk's settings are set once on each
connection; the pool plans every statement for its values (``plan_cache_mode``, see
:class:`~ragd.db.engine.Database`). A scoped or filtered dense search takes a transaction
to set more for its walk. The visibility rules are a subquery per row rather than a join
(see :class:`_Where`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from ragd.db.engine import Database
from ragd.db.pgsearch import (
    HNSW_MAX_DIMENSION,
    TEXT_SEARCH_CONFIG,
    cosine_distance_sql,
    create_hnsw_sql,
    hnsw_index_name,
    search_words,
    vector_literal,
)
from ragd.db.sequence import lock_id
from ragd.index.base import Hit, Scope, Vector, Verification
from ragd.index.bm25 import RARER_THAN_LISTED, Term, bm25_sql, plan, tsquery
from ragd.index.sql_filter import metadata_condition
from ragd.stores.catalog import ChangeLog, ChunkReader, embed_text

__all__ = ["PostgresSearch"]

logger = logging.getLogger(__name__)

#: pgvector's largest dimension.
MAX_DIMENSION = 16_000
#: A tenant or scope with at most this many chunk rows is searched exactly.
EXACT_MAX = 2_000
#: HNSW candidate list size (at least the number of hits asked for).
EF_SEARCH = 100
#: Tuples the iterative scan may visit before it gives up (a short walk is redone exactly).
MAX_SCAN_TUPLES = 20_000
#: Rows the lexical leg scores per query (at most about twice this many). Term frequencies
#: are counted up to as many rows: a term that does not fit in the budget is sampled
#: anyway, so counting it further would not change which rows are scored.
BUDGET = 250
#: How long the table's common-lexeme frequencies (``pg_stats``) are reused.
COMMON_SECONDS = 600.0
#: Distinct query terms used (the first ones in the query).
MAX_TERMS = 64
#: How long a tenant's average chunk length, and a term's count in a tenant, are reused.
STATS_SECONDS = 30.0
#: Term counts remembered at most (all tenants; forgotten all at once beyond).
MAX_COUNTS = 50_000
#: Query words whose terms are remembered at most (forgotten all at once beyond).
MAX_WORDS = 50_000
#: The key, in a connection's info, of the walk settings set on it for good.
_WALK_SETTINGS = "ragd.walk_settings"
#: Rows a rebuild rewrites per transaction.
REBUILD_BATCH = 500


@dataclass(frozen=True, slots=True)
class _TenantStats:
    chunks: int
    average_length: float
    at: float


class CatalogReads(ChangeLog, ChunkReader, Protocol):
    """What the PostgreSQL backend reads through the catalog: the change log (verify) and
    the section flags of hits (:meth:`ChunkReader.continuing`)."""


class PostgresSearch:
    """Both legs of search in SQL over the catalog's own tables (``db``: its database)."""

    #: The legs apply ``Scope.metadata`` themselves.
    filters_metadata = True

    def __init__(
        self, db: Database, changes: CatalogReads, *, exact_max: int = EXACT_MAX,
        ef_search: int = EF_SEARCH, max_scan_tuples: int = MAX_SCAN_TUPLES,
        budget: int = BUDGET, df_cap: int | None = None,
    ) -> None:
        if not db.is_postgresql:
            raise ValueError("PostgresSearch needs a PostgreSQL database")
        self._db = db
        self._changes = changes
        self._exact_max = exact_max
        self._ef_search = ef_search
        self._max_scan_tuples = max_scan_tuples
        self._budget = budget
        self._df_cap = budget if df_cap is None else df_cap
        self._stats: dict[str, _TenantStats] = {}
        self._counts: dict[tuple[str, str], tuple[int, float]] = {}
        self._lexemes: dict[str, tuple[str, ...]] = {}
        self._common: tuple[float, dict[str, float]] = (-math.inf, {})
        self._table_rows: tuple[float, float] = (-math.inf, -1.0)
        self._indexed: set[int] = set()

    async def continuing(self, tenant_id: str, keys: Sequence[int]) -> set[int]:
        # One indexed self-join in the database that holds the rows (no copy to keep).
        return await self._changes.continuing(tenant_id, keys)

    # -- dense --------------------------------------------------------------------------

    async def dense_search(
        self, tenant_id: str, vector: Vector, limit: int, scope: Scope | None = None
    ) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32)
        if limit <= 0 or query.ndim != 1 or not 0 < query.shape[0] <= MAX_DIMENSION:
            return []
        if not np.all(np.isfinite(query)):
            return []
        where = _Where(tenant_id, scope)
        if where.empty:
            return []
        dimension = int(query.shape[0])
        params = {**where.params, "query": vector_literal(query), "limit": int(limit)}
        # A search of the whole tenant runs its statements alone, with no transaction (its
        # walk's settings are the connection's own, see _walk). A scoped or filtered one
        # sets more for its walk, for the length of a transaction.
        plain = not where.scoped and limit <= self._ef_search
        connect = self._db.statements() if plain else self._db.read()
        async with connect as opened:
            conn = opened if isinstance(opened, AsyncConnection) else await opened.connection()
            tenant = (await self._tenant_stats(conn, tenant_id)).chunks
            size = await self._scope_size(conn, where) if where.chunk_scope else tenant
            if (
                size > self._exact_max and dimension <= HNSW_MAX_DIMENSION
                and await self._walk_finds(conn, tenant, limit)
            ):
                hits = await self._walk(conn, where, dimension, params, limit, settings=not plain)
                if len(hits) >= limit:
                    return hits
                if not plain:
                    await _settings(conn, {"enable_sort": "on"})
            return await _dense(conn, _exact_sql(where, dimension), params)

    async def _walk_finds(self, conn: AsyncConnection, tenant_chunks: int, limit: int) -> bool:
        """Whether a walk of at most ``max_scan_tuples`` tuples can be expected to meet
        ``limit`` of the tenant's rows (half the tuples, for rows search may not show):
        the tenant's share of the table is its chance per tuple. The table's size is the
        planner's (``pg_class.reltuples``), reused for ``STATS_SECONDS``."""
        at, rows = self._table_rows
        now = time.monotonic()
        if now - at >= STATS_SECONDS:
            found = (await conn.execute(text(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass('chunks')"
            ))).scalar_one_or_none()
            rows = float(found or -1.0)
            self._table_rows = (now, rows)
        if rows <= 0:  # never analysed: assume the tenant is the table
            return True
        share = min(1.0, tenant_chunks / rows)
        return share > 0 and limit / share <= self._max_scan_tuples / 2

    async def _scope_size(self, conn: AsyncConnection, where: _Where) -> int:
        """Chunk rows of the tenant in the scope, counted up to ``exact_max + 1`` (every
        version, so an upper bound of what the legs may return)."""
        sql = (
            "SELECT count(*) FROM (SELECT 1 FROM chunks c WHERE c.tenant_id = :tenant "  # noqa: S608
            f"{where.chunk_scope} LIMIT :bound) AS bounded"
        )
        params = {**where.params, "bound": self._exact_max + 1}
        return int((await conn.execute(text(sql), params)).scalar_one())

    async def _walk(
        self, conn: AsyncConnection, where: _Where, dimension: int, params: dict[str, Any],
        limit: int, *, settings: bool,
    ) -> list[Hit]:
        """The HNSW index's nearest neighbours in the scope (iterative scan). With
        ``settings`` (in a transaction), the walk's own: a candidate list of at least
        ``limit``, and no sorts, so that the planner cannot prefer scoring every row of a
        scope it misjudges as small (the walk is taken because that would cost too much)."""
        walk = {"hnsw.iterative_scan": "relaxed_order",
                "hnsw.ef_search": str(min(1000, max(self._ef_search, limit))),
                "hnsw.max_scan_tuples": str(self._max_scan_tuples)}
        if settings:
            await _settings(conn, {**walk, "enable_sort": "off"})
        else:
            # Set once on the connection (no transaction: they stay), for every later walk.
            wanted = tuple(walk.items())
            if conn.info.get(_WALK_SETTINGS) != wanted:
                await _settings(conn, walk, local=False)
                conn.info[_WALK_SETTINGS] = wanted
        distance = cosine_distance_sql(dimension)
        # relaxed_order returns neighbours nearly in order: materialised, then sorted.
        sql = (
            "WITH nearest AS MATERIALIZED ("  # noqa: S608 - our fragments; values are bound
            f"SELECT c.key, {distance} AS distance FROM chunks c "
            f"WHERE c.tenant_id = :tenant AND vector_dims(c.embedding) = {dimension} "
            f"{where.visible} ORDER BY distance LIMIT :limit) "
            "SELECT key, 1 - distance FROM nearest ORDER BY distance, key"
        )
        return await _dense(conn, sql, params)

    # -- lexical ------------------------------------------------------------------------

    async def lexical_search(
        self, tenant_id: str, query: str, limit: int, scope: Scope | None = None
    ) -> list[Hit]:
        words = search_words(query)
        if limit <= 0 or not words:
            return []
        where = _Where(tenant_id, scope)
        if where.empty:
            return []
        # Statements alone, no transaction: each reads what is committed when it runs.
        async with self._db.statements() as conn:
            terms = await self._terms(conn, words)
            if not terms:
                return []  # stop words only
            stats = await self._tenant_stats(conn, tenant_id)
            frequencies = await self._common_frequencies(conn)
            # A term the statistics call common would only count up to the cap, at the
            # price of every one of its matches in the index: estimated instead.
            common = {
                term: round(frequencies[term] * stats.chunks) for term in terms
                if frequencies.get(term, 0.0) * stats.chunks >= self._df_cap
            }
            counted = await self._count(
                conn, tenant_id, [term for term in terms if term not in common]
            )
            query_plan = plan(
                [Term(term, common[term], estimated=True) if term in common
                 else Term(term, counted[term]) for term in terms],
                chunks=stats.chunks, average_length=stats.average_length,
                frequencies=frequencies, cap=self._df_cap, budget=self._budget,
            )
            if query_plan.matches_nothing:
                return []  # no term occurs in the tenant
            sql, params = bm25_sql(
                f"AND c.tenant_id = :tenant {where.visible}", where.params, query_plan, limit
            )
            rows: Sequence[Any] = (await conn.execute(text(sql), params)).all()
        return [Hit(int(row[0]), float(row[1])) for row in rows]

    async def _terms(self, conn: AsyncConnection, words: str) -> list[str]:
        """The query's first ``MAX_TERMS`` distinct terms (stems, stop words dropped), in
        query order. A word's terms are the same alone as in any text of words
        (:func:`~ragd.db.pgsearch.search_words` leaves nothing for the parser to join), so
        each word is asked once per process (up to ``MAX_WORDS`` of them remembered)."""
        distinct = list(dict.fromkeys(words.split()))
        known = {word: self._lexemes[word] for word in distinct if word in self._lexemes}
        missing = [word for word in distinct if word not in known]
        if missing:
            rows: Sequence[Any] = (await conn.execute(
                text(
                    "SELECT w.word, array(SELECT t.lexeme FROM unnest(to_tsvector("  # noqa: S608
                    f"'{TEXT_SEARCH_CONFIG}', w.word)) AS t ORDER BY t.positions[1]) "
                    "FROM unnest(CAST(:words AS text[])) AS w(word)"
                ),
                {"words": missing},
            )).all()
            found = {str(row[0]): tuple(str(term) for term in row[1]) for row in rows}
            if len(self._lexemes) + len(found) > MAX_WORDS:
                self._lexemes.clear()
            self._lexemes.update(found)
            known.update(found)
        terms: dict[str, None] = {}
        for word in distinct:
            for term in known.get(word, ()):
                terms[term] = None
        return list(terms)[:MAX_TERMS]

    async def _count(
        self, conn: AsyncConnection, tenant_id: str, terms: Sequence[str]
    ) -> dict[str, int]:
        """How many of the tenant's chunk rows hold each term, counted up to ``df_cap``.

        A count is reused for ``STATS_SECONDS`` (counting costs an index lookup of every
        match, up to the cap; the counts only weigh terms and pick the rare ones, the rows
        are always found live). A term in no row is counted again each time, so a word that
        a new document brings is found at once; a count that grew meanwhile only makes the
        term look rarer than it is, and the rare terms' lookup is bounded anyway."""
        now = time.monotonic()
        counts: dict[str, int] = {}
        missing = []
        for term in terms:
            known = self._counts.get((tenant_id, term))
            if known is not None and now - known[1] < STATS_SECONDS:
                counts[term] = known[0]
            else:
                missing.append(term)
        if not missing:
            return counts
        sql = (
            "SELECT t.term, (SELECT count(*) FROM (SELECT 1 FROM chunks c "
            "WHERE c.tenant_id = :tenant AND c.lexemes @@ CAST(t.query AS tsquery) "
            "LIMIT :cap) AS m) "
            "FROM unnest(CAST(:terms AS text[]), CAST(:queries AS text[])) AS t(term, query)"
        )
        params = {"tenant": tenant_id, "terms": missing,
                  "queries": [tsquery([term], "|") for term in missing], "cap": self._df_cap}
        rows: Sequence[Any] = (await conn.execute(text(sql), params)).all()
        if len(self._counts) + len(rows) > MAX_COUNTS:
            self._counts.clear()
        for row in rows:
            term, count = str(row[0]), int(row[1])
            counts[term] = count
            if count > 0:
                self._counts[(tenant_id, term)] = (count, now)
        return counts

    async def _tenant_stats(self, conn: AsyncConnection, tenant_id: str) -> _TenantStats:
        """The tenant's searchable chunk count and average chunk length (tokens), from its
        documents' totals; reused for ``STATS_SECONDS`` (they move slowly, and only the
        scores' scale depends on them)."""
        now = time.monotonic()
        found = self._stats.get(tenant_id)
        if found is not None and now - found.at < STATS_SECONDS:
            return found
        row = (await conn.execute(
            text(
                "SELECT coalesce(sum(chunk_count), 0), coalesce(sum(token_count), 0) "
                "FROM documents WHERE tenant_id = :tenant AND active_version IS NOT NULL"
            ),
            {"tenant": tenant_id},
        )).one()
        chunks, tokens = int(row[0]), int(row[1])
        stats = _TenantStats(chunks, tokens / chunks if chunks else 1.0, now)
        if len(self._stats) > 10_000:
            self._stats.clear()
        self._stats[tenant_id] = stats
        return stats

    async def _common_frequencies(self, conn: AsyncConnection) -> dict[str, float]:
        """The share of chunk rows holding each of the table's most common lexemes, from
        the planner's statistics (``pg_stats.most_common_elems``, kept by ANALYZE): how a
        term counted only up to the cap is estimated. Empty before the first ANALYZE."""
        at, frequencies = self._common
        now = time.monotonic()
        if now - at < COMMON_SECONDS:
            return frequencies
        row = (await conn.execute(text(
            "SELECT most_common_elems::text::text[], most_common_elem_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = 'chunks' "
            "AND attname = 'lexemes'"
        ))).one_or_none()
        frequencies = {}
        if row is not None and row[0] is not None and row[1] is not None:
            elements, shares = list(row[0]), [float(share) for share in row[1]]
            frequencies = dict(zip(elements, shares, strict=False))
            # After one share per element come the smallest and largest of them: a lexeme
            # not listed is rarer than the smallest.
            if len(shares) > len(elements):
                frequencies[RARER_THAN_LISTED] = shares[len(elements)]
        self._common = (now, frequencies)
        return frequencies

    # -- keeping in step: nothing to replay -----------------------------------------------

    async def sync(self, tenant_id: str) -> int:
        """Nothing to apply: the commit wrote the searchable columns."""
        return 0

    def notify(self) -> None:
        """Nothing to tell: every process reads the same rows."""

    async def publish(self, tenant_id: str) -> int:
        """After a commit: make sure each embedder dimension in use has its HNSW index (a
        new dimension's is built here, once, concurrently with writes). The commit is
        searchable either way (exactly, until the index exists): a failed build is logged
        and tried again at the next commit, never the commit's failure."""
        await self._ensure_indexes()
        return 0

    async def settle(self) -> None:
        """Nothing runs in the background."""

    async def sync_all(self) -> int:
        """At startup: the HNSW indexes of the dimensions in use (see :meth:`publish`)."""
        await self._ensure_indexes()
        return 0

    async def flush(self) -> None:
        """Nothing is held back: PostgreSQL made every commit durable."""

    async def _ensure_indexes(self) -> None:
        async with self._db.read() as s:
            dimensions: set[int] = set((await s.execute(text(
                "SELECT DISTINCT embedder_dimension FROM collections "
                "WHERE embedder_dimension IS NOT NULL"
            ))).scalars().all())
        for dimension in sorted(dimensions - self._indexed):
            if 0 < dimension <= HNSW_MAX_DIMENSION:
                try:
                    await self._ensure_index(int(dimension))
                except (DBAPIError, OSError):
                    logger.warning("vector index build failed; searches of this dimension "
                                   "stay exact until it is built", extra={
                                       "dimension": dimension}, exc_info=True)
                    continue
            self._indexed.add(dimension)

    async def _ensure_index(self, dimension: int) -> None:
        """Build the HNSW index of ``dimension`` unless a valid one exists (one process at a
        time; an invalid leftover of an interrupted build is dropped and rebuilt)."""
        name = hnsw_index_name(dimension)
        async with self._db.engine.connect() as base:
            conn = await base.execution_options(isolation_level="AUTOCOMMIT")
            lock = {"lock": lock_id("hnsw", str(dimension))}
            await conn.execute(text("SELECT pg_advisory_lock(:lock)"), lock)
            try:
                valid = (await conn.execute(
                    text(
                        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c "
                        "ON c.oid = i.indexrelid WHERE c.relname = :name "
                        "AND c.relnamespace = to_regnamespace(current_schema())"
                    ),
                    {"name": name},
                )).scalar_one_or_none()
                if valid:
                    return
                if valid is not None:
                    await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                started = time.perf_counter()
                await conn.execute(text(create_hnsw_sql(dimension, concurrently=True)))
                logger.info("vector index built", extra={
                    "dimension": dimension, "seconds": round(time.perf_counter() - started, 3),
                })
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:lock)"), lock)

    # -- verify and rebuild ---------------------------------------------------------------

    async def verify(self, tenant_id: str) -> Verification:
        """Chunk rows of active versions, and how many of them lack their searchable columns
        (no lexemes; a stored vector without its embedding, or of another length)."""
        async with self._db.read() as s:
            row = (await s.execute(
                text(
                    "SELECT count(*), "
                    "count(*) FILTER (WHERE c.lexemes IS NULL), "
                    "count(*) FILTER (WHERE c.vector IS NOT NULL AND (c.embedding IS NULL "
                    "OR vector_dims(c.embedding) * 4 <> octet_length(c.vector))) "
                    "FROM chunks c JOIN documents d ON d.id = c.document_id "
                    "WHERE c.tenant_id = :tenant AND c.version = d.active_version"
                ),
                {"tenant": tenant_id},
            )).one()
        last = await self._changes.last_change(tenant_id)
        return Verification(
            tenant_id=tenant_id, chunks=int(row[0]), last_change=last,
            lexical_applied=last, vector_applied=last,
            lexical_missing=int(row[1]), lexical_orphans=0,
            vector_missing=int(row[2]), vector_orphans=0,
        )

    async def rebuild(self, tenant_id: str) -> int:
        """Rewrite every chunk row's ``lexemes`` and ``embedding`` of the tenant from its
        text and stored vector (batches, one transaction each), then make sure the HNSW
        indexes exist; returns the number of chunks of active versions."""
        after = 0
        while True:
            async with self._db.transaction() as s:
                rows = (await s.execute(
                    text(
                        "SELECT key, heading_path, text, vector FROM chunks "
                        "WHERE tenant_id = :tenant AND key > :after ORDER BY key LIMIT :limit"
                    ),
                    {"tenant": tenant_id, "after": after, "limit": REBUILD_BATCH},
                )).all()
                if not rows:
                    break
                await s.execute(
                    text(
                        "UPDATE chunks SET lexemes = "  # noqa: S608
                        f"to_tsvector('{TEXT_SEARCH_CONFIG}', :words), "
                        "embedding = CAST(:embedding AS vector) "
                        "WHERE key = :key AND tenant_id = :tenant"
                    ),
                    [_rebuilt(tenant_id, row[0], row[1], row[2], row[3]) for row in rows],
                )
                after = int(rows[-1][0])
        self._indexed.clear()
        await self._ensure_indexes()
        return (await self.verify(tenant_id)).chunks

    def memory_bytes(self) -> int:
        """Nothing held in this process but a few numbers per tenant."""
        return 0

    def close(self) -> None:
        """Nothing to release: the database belongs to the caller."""


# -- SQL ------------------------------------------------------------------------------------

class _Where:
    """The conditions every leg applies to ``chunks c``: the tenant, the scope (collections,
    documents), and the rows search may show (their document's active version, in a
    collection not being deleted, matching the metadata filter).

    The last is a scalar subquery per row, never a join: the planner misjudges how many
    rows a join with the tenant's documents keeps and then drives the search from the
    documents (measured: seconds instead of milliseconds). A subquery in the ``WHERE`` is
    evaluated for the rows the chunk indexes produce, which is what every leg wants."""

    def __init__(self, tenant_id: str, scope: Scope | None) -> None:
        self.params: dict[str, Any] = {"tenant": tenant_id}
        self.empty = False
        chunk: list[str] = []
        if scope is not None:
            for column, values, name in (
                ("collection_id", scope.collection_ids, "collections"),
                ("document_id", scope.document_ids, "documents"),
            ):
                if values is None:
                    continue
                wanted = sorted({str(value) for value in values})
                if not wanted:
                    self.empty = True
                self.params[name] = wanted
                chunk.append(f"AND c.{column} = ANY(CAST(:{name} AS text[]))")
        self.chunk_scope = " ".join(chunk)
        self.scoped = bool(chunk)
        document = ["d.id = c.document_id", "d.tenant_id = :tenant",
                    "d.active_version = c.version", "k.status = 'active'"]
        condition = metadata_condition(None if scope is None else scope.metadata)
        if condition is not None:
            document.append(f"({condition.text})")
            self.params.update(condition.params)
            self.scoped = True
        self.visible = (
            f"{self.chunk_scope} AND coalesce((SELECT true FROM documents d JOIN collections k "  # noqa: S608
            f"ON k.id = d.collection_id WHERE {' AND '.join(document)}), false)"
        )


async def _settings(
    conn: AsyncConnection, settings: Mapping[str, str], *, local: bool = True
) -> None:
    """Set ``settings`` for the rest of the transaction (``local``), or of the session."""
    names = list(settings)
    scope = "true" if local else "false"
    calls = ", ".join(f"set_config(:n{i}, :v{i}, {scope})" for i in range(len(names)))
    params = {f"n{i}": name for i, name in enumerate(names)}
    params.update({f"v{i}": settings[name] for i, name in enumerate(names)})
    await conn.execute(text(f"SELECT {calls}"), params)  # noqa: S608 - placeholders only


def _exact_sql(where: _Where, dimension: int) -> str:
    # The untyped column's distance: no HNSW index matches it, so every row is scored.
    return (
        "SELECT c.key, 1 - (c.embedding <=> CAST(:query AS vector)) AS score "  # noqa: S608
        "FROM chunks c WHERE c.tenant_id = :tenant "
        f"AND vector_dims(c.embedding) = {int(dimension)} {where.visible} "
        "ORDER BY c.embedding <=> CAST(:query AS vector), c.key LIMIT :limit"
    )


async def _dense(conn: AsyncConnection, sql: str, params: Mapping[str, Any]) -> list[Hit]:
    rows: Sequence[Any] = (await conn.execute(text(sql), dict(params))).all()
    return [Hit(int(row[0]), float(row[1])) for row in rows]


def _rebuilt(
    tenant_id: str, key: int, headings: str, body: str, blob: bytes | None
) -> dict[str, Any]:
    return {
        "key": key, "tenant": tenant_id,
        "words": search_words(embed_text(json.loads(headings), body)),
        "embedding": None if blob is None
        else vector_literal(np.frombuffer(blob, dtype=np.float32)),
    }
