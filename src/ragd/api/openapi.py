"""The OpenAPI document: FastAPI's, plus the rules ragd enforces everywhere.

Some rules hold for every input and are applied once (:mod:`ragd.api.routing`) rather than
field by field, so FastAPI cannot see them. They are written into the schema here, so that a
client (or a schema-driven fuzzer) reading it knows what the server accepts:

* every text field: no NUL character and no unpaired surrogate;
* every path and query string: a single line (no control characters);
* every operation: the error statuses any request can meet (400 malformed framing, 413 too
  large, 422 invalid, 429 throttled, 503 a dependency unavailable) with the error body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ragd import hygiene

#: ``required: false`` parameters and bodies still meet these on every route.
COMMON_ERRORS = {
    "400": "Malformed request framing (an invalid Content-Length)",
    "413": "Request body too large",
    "422": "Invalid input",
    "503": "A dependency (database, model) is unavailable; retry later",
}
_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The schema of ``app``, computed once and cached on it."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes,
        description=app.description,
    )
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _constrain(parameter.get("schema", {}), hygiene.LABEL_PATTERN)
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                responses.setdefault(status, {"description": description, "content": _BODY})
    for component in schema.get("components", {}).get("schemas", {}).values():
        _constrain(component, hygiene.TEXT_PATTERN)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                _constrain(content.get("schema", {}), hygiene.TEXT_PATTERN)
    app.openapi_schema = schema
    return schema


def _constrain(node: Any, pattern: str) -> None:
    """Give every free-text string schema under ``node`` the ``pattern`` it is held to."""
    if isinstance(node, list):
        for item in node:
            _constrain(item, pattern)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not ({"enum", "const", "format", "pattern"} & set(node)):
        node["pattern"] = pattern
    for key, value in node.items():
        if key not in ("example", "examples", "default"):
            _constrain(value, pattern)


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
