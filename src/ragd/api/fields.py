"""Field types and bases shared by the request bodies of every route.

Each type carries its rule twice on purpose: a validator enforces it with a clear message,
and its JSON schema says it, so the OpenAPI document describes what the server accepts.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from ragd import hygiene
from ragd.retrieval.filters import MAX_FIELD_CHARS, MAX_FIELDS, MAX_IN_VALUES
from ragd.stores.metadata import (
    MAX_LIST_ITEMS,
    MAX_METADATA_KEY,
    MAX_METADATA_KEYS,
    MAX_SAFE_INTEGER,
    MAX_STRING_CHARS,
)


class Input(BaseModel):
    """A request body: unknown fields refused, and no silent coercion (``"10"`` is not an
    integer and ``0`` is not ``false``), so the schema is exactly what is accepted."""

    model_config = ConfigDict(extra="forbid", strict=True)


#: A single line of text (emails, ids): no control characters.
SingleLine = (AfterValidator(hygiene.check_label),
              Field(json_schema_extra={"pattern": hygiene.LABEL_PATTERN}))


def _name(value: str) -> str:
    name = hygiene.check_label(value).strip()
    if not name:
        raise ValueError("must not be blank")
    return name


#: A name or title: a single line that is not blank once stripped, stored stripped. Lengths
#: count what was sent (as the schema states them), so strip here, not in StringConstraints.
NameLine = (AfterValidator(_name), Field(json_schema_extra={"pattern": hygiene.NAME_PATTERN}))


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: Integers as JSON Schema means them: 18.0 is one too (a strict int refuses floats). Put it
#: after the field's bounds (``Annotated[int, Field(ge=1), WholeNumber]``), or the bounds
#: drop out of the JSON schema.
WholeNumber = BeforeValidator(_whole_number)
#: Free text that must not be blank (the route strips it and refuses what is left empty).
NonBlank = Field(json_schema_extra={"pattern": hygiene.NONBLANK_PATTERN})
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64), *SingleLine]
#: An aware time with a UTC value a database column can hold (no OverflowError later).
#: ISO 8601 text in JSON, so it is the one field parsed from a string (``strict=False``).
Timestamp = Annotated[AwareDatetime, AfterValidator(hygiene.utc_datetime), Field(strict=False)]

_TEXT = {"type": "string", "pattern": hygiene.TEXT_PATTERN}
_METADATA_SCALAR: dict[str, Any] = {"anyOf": [
    {**_TEXT, "maxLength": MAX_STRING_CHARS},
    {"type": "number", "minimum": -MAX_SAFE_INTEGER, "maximum": MAX_SAFE_INTEGER},
    {"type": "boolean"},
    {"type": "null"},
]}
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Flat JSON object: strings, numbers, booleans, nulls and lists of those; "
                   "at most 16 KiB.",
    "maxProperties": MAX_METADATA_KEYS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_METADATA_KEY,
                      "pattern": hygiene.LABEL_PATTERN},
    "additionalProperties": {"anyOf": [
        _METADATA_SCALAR,
        {"type": "array", "maxItems": MAX_LIST_ITEMS, "items": _METADATA_SCALAR},
    ]},
}
#: User metadata; the rule itself is :func:`ragd.stores.metadata.check_metadata`.
Metadata = Annotated[dict[str, Any], WithJsonSchema(METADATA_SCHEMA)]

_FILTER_SCALAR: dict[str, Any] = {"anyOf": [
    {**_TEXT, "maxLength": MAX_STRING_CHARS}, {"type": "number"}, {"type": "boolean"},
    {"type": "null"},
]}
_FILTER_LIST = {"type": "array", "minItems": 1, "maxItems": MAX_IN_VALUES,
                "items": _FILTER_SCALAR}
_FILTER_BOUND = {"anyOf": [{"type": "number"}, {"type": "string", "format": "date"},
                           {"type": "string", "format": "date-time"}]}
FILTERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Metadata filters (see the README): field -> value (equality) or "
                   "operators eq, ne, in, nin, exists, gt, gte, lt, lte.",
    "maxProperties": MAX_FIELDS,
    "propertyNames": {"minLength": 1, "maxLength": MAX_FIELD_CHARS,
                      "pattern": hygiene.TEXT_PATTERN},
    "additionalProperties": {"anyOf": [
        _FILTER_SCALAR,
        {"type": "object", "minProperties": 1, "additionalProperties": False,
         "properties": {"eq": _FILTER_SCALAR, "ne": _FILTER_SCALAR, "in": _FILTER_LIST,
                        "nin": _FILTER_LIST, "exists": {"type": "boolean"},
                        "gt": _FILTER_BOUND, "gte": _FILTER_BOUND, "lt": _FILTER_BOUND,
                        "lte": _FILTER_BOUND}},
    ]},
}
#: A metadata filter; the language itself is :func:`ragd.retrieval.filters.compile_filter`.
Filters = Annotated[dict[str, Any], WithJsonSchema(FILTERS_SCHEMA)]


def at_least_one_change(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a partial update: some field must be given and not null
    (null means "leave as is"; a body that changes nothing is refused)."""
    schema["anyOf"] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
        for name in schema.get("properties", {})
    ]
