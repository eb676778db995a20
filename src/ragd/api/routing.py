"""The route class of every ragd endpoint: hostile values are refused before any route runs.

FastAPI parses JSON bodies with ``json.loads`` and hands path and query values over as
decoded. Both let through values that later layers cannot store (a NUL, an unpaired
surrogate, a 10,000-level nesting, ``NaN``); each such value used to surface as a 500 wherever
it first hurt. :class:`ApiRoute` applies :mod:`ragd.hygiene` at the one place every request
passes, and answers the stable 422.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from ragd import hygiene


class StrictRequest(Request):
    """A request whose ``json()`` is :func:`ragd.hygiene.loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body(), as_decode_error=True)
        return self._json


def parse_json(raw: bytes, *, as_decode_error: bool = False) -> Any:
    """Strictly parsed JSON, or the 422 FastAPI gives for malformed JSON.

    Inside FastAPI's body reading a ``JSONDecodeError`` is what becomes that 422
    (``as_decode_error``); routes that read their body themselves get the validation error.
    """
    try:
        return hygiene.loads(raw)
    except hygiene.JsonRejected as exc:
        if as_decode_error:
            raise json.JSONDecodeError(exc.reason, "", exc.pos) from None
        raise json_invalid(exc.reason, exc.pos) from None


def json_invalid(reason: str, pos: int = 0) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "json_invalid", "loc": ("body", pos), "msg": "JSON decode error",
          "input": {}, "ctx": {"error": reason}}]
    )


def check_parameters(request: Request, query_names: frozenset[str]) -> None:
    """Path and query values are single-line text: no NULs or control characters.

    Only the query parameters the route reads are checked (and named in the error): others
    reach nothing, and their names are client input that an error must not echo.
    """
    errors = []
    for where, values in (("path", request.path_params.items()),
                          ("query", request.query_params.multi_items())):
        for name, value in values:
            if where == "query" and name not in query_names:
                continue
            if isinstance(value, str) and (
                problem := hygiene.text_problem(value, single_line=True)
            ):
                errors.append({"type": "string_invalid", "loc": (where, name),
                               "msg": f"Value {problem}", "input": None})
    if errors:
        raise RequestValidationError(errors)


class ApiRoute(APIRoute):
    """Checks parameters and parses JSON strictly, then runs the route as usual."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        query_names = _query_names(self.dependant)

        async def strict_handler(request: Request) -> Response:
            check_parameters(request, query_names)
            return await handler(StrictRequest(request.scope, request.receive))

        return strict_handler


def _query_names(dependant: Any) -> frozenset[str]:
    """The query parameters a route reads, its dependencies' included."""
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        names.update(field.alias for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)
