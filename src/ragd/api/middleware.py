"""Pure ASGI middleware: request id, access log, security headers, the last-resort 500,
and the request body size limit."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragd.ops.logs import request_id_var

logger = logging.getLogger("ragd.access")
error_logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

#: Sent on every response unless the route set the header itself. The API serves JSON to
#: programs: nothing should be sniffed, framed, cached or leak its URL as a referrer.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)
#: Only over TLS (the scheme uvicorn reports, which honours X-Forwarded-Proto from trusted
#: proxies): a browser ignores HSTS on plain HTTP, and sending it there would be misleading.
HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


def with_security_headers(
    headers: list[tuple[bytes, bytes]], *, tls: bool
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus the security headers the response does not already carry."""
    present = {name.lower() for name, _ in headers}
    extra = [item for item in SECURITY_HEADERS if item[0] not in present]
    if tls and HSTS[0] not in present:
        extra.append(HSTS)
    return headers + extra


class RequestContextMiddleware:
    """Accept a sane ``X-Request-ID`` (or make one), echo it, add the security headers, and
    log one line per request.

    It is also the last resort for unhandled exceptions. Starlette's own handler sits outside
    every middleware: it answers 500 without our headers and re-raises, and the server then
    drops the keep-alive connection, so a client that does not retry loses its next request.
    Here the error is logged with its request id and answered as the stable error body; the
    connection stays usable. Only when the response had already started (a stream failing
    midway) is the exception re-raised, since the server must then cut the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        tls = scope.get("scheme") == "https"
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = with_security_headers(headers, tls=tls)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client left while its body was read: nobody to answer, nothing broke.
            logger.info("client disconnected", extra={"path": scope["path"]})
        except Exception:
            if started_response:
                raise
            error_logger.exception("unhandled error", extra={"path": scope["path"]})
            await _reject(send_with_id, 500, "internal_error", "internal server error")
        finally:
            elapsed = time.perf_counter() - started
            _observe(scope, status, elapsed)
            logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)


def _observe(scope: Scope, status: int, seconds: float) -> None:
    """Record request metrics by route template (raw paths would explode cardinality)."""
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    metrics = getattr(services, "metrics", None)
    if metrics is None:
        return
    metrics.observe_request(scope["method"], route_template(scope), status, seconds)


def route_template(scope: Scope) -> str:
    """``/api/v1/tenant/users/{user_id}`` for ``/api/v1/tenant/users/3f2a...``.

    Rebuilt from the matched path parameters, so it holds however routers were nested;
    requests that matched no route are ``unmatched``.
    """
    if scope.get("route") is None:
        return "unmatched"
    params = {str(value): name for name, value in (scope.get("path_params") or {}).items()}
    if not params:
        return str(scope["path"])
    parts = [f"{{{params[part]}}}" if part in params else part for part in scope["path"].split("/")]
    return "/".join(parts)


class BodyLimitMiddleware:
    """Reject bodies over ``max_bytes`` with 413 before buffering them.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted
    as it streams and cut off when it passes the limit. Routes that accept uploads get their
    own, larger limit through ``overrides`` (path prefix -> bytes).
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, overrides: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _limit(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reject(send, 400, "bad_request", "invalid Content-Length")
                    return
                if declared > limit:
                    await _reject(send, 413, "payload_too_large",
                                  f"request body exceeds {limit} bytes")
                    return
        received = 0
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _reject(send, 413, "payload_too_large", f"request body exceeds {limit} bytes")


class _TooLarge(StarletteHTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it instead of answering 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


async def _reject(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
