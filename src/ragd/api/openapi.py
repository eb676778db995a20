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
from ragd.api.payloads import TextDocumentIn, TextReplaceIn
from ragd.generation.providers.factory import chain_names
from ragd.settings import Settings

#: ``required: false`` parameters and bodies still meet these on every route.
COMMON_ERRORS = {
    "400": "Malformed request framing (an invalid Content-Length)",
    "413": "Request body too large",
    "422": "Invalid input",
    "503": "A dependency (database, model) is unavailable; retry later",
}
_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


#: Any JSON value ragd accepts where a body is free-form (OpenAI clients' extra fields).
JSON_VALUE: dict[str, Any] = {"anyOf": [
    {"type": "string", "pattern": hygiene.TEXT_PATTERN}, {"type": "number"},
    {"type": "boolean"}, {"type": "null"},
    {"type": "array", "items": {"$ref": "#/components/schemas/JsonValue"}},
    {"type": "object", "propertyNames": {"pattern": hygiene.TEXT_PATTERN},
     "additionalProperties": {"$ref": "#/components/schemas/JsonValue"}},
]}


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The schema of ``app`` as ``settings`` configure it, computed once and cached."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes,
        description=app.description,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (TextDocumentIn, TextReplaceIn):  # bodies read by the route itself
        components[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    _deployment(components, settings)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "security" in operation:  # openapi_extra appends to the dependencies' list
                unique = {repr(sorted(item.items())): item for item in operation["security"]}
                operation["security"] = list(unique.values())
            for parameter in operation.get("parameters", []):
                _constrain(parameter.get("schema", {}), hygiene.LABEL_PATTERN)
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                responses.setdefault(status, {"description": description, "content": _BODY})
    bodies = [content.get("schema", {})
              for operations in schema.get("paths", {}).values()
              for operation in operations.values()
              for content in operation.get("requestBody", {}).get("content", {}).values()]
    # The rules are about what clients send: request bodies and what they refer to, not
    # responses (which quote stored documents as they are).
    for name in _referenced(bodies, components):
        _constrain(components[name], hygiene.TEXT_PATTERN)
    for body in bodies:
        _constrain(body, hygiene.TEXT_PATTERN)
    components["JsonValue"] = JSON_VALUE
    app.openapi_schema = schema
    return schema


def _referenced(roots: list[Any], components: dict[str, Any]) -> set[str]:
    """Names of the components ``roots`` refer to, directly or through each other."""
    found: set[str] = set()
    pending = list(roots)
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found and name in components:
                    found.add(name)
                    pending.append(components[name])
            pending.extend(node.values())
    return found


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
    if node.get("type") == "object" and node.get("additionalProperties", True) is not False:
        node.setdefault("propertyNames", {"pattern": hygiene.TEXT_PATTERN})
        if node.get("additionalProperties", True) is True:
            node["additionalProperties"] = {"$ref": "#/components/schemas/JsonValue"}
    for key, value in node.items():
        if key not in ("example", "examples", "default"):
            _constrain(value, pattern)


def _deployment(components: dict[str, Any], settings: Settings) -> None:
    """Limits and names this deployment's settings decide, so the schema is exact here."""

    def field(model: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = components[model]["properties"][name]
        return found

    field("KeywordsIn", "text")["maxLength"] = settings.models.keywords_max_chars
    field("TextDocumentIn", "text")["maxLength"] = settings.ingestion.max_text_chars
    field("ChatIn", "question")["maxLength"] = settings.llm.max_question_chars
    providers = field("ChatIn", "providers")["anyOf"][0]
    providers["items"] = {"type": "string", "enum": chain_names(settings.llm)}
    if settings.models.reranker == "none":
        field("SearchIn", "rerank").update(
            anyOf=[{"type": "boolean", "const": False}, {"type": "null"}],
            description="No reranker is configured here: true is refused (422).",
        )


def install_openapi(app: FastAPI, settings: Settings) -> None:
    app.openapi = lambda: build_openapi(app, settings)  # type: ignore[method-assign]
