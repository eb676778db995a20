"""Text and JSON that every layer can store: the checks applied to everything a client sends.

Pure functions, below every other package. The classes of hostile values they refuse:

* NUL characters (PostgreSQL's ``text`` cannot hold them, C libraries truncate at them) and
  unpaired UTF-16 surrogates (``"\\ud800"`` is valid JSON but not encodable as UTF-8, so
  SQLite, tantivy and every log line would fail on it);
* control characters in single-line labels (names, titles, identifiers): they forge log
  lines and terminal output;
* JSON that is not UTF-8, ``NaN``/``Infinity`` or numbers that overflow to infinity, integers
  beyond Python's digit limit, and nesting deeper than :data:`MAX_JSON_DEPTH` (a recursion
  bomb for every recursive consumer);
* datetimes that cannot be converted to UTC (``9999-12-31T23:59:59-01:00``) or lie outside
  the years a database column holds.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

#: Deeper than any document ragd accepts (metadata is flat; filters are two levels).
MAX_JSON_DEPTH = 32
MIN_YEAR = 1900
MAX_YEAR = 9998

# The rules as JSON Schema patterns (regex escapes, so the schema stays ASCII JSON). Unpaired
# surrogates are refused too, but UTF-8 cannot carry them, so patterns need not name them.
_LABEL_BAD = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
#: What ``str.strip()`` removes, spelled out: regex engines disagree on ``\\s`` (Python's
#: includes U+001C..U+001F and U+0085, ECMA's and Rust's do not).
_SPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_LABEL_SPACE = "\\x20\\xa0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000"  # _SPACE minus controls
#: Text: no NUL.
TEXT_PATTERN = "^[^\\x00]*$"
#: A single line: no control characters.
LABEL_PATTERN = f"^[^{_LABEL_BAD}]*$"
#: A single line that is not blank once stripped (names, titles).
NAME_PATTERN = f"^[{_LABEL_SPACE}]*[^{_SPACE}{_LABEL_BAD}][^{_LABEL_BAD}]*$"
#: Text that is not blank once stripped (a query, a question, a document's text).
NONBLANK_PATTERN = f"^[{_SPACE}]*[^{_SPACE}\\x00][^\\x00]*$"
# "^[^...]*$" -> "[...]": the characters the pattern excludes, and the surrogates.
_NUL_OR_SURROGATE = re.compile(f"[{TEXT_PATTERN[3:-3]}\\ud800-\\udfff]")
_CONTROL = re.compile(f"[{LABEL_PATTERN[3:-3]}\\ud800-\\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonRejected(ValueError):
    """The body is not JSON ragd accepts; ``reason`` says why without quoting it."""

    def __init__(self, reason: str, pos: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pos = pos


def text_problem(value: str, *, single_line: bool = False) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    bad = (_CONTROL if single_line else _NUL_OR_SURROGATE).search(value)
    if bad is None:
        return None
    char = bad.group()
    if char == "\x00":
        return "contains a NUL character (U+0000)"
    if "\ud800" <= char <= "\udfff":
        return f"contains an unpaired surrogate (U+{ord(char):04X})"
    return f"contains a control character (U+{ord(char):04X})"


def check_text(value: str, *, single_line: bool = False) -> str:
    """``value`` unchanged, or ValueError (a pydantic validator's way to say 422)."""
    problem = text_problem(value, single_line=single_line)
    if problem is not None:
        raise ValueError(problem)
    return value


def check_label(value: str) -> str:
    """:func:`check_text` for a single-line label (a name, a title, an identifier)."""
    return check_text(value, single_line=True)


def strip_controls(value: str) -> str:
    """``value`` without control characters, NULs or surrogates (for names taken from
    clients' file systems, which are kept rather than refused)."""
    return _CONTROL.sub("", value)  # controls include NUL and the surrogates


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JsonRejected("a number is too large for a 64-bit float")
    return value


def _no_constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not JSON")


def loads(raw: bytes | str) -> Any:
    """``json.loads`` that only returns values every layer can store.

    Raises :class:`JsonRejected`. The cost stays linear and small: the parsed value is only
    walked when the raw text could hold a problem (enough brackets to be deep, a ``\\u0000``
    or a surrogate escape).
    """
    if isinstance(raw, str):
        data = raw.encode("utf-8", "surrogatepass")
    else:
        data = raw
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected("the body is not valid UTF-8", exc.start) from None
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise JsonRejected(exc.msg, exc.pos) from None
    except RecursionError:
        raise JsonRejected(f"nesting deeper than {MAX_JSON_DEPTH} levels") from None
    except JsonRejected:
        raise
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits()
        raise JsonRejected(str(exc).split(";", 1)[0]) from None
    deep = data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH
    strings = b"\\u0000" in data or _SURROGATE_ESCAPE.search(data) is not None
    if deep or strings:
        _walk(value, check_strings=strings)
    return value


def _walk(value: Any, *, check_strings: bool) -> None:
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            if check_strings and (problem := text_problem(item)):
                raise JsonRejected(f"{where or 'the value'} {problem}")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise JsonRejected(f"nesting deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                path = f"{where}.{key}" if where else str(key)
                if check_strings and (problem := text_problem(key)):
                    raise JsonRejected(f"a key {problem}")
                stack.append((child, depth + 1, path[:200]))
        else:
            stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))


def utc_datetime(value: datetime) -> datetime:
    """An aware ``value`` in UTC, or ValueError when it has no representable UTC time."""
    if value.tzinfo is None:
        raise ValueError("a timezone offset is required")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR}") from None
    if not MIN_YEAR <= utc.year <= MAX_YEAR:
        raise ValueError(f"must lie between the years {MIN_YEAR} and {MAX_YEAR}")
    return utc
