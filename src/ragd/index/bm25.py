"""BM25 over a bounded candidate set, as SQL: the ranking of the PostgreSQL lexical leg.

PostgreSQL's own ranking (``ts_rank``) has no idf, so it ranks worse than the embedded BM25
leg, and ranking every match of a common word is slow on a big tenant. This module plans a
query from its terms' document frequencies (:func:`plan`) and writes one statement
(:func:`bm25_sql`) that gathers a bounded set of candidate rows and scores them with BM25
(tantivy's formula and parameters) inside the database:

* the candidates are every match of the rarest terms while their frequencies add up to at
  most ``budget`` rows (all of them when no term is common), plus, when some terms are
  common, up to the rest of the budget (a quarter at least) of rows that hold the common
  terms, relaxed one at a time: rows holding every common term first, then rows holding all
  but the commonest (and not it), and so on down to the rarest common term alone
  (:func:`relaxations`). Each level is a disjoint index lookup, so no row is fetched twice,
  and the levels after the one that fills the budget are never run;
* every candidate is scored with every query term: term frequency from the row's
  ``tsvector`` (its positions), length from its token count, idf from the frequencies.

A chunk that holds none of the rare terms scores at most ``(k1 + 1)`` times the common terms'
idf, so with a rare term in the query the best hits are found exactly in practice; only
chunks holding nothing but common words are sampled, the ones holding more (and rarer) of
them first. Measured on 100k chunks of the dev sets (``bench/search_latency.py``'s corpus,
100 dev questions, against BM25 over every match): the relaxed levels find 0.86 of the exact
top 10's entries in 9 ms, where a sample of rows holding any common term found 0.72 in 16 ms
(its index lookup gathers every match of every common term).

Pure: no I/O. Every value in the SQL is a bound parameter; the only text spliced in is the
caller's own ``WHERE`` fragment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "B", "K1", "MAX_LEVELS", "RARER_THAN_LISTED", "Plan", "Term", "bm25_sql", "idf", "plan",
    "level_tsquery", "relaxations", "tsquery",
]

#: BM25 parameters (tantivy's).
K1, B = 1.2, 0.75
#: The key, in a frequencies mapping, of the smallest share the statistics list: a lexeme
#: they do not list is rarer than that (no lexeme holds a space).
RARER_THAN_LISTED = " "
#: Relaxation levels of the common terms at most (a query of more common terms drops several
#: of the commonest at a time).
MAX_LEVELS = 8


@dataclass(frozen=True, slots=True)
class Term:
    """A query term and its document frequency in the tenant: counted up to the cap, or
    ``estimated`` (from the table's statistics, without counting)."""

    lexeme: str
    df: int
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """Terms with their idf; the rare ones (all their matches are candidates), the common
    ones (rarest first; sampled, up to ``fill`` rows); the tenant's average chunk length."""

    terms: list[str]
    idf: list[float]
    rare: list[str]
    common: list[str]
    fill: int
    average_length: float
    #: The rare terms' matches taken at most: twice the budget, for counts that are a
    #: little old (a term that became common meanwhile still costs a bounded lookup).
    rare_limit: int = 0

    @property
    def matches_nothing(self) -> bool:
        """No term occurs in the tenant."""
        return not self.rare and not self.common


def plan(
    terms: Sequence[Term], *, chunks: int, average_length: float,
    frequencies: Mapping[str, float], cap: int, budget: int,
) -> Plan:
    """The plan of a query: ``chunks`` and ``average_length`` are the tenant's (searchable
    chunks, tokens per chunk); ``frequencies`` the share of the table's rows holding each
    of its commonest lexemes (with :data:`RARER_THAN_LISTED`); a term counted at ``cap`` or
    more is common, and its frequency estimated from them."""
    chunks = max(chunks, max((term.df for term in terms), default=0))
    estimated = [
        (term.lexeme, term.df if term.df < cap or term.estimated
         else _estimate(term.lexeme, term.df, chunks, frequencies))
        for term in terms
    ]
    rare: list[str] = []
    common: list[str] = []
    spent = 0
    for lexeme, df in sorted(estimated, key=lambda item: (item[1], item[0])):
        if df <= 0:
            continue  # in no chunk of the tenant
        if df < cap and spent + df <= budget:
            rare.append(lexeme)
            spent += df
        else:
            common.append(lexeme)
    return Plan(
        terms=[lexeme for lexeme, _ in estimated],
        idf=[idf(chunks, min(df, chunks)) for _, df in estimated],
        rare=rare, common=common, fill=max(budget - spent, budget // 4),
        average_length=max(average_length, 1.0), rare_limit=2 * max(budget, 1),
    )


def _estimate(lexeme: str, counted: int, chunks: int, frequencies: Mapping[str, float]) -> int:
    """The document frequency of a term counted only up to the cap (``counted``): its share
    of the table's rows scaled to the tenant; for a term the statistics do not list,
    somewhere between the cap and the smallest listed share, so the middle of that range on
    idf's (logarithmic) scale."""
    share = frequencies.get(lexeme)
    if share is not None:
        return max(counted, round(share * chunks))
    ceiling = frequencies.get(RARER_THAN_LISTED, 0.0) * chunks
    if ceiling <= counted:
        return counted
    return round(math.sqrt(counted * ceiling))


def idf(chunks: int, df: int) -> float:
    """BM25's idf (tantivy's; never negative for ``df <= chunks``)."""
    return math.log(1 + (chunks - df + 0.5) / (df + 0.5))


def tsquery(terms: Sequence[str], operator: str) -> str:
    """Lexemes as tsquery text joined by ``operator`` (``|`` or ``&``), each quoted, so
    nothing in a lexeme is read as query syntax."""
    if operator not in ("|", "&"):
        raise ValueError(f"unknown tsquery operator {operator!r}")
    quoted = ("'" + term.replace("\\", "\\\\").replace("'", "''") + "'" for term in terms)
    return f" {operator} ".join(quoted)


def relaxations(
    common: Sequence[str], levels: int = MAX_LEVELS
) -> list[tuple[list[str], list[str]]]:
    """The relaxation levels of the common terms (``common`` rarest first), as ``(required,
    excluded)``: a row is in a level when it holds every required term and not every
    excluded one. First every term; then shorter prefixes, each without the rows of the
    level before, down to the rarest term alone. At most ``levels`` of them (prefix lengths
    spread evenly when there are more terms); disjoint, and together every row holding the
    rarest term."""
    count = len(common)
    if not count:
        return []
    steps = max(2, levels)
    lengths = sorted({round(1 + (count - 1) * step / (steps - 1)) for step in range(steps)},
                     reverse=True)
    found = []
    previous = count
    for length in lengths:
        found.append((list(common[:length]), list(common[length:previous])))
        previous = length
    return found


def level_tsquery(required: Sequence[str], excluded: Sequence[str]) -> str:
    """The tsquery text of a relaxation level (:func:`relaxations`)."""
    query = tsquery(required, "&")
    return f"{query} & !({tsquery(excluded, '&')})" if excluded else query


def bm25_sql(
    where: str, where_params: Mapping[str, Any], query: Plan, limit: int
) -> tuple[str, dict[str, Any]]:
    """The statement that returns the best ``limit`` ``(key, score)`` rows of ``chunks c``
    under the condition ``where`` (SQL over ``c``, starting with ``AND``, whose parameters
    are ``where_params``; it must hold the tenant)."""
    if query.matches_nothing:
        raise ValueError("a plan that matches nothing has no statement")
    params: dict[str, Any] = {
        **where_params, "terms": query.terms, "idf": query.idf, "k1": K1, "b": B,
        "avgdl": query.average_length, "limit": int(limit), "fill": max(query.fill, limit),
    }
    sources = []
    # Each source carries what scoring reads, so no candidate is looked up twice.
    base = f"SELECT c.key, c.token_count, c.lexemes FROM chunks c WHERE true {where}"  # noqa: S608
    if query.rare:
        params["rare"] = tsquery(query.rare, "|")
        params["rare_limit"] = max(query.rare_limit, limit)
        sources.append(f"({base} AND c.lexemes @@ CAST(:rare AS tsquery) LIMIT :rare_limit)")
    if query.common:
        # The relaxation levels, in order, until the fill: an Append under a LIMIT stops as
        # soon as it has enough, so later levels' index lookups never run.
        levels = []
        for number, (required, excluded) in enumerate(relaxations(query.common)):
            params[f"level{number}"] = level_tsquery(required, excluded)
            levels.append(f"({base} AND c.lexemes @@ CAST(:level{number} AS tsquery))")
        fill = " UNION ALL ".join(levels)
        sources.append(f"(SELECT * FROM ({fill}) AS levels LIMIT :fill)")  # noqa: S608
    # Term frequencies: the query's lexemes marked (setweight) and kept (ts_filter), so
    # unnest reads those few entries of the row's tsvector, not all of it.
    sql = (
        "WITH candidates AS MATERIALIZED (SELECT DISTINCT ON (key) key, token_count, "  # noqa: S608
        f"lexemes FROM ({' UNION ALL '.join(sources)}) AS found ORDER BY key), "
        "weights AS (SELECT * FROM unnest(CAST(:terms AS text[]), "
        "CAST(:idf AS float8[])) AS w(term, idf)) "
        "SELECT c.key, sum(w.idf * (m.tf * (CAST(:k1 AS float8) + 1)) / (m.tf + "
        "CAST(:k1 AS float8) * (1 - CAST(:b AS float8) + CAST(:b AS float8) * "
        "c.token_count / CAST(:avgdl AS float8)))) AS score "
        "FROM candidates AS c "
        "CROSS JOIN LATERAL (SELECT u.lexeme, "
        "CAST(coalesce(array_length(u.positions, 1), 1) AS float8) AS tf "
        "FROM unnest(ts_filter(setweight(c.lexemes, 'A', CAST(:terms AS text[])), '{a}')) "
        "AS u) AS m "
        "JOIN weights w ON w.term = m.lexeme "
        "GROUP BY c.key ORDER BY score DESC, c.key LIMIT :limit"
    )
    return sql, params
