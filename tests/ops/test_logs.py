"""Logging: JSON lines with request ids, credentials masked whatever the caller passes."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest

from ragd.ops.logs import JsonFormatter, TextFormatter, configure_logging, request_id_var
from tests.conftest import STRONG_PASSWORD


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("ragd.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_fields_and_request_id() -> None:
    token = request_id_var.set("req-42")
    try:
        line = JsonFormatter().format(_record(user_id="u1", duration_ms=1.5))
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["msg"] == "hello world"
    assert entry["level"] == "info"
    assert entry["request_id"] == "req-42"
    assert entry["user_id"] == "u1" and entry["duration_ms"] == 1.5


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
@pytest.mark.parametrize(
    "field", ["password", "new_password", "access_token", "jwt_secret", "authorization", "api_key"]
)
def test_credential_fields_are_masked(formatter: logging.Formatter, field: str) -> None:
    line = formatter.format(_record(**{field: "s3cr3t-value"}))
    assert "s3cr3t-value" not in line
    assert "**********" in line


async def test_requests_never_log_passwords_or_tokens(client: httpx.AsyncClient) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("DEBUG", "json", production=True, stream=stream)
    try:
        email = "logcheck@acme.io"
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": STRONG_PASSWORD, "tenant_name": "logcheck"},
            headers={"X-Request-ID": "trace-me-1"},
        )
        assert response.status_code == 201
        tokens = response.json()
        await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        await client.post("/api/v1/auth/login", json={"email": email, "password": "wrong-pass-123"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    text = stream.getvalue()
    entries = [json.loads(line) for line in text.splitlines()]
    assert STRONG_PASSWORD not in text and "wrong-pass-123" not in text
    assert tokens["access_token"] not in text and tokens["refresh_token"] not in text
    assert "$argon2id$" not in text  # no SQL parameters from DEBUG driver logs either
    access = [entry for entry in entries if entry["logger"] == "ragd.access"]
    assert any(entry.get("request_id") == "trace-me-1" for entry in access)
    assert {entry["status"] for entry in access} >= {201, 200, 401}
