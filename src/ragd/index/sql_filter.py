"""A metadata filter as SQL over ``documents.metadata_jsonb`` (PostgreSQL).

The search API's filter language (``retrieval/filters.py`` validates it and evaluates it in
Python) translated into a condition the search legs put in their ``WHERE``, so a selective
filter narrows the candidates instead of starving the results. The translation never
excludes a document the Python predicate accepts: it is exact for every operator on strings,
numbers, booleans, nulls and lists, and for date ranges on the canonical ISO forms
(``2024-05-01``, ``2024-05-01T10:00[:00[.123456]]`` with an optional ``Z`` or ``+hh:mm``)
and on strings that cannot be dates. A stored string that might be a date in another form
(eight to forty characters starting with four digits: ``20240501``, ``2024-W18-3``) passes
the SQL condition, and the search service's Python predicate, which always runs on the
loaded documents, decides. Every value and field name is a bound parameter; nothing of the
filter is spliced into the SQL text.

The spec must already be valid (``compile_filter`` raised otherwise); anything else raises
``ValueError`` here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["SqlCondition", "metadata_condition"]

#: The column the condition reads (alias ``d`` of ``documents``).
METADATA = "d.metadata_jsonb"
_RANGES = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
#: The date forms compared in SQL (others are left to the Python predicate).
_CANONICAL_DATE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
_CANONICAL = re.compile(_CANONICAL_DATE)
_ZONED = r"(Z|[+-][0-9]{2}:[0-9]{2})$"
_MAYBE_DATE = r"^[0-9]{4}"


@dataclass(frozen=True, slots=True)
class SqlCondition:
    """A condition's SQL text and its bound parameters."""

    text: str
    params: Mapping[str, Any]


class _Binder:
    """Parameters named ``<prefix><n>``, so that a condition can join any statement."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        name = f"{self._prefix}{len(self.params)}"
        self.params[name] = value
        return f":{name}"


def metadata_condition(spec: Mapping[str, Any] | None, prefix: str = "mf") -> SqlCondition | None:
    """The SQL condition of a validated filter ``spec`` (None: no filter)."""
    if not spec:
        return None
    sql = _Binder(prefix)
    parts = [_field(sql, field, spec[field]) for field in spec]
    return SqlCondition(" AND ".join(f"({part})" for part in parts), sql.params)


def _field(sql: _Binder, field: str, spec: Any) -> str:
    if not isinstance(field, str):
        raise ValueError("filter field names are strings")
    name = sql.bind(field)
    if not isinstance(spec, dict):
        return _equal(sql, name, _scalar(spec))
    if not spec:
        raise ValueError("an empty operator object")
    return " AND ".join(f"({_operator(sql, name, op, operand)})" for op, operand in spec.items())


def _operator(sql: _Binder, name: str, op: str, operand: Any) -> str:
    if op == "eq":
        return _equal(sql, name, _scalar(operand))
    if op == "ne":
        return f"NOT {_equal(sql, name, _scalar(operand))}"
    if op in ("in", "nin"):
        if not isinstance(operand, list) or not operand:
            raise ValueError(f"{op} takes a non-empty list")
        anyof = " OR ".join(_equal(sql, name, _scalar(item)) for item in operand)
        return f"({anyof})" if op == "in" else f"NOT ({anyof})"
    if op == "exists":
        if not isinstance(operand, bool):
            raise ValueError("exists takes a boolean")
        present = f"jsonb_exists({METADATA}, {name})"
        return present if operand else f"NOT {present}"
    if op in _RANGES:
        return _range(sql, f"({METADATA} -> {name})", _RANGES[op], operand)
    raise ValueError(f"unknown operator {op!r}")


def _equal(sql: _Binder, name: str, wanted: str) -> str:
    """The field equals ``wanted`` (a JSON scalar), or is a list holding it; never NULL."""
    value = f"({METADATA} -> {name})"
    scalar = sql.bind(wanted)
    listed = sql.bind(f"[{wanted}]")
    return (
        f"coalesce({value} = CAST({scalar} AS jsonb) OR (jsonb_typeof({value}) = 'array' "
        f"AND {value} @> CAST({listed} AS jsonb)), false)"
    )


def _range(sql: _Binder, value: str, op: str, bound: Any) -> str:
    if isinstance(bound, bool):
        raise ValueError("a range bound is a number or an ISO date")
    if isinstance(bound, int | float):
        if not math.isfinite(bound):
            raise ValueError("a range bound is finite")
        number = sql.bind(json.dumps(bound))
        # CASE, not AND: SQL does not promise to test the type before it casts.
        return (
            f"CASE WHEN jsonb_typeof({value}) = 'number' THEN "
            f"CAST({value} AS numeric) {op} CAST(CAST({number} AS text) AS numeric) "
            "ELSE false END"
        )
    if not isinstance(bound, str):
        raise ValueError("a range bound is a number or an ISO date")
    text = f"({value} #>> '{{}}')"
    when = sql.bind(_wall_time(bound)) if _CANONICAL.match(bound) else None
    # What Python's reading of a date requires first (retrieval/filters.py: _as_date).
    maybe = sql.bind(_MAYBE_DATE)
    could_be_date = f"(length({text}) BETWEEN 8 AND 40 AND {text} ~ {maybe})"
    if when is None:
        # A bound the SQL does not read like Python does: any string that may be a date.
        return (
            f"CASE WHEN jsonb_typeof({value}) IS DISTINCT FROM 'string' THEN false "
            f"ELSE {could_be_date} END"
        )
    canonical = sql.bind(_CANONICAL_DATE)
    zoned = sql.bind(_ZONED)
    return (
        f"CASE WHEN jsonb_typeof({value}) IS DISTINCT FROM 'string' THEN false "
        f"WHEN {text} ~ {canonical} AND pg_input_is_valid({text}, 'timestamptz') THEN "
        f"(CASE WHEN {text} ~ {zoned} THEN CAST({text} AS timestamptz) AT TIME ZONE 'UTC' "
        f"ELSE CAST({text} AS timestamp) END) {op} CAST(CAST({when} AS text) AS timestamp) "
        f"ELSE {could_be_date} END"
    )


def _wall_time(bound: str) -> str | None:
    """The bound as the Python predicate compares it (aware times in UTC, then without a
    zone), as text; None when Python would not read it as a date."""
    try:
        parsed = datetime.fromisoformat(bound)
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            return None
    return parsed.isoformat(sep=" ")


def _scalar(value: Any) -> str:
    """A filter value as JSON text (validated: a string, finite number, boolean or null)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("filter values are finite")
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError("filter values are scalars")
    return json.dumps(value, ensure_ascii=False)
