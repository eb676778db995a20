"""The hostile-value rules (pure): each JSON Schema pattern accepts exactly what the server
accepts, and strict JSON refuses exactly the classes it names."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragd import hygiene

SPACES = [chr(c) for c in range(0x110000) if chr(c).isspace()]
#: Characters that exercise every rule: spaces of every kind, controls, NUL, surrogates.
TRICKY = st.sampled_from([*SPACES, "a", "Z", "\x00", "\x1b", "\x7f", "\x85", "\x9f", "é",
                          "\u2028", "\ud800", "\udfff", "\U0001F600", "-"])
TEXTS = st.text(TRICKY, max_size=8) | st.text(max_size=8)


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


@given(TEXTS)
def test_text_pattern_is_the_text_rule(value: str) -> None:
    no_surrogate = not any("\ud800" <= c <= "\udfff" for c in value)
    if no_surrogate:  # patterns need not name surrogates: UTF-8 JSON cannot carry them
        assert _matches(hygiene.TEXT_PATTERN, value) == (hygiene.text_problem(value) is None)


@given(TEXTS)
def test_label_pattern_is_the_single_line_rule(value: str) -> None:
    if not any("\ud800" <= c <= "\udfff" for c in value):
        expected = hygiene.text_problem(value, single_line=True) is None
        assert _matches(hygiene.LABEL_PATTERN, value) == expected


@given(TEXTS)
def test_name_pattern_is_a_single_line_not_blank_once_stripped(value: str) -> None:
    if not any("\ud800" <= c <= "\udfff" for c in value):
        expected = bool(value.strip()) and hygiene.text_problem(value, single_line=True) is None
        assert _matches(hygiene.NAME_PATTERN, value) == expected


@given(TEXTS)
def test_nonblank_pattern_is_text_not_blank_once_stripped(value: str) -> None:
    if not any("\ud800" <= c <= "\udfff" for c in value):
        expected = bool(value.strip()) and "\x00" not in value
        assert _matches(hygiene.NONBLANK_PATTERN, value) == expected


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (key, *_strings(item))]
    return []


@given(JSON_VALUES)
def test_strict_json_round_trips_ordinary_values(value: object) -> None:
    text = json.dumps(value)  # ASCII: astral characters become surrogate pairs
    if any(hygiene.text_problem(s) for s in _strings(value)):
        with pytest.raises(hygiene.JsonRejected):
            hygiene.loads(text.encode())
    else:
        assert hygiene.loads(text.encode()) == value


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": "x\\u0000"}', "NUL"),
        (b'{"a\\u0000": 1}', "NUL"),
        (b'["\\ud800"]', "unpaired surrogate"),
        (b'["\\udc00\\ud800"]', "unpaired surrogate"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b"[1e400]", "too large"),
        (b"[" + b"9" * 5000 + b"]", "digits"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 33 + b"]" * 33, "nesting"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting"),
    ],
)
def test_strict_json_refuses_each_class(raw: bytes, reason: str) -> None:
    with pytest.raises(hygiene.JsonRejected, match=reason):
        hygiene.loads(raw)


def test_strict_json_keeps_paired_surrogates_and_depth_at_the_limit() -> None:
    assert hygiene.loads(b'["\\ud83d\\ude00"]') == ["\U0001F600"]
    depth = hygiene.MAX_JSON_DEPTH
    assert hygiene.loads(b"[" * depth + b"]" * depth) is not None


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-14)),
                                               timezone(timedelta(hours=14))])))
def test_utc_datetime_never_overflows(value: datetime) -> None:
    try:
        utc = hygiene.utc_datetime(value)
    except ValueError:
        return
    assert utc.tzinfo is UTC and hygiene.MIN_YEAR <= utc.year <= hygiene.MAX_YEAR
    assert utc == value
