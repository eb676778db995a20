"""One error model: every error response is ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ragd.errors import (
    AuthenticationFailed,
    ConfigurationError,
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RagdError,
    RateLimited,
    Unavailable,
    UnsupportedMediaType,
)

logger = logging.getLogger(__name__)

_STATUS: list[tuple[type[RagdError], int]] = [
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (InvalidInput, 422),
    (RateLimited, 429),
    (Unavailable, 503),
    (ConfigurationError, 500),
]

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_for(exc: RagdError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


async def _ragd_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RagdError)  # noqa: S101 - registered for RagdError only
    status = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, AuthenticationFailed):
        headers["WWW-Authenticate"] = "Bearer"
        logger.info("authentication failed", extra={"reason": exc.reason})
        services = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.auth_failure(exc.reason)
    retry_after = getattr(exc, "retry_after", None)  # RateLimited, ModelUnavailable
    if isinstance(retry_after, int | float) and retry_after > 0:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return error_response(status, exc.code, exc.message, headers=headers or None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:  # noqa: PLR2004 - method not allowed
        headers["Allow"] = allowed_methods(request)
    return error_response(exc.status_code, code, message, headers=headers or None)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (RFC 9110 15.5.6).

    Starlette answers with the methods of the first route whose path matched, so a path
    served by two routes (``GET`` and ``POST /collections``) would advertise only one. Each
    method is asked of the router's own matching, so nested routers answer too.
    """
    methods = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return ", ".join(methods)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    return str(value)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101
    details = []
    for error in exc.errors():
        # Never echo the input back: it may be a password.
        msg = str(error.get("msg", ""))
        if error.get("type") == "json_invalid":
            # The parser's reason ("Expecting ',' delimiter", "nesting deeper than 32
            # levels") says what is wrong without quoting the body.
            reason = (error.get("ctx") or {}).get("error")
            msg = f"invalid JSON: {reason}" if reason else "invalid JSON"
        details.append(
            {
                "loc": _jsonable(list(error.get("loc", ()))),
                "msg": msg,
                "type": str(error.get("type", "")),
            }
        )
    first = details[0] if details else {"loc": [], "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        message = f"body: {first['msg']}"
    else:
        where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
        message = f"{where}: {first['msg']}"
    return error_response(422, "validation_error", message, details=details)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RagdError, _ragd_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422, 429)
}
