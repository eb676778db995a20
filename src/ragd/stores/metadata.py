"""User metadata of collections and documents: one rule for every way content arrives.

The HTTP routes, ``ragd ingest`` and the ingestion service all apply :func:`check_metadata`,
so a document stored by any path has metadata the filters and every backend can handle.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ragd.errors import InvalidInput
from ragd.hygiene import text_problem

MAX_METADATA_KEYS = 64
MAX_METADATA_KEY = 64
MAX_METADATA_BYTES = 16 * 1024
MAX_LIST_ITEMS = 100
MAX_STRING_CHARS = 4096
#: Numbers beyond what JSON consumers (JavaScript, PostgreSQL jsonb -> bigint) read exactly.
MAX_SAFE_INTEGER = 2**53 - 1


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(message, code="invalid_metadata")


def check_metadata(value: Any) -> dict[str, Any]:
    """A flat JSON object of strings, finite numbers, booleans, nulls and lists of those; at
    most 64 keys and 16 KiB; no NULs or unpaired surrogates. Raises :class:`InvalidInput`."""
    if not isinstance(value, dict):
        raise _invalid("metadata must be a JSON object")
    if len(value) > MAX_METADATA_KEYS:
        raise _invalid(f"metadata has more than {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_METADATA_KEY:
            raise _invalid(f"metadata keys must be 1 to {MAX_METADATA_KEY} characters")
        if problem := text_problem(key, single_line=True):
            raise _invalid(f"a metadata key {problem}")
        items = item if isinstance(item, list) else [item]
        if isinstance(item, list) and len(item) > MAX_LIST_ITEMS:
            raise _invalid(f"metadata list {key!r} is longer than {MAX_LIST_ITEMS}")
        for scalar in items:
            problem = _scalar_problem(scalar)
            if problem is not None:
                raise _invalid(f"metadata value of {key!r} {problem}")
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_METADATA_BYTES:
        raise _invalid(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return value


def _scalar_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            return f"is longer than {MAX_STRING_CHARS} characters"
        return text_problem(value)
    if isinstance(value, int | float) and math.isfinite(value):
        if abs(value) > MAX_SAFE_INTEGER:
            return f"is a number beyond +-{MAX_SAFE_INTEGER} (send it as a string)"
        return None
    return "must be a string, number, boolean, null or a list of those"
