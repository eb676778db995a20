"""Metadata filters: a small, validated language compiled into a predicate (pure).

A filter is a JSON object ``{field: condition, ...}``; every field must match (AND). A
condition is either a plain value (equality; for a list-valued field: the list contains it) or
an object of operators, all of which must hold::

    {"lang": "en"}                                   equality
    {"lang": {"in": ["en", "de"]}}                   one of
    {"year": {"gte": 2020, "lt": 2025}}              range on numbers
    {"published": {"gte": "2024-01-01"}}             range on ISO dates (compared as dates)
    {"status": {"ne": "draft"}}                      not equal (a missing field matches)
    {"tags": {"exists": true}}                       presence

Filters only ever see a document's own metadata inside the caller's tenant partition: a
field named ``tenant_id`` is just another metadata key, and no operator can reach rows of
another tenant. Unknown operators, wrong operand types, and oversized filters are refused
with :class:`~ragd.errors.InvalidInput` (never ignored, so a typo cannot silently widen a
search).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from ragd.errors import InvalidInput
from ragd.stores.metadata import MAX_STRING_CHARS

Predicate = Callable[[Mapping[str, Any]], bool]

MAX_FIELDS = 32
MAX_IN_VALUES = 100
MAX_FIELD_CHARS = 64
_RANGE = ("gt", "gte", "lt", "lte")
OPERATORS = frozenset({"eq", "ne", "in", "nin", "exists", *_RANGE})


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_filter")


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):  # longer than any metadata value could be
        return len(value) <= MAX_STRING_CHARS
    return value is None or isinstance(value, int | bool)


def _as_date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not 8 <= len(value) <= 40 or not value[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        return parsed
    try:  # compared in UTC; a time with no UTC value (9999-12-31T23:59-01:00) is no date
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def _comparable(value: Any, bound: Any) -> tuple[Any, Any] | None:
    """The pair to compare, or None when the two cannot be ordered."""
    if isinstance(bound, bool) or isinstance(value, bool):
        return None
    if isinstance(bound, int | float) and isinstance(value, int | float):
        return value, bound
    left, right = _as_date(value), _as_date(bound)
    if left is not None and right is not None:
        if (left.tzinfo is None) != (right.tzinfo is None):
            left, right = left.replace(tzinfo=None), right.replace(tzinfo=None)
        return left, right
    return None


def _equal(value: Any, wanted: Any) -> bool:
    if isinstance(value, list):
        return any(_equal(item, wanted) for item in value)
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    return bool(value == wanted)


def _condition(field: str, spec: Any) -> Predicate:
    if not isinstance(spec, dict):
        if not _scalar(spec):
            raise _bad(f"filter on {field!r}: a value must be a string, number, boolean or null")
        return lambda meta: field in meta and _equal(meta[field], spec)
    if not spec:
        raise _bad(f"filter on {field!r}: an empty operator object")
    checks: list[Predicate] = []
    for op, operand in spec.items():
        if op not in OPERATORS:
            raise _bad(
                f"filter on {field!r}: unknown operator {op!r}; valid: "
                f"{', '.join(sorted(OPERATORS))}"
            )
        checks.append(_operator(field, op, operand))
    return lambda meta: all(check(meta) for check in checks)


def _operator(field: str, op: str, operand: Any) -> Predicate:
    if op in ("eq", "ne"):
        if not _scalar(operand):
            raise _bad(f"filter on {field!r}: {op} takes a string, number, boolean or null")
        if op == "eq":
            return lambda meta: field in meta and _equal(meta[field], operand)
        return lambda meta: field not in meta or not _equal(meta[field], operand)
    if op in ("in", "nin"):
        if (
            not isinstance(operand, list)
            or not 1 <= len(operand) <= MAX_IN_VALUES
            or not all(_scalar(item) for item in operand)
        ):
            raise _bad(
                f"filter on {field!r}: {op} takes a list of 1 to {MAX_IN_VALUES} scalars"
            )
        if op == "in":
            return lambda meta: field in meta and any(_equal(meta[field], v) for v in operand)
        return lambda meta: field not in meta or not any(
            _equal(meta[field], v) for v in operand
        )
    if op == "exists":
        if not isinstance(operand, bool):
            raise _bad(f"filter on {field!r}: exists takes true or false")
        return lambda meta: (field in meta) is operand
    # Ranges: numbers with numbers, ISO dates with ISO dates.
    if isinstance(operand, bool) or not (
        isinstance(operand, int | float) and math.isfinite(operand) or _as_date(operand)
    ):
        raise _bad(f"filter on {field!r}: {op} takes a number or an ISO date")

    def in_range(meta: Mapping[str, Any]) -> bool:
        if field not in meta:
            return False
        pair = _comparable(meta[field], operand)
        if pair is None:
            return False
        left, right = pair
        if op == "gt":
            return bool(left > right)
        if op == "gte":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)

    return in_range


def compile_filter(spec: Any) -> Predicate | None:
    """Validate ``spec`` and return a predicate over a metadata mapping (None: no filter)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise _bad("filters must be a JSON object of field: condition")
    if len(spec) > MAX_FIELDS:
        raise _bad(f"at most {MAX_FIELDS} filter fields")
    if not spec:
        return None
    checks: list[Predicate] = []
    for field, condition in spec.items():
        if not isinstance(field, str) or not 1 <= len(field) <= MAX_FIELD_CHARS:
            raise _bad(f"filter field names must be 1 to {MAX_FIELD_CHARS} characters")
        checks.append(_condition(field, condition))
    return lambda meta: all(check(meta) for check in checks)
