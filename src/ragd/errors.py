"""The domain error hierarchy.

Services raise these; ``ragd.api.errors`` maps each class to one HTTP status and the stable
body ``{"error": {"code": ..., "message": ...}}``. Messages are shown to clients, so they
never contain secrets, tokens or document text.
"""

from __future__ import annotations


class RagdError(Exception):
    """Base class. ``code`` is a stable, machine-readable identifier."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigurationError(RagdError):
    """Settings are missing or invalid; the process must not start."""

    code = "configuration_error"


class InvalidInput(RagdError):
    """The request is well-formed but its content is not acceptable."""

    code = "invalid_input"


class UnsupportedMediaType(RagdError):
    """The uploaded content is of a type ragd cannot ingest (the message lists the types)."""

    code = "unsupported_type"


class PayloadTooLarge(RagdError):
    """The request body or uploaded file is over its size limit."""

    code = "payload_too_large"


class NotFound(RagdError):
    """The resource does not exist, or belongs to another tenant."""

    code = "not_found"


class Conflict(RagdError):
    """The request conflicts with the current state (duplicate, last admin...)."""

    code = "conflict"


class AuthenticationFailed(RagdError):
    """No valid credentials. ``reason`` is for logs and metrics, never for the client."""

    code = "not_authenticated"

    def __init__(
        self,
        message: str = "Not authenticated",
        *,
        reason: str = "invalid",
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.reason = reason


class PermissionDenied(RagdError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"


class RateLimited(RagdError):
    """Too many attempts; retry after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class Unavailable(RagdError):
    """A dependency (database, model...) cannot serve the request now."""

    code = "unavailable"


class Busy(Unavailable):
    """The database stayed locked by other writers past the write budget; retry shortly.

    Never a sign of lost data: the write did not happen. Jobs that meet it are put back
    without using up an attempt.
    """

    code = "busy"

    def __init__(
        self,
        message: str = "the server is busy with other writes; retry shortly",
        *,
        retry_after: int = 1,
    ) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
