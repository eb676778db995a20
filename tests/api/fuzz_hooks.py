"""Schemathesis hooks for tests/api/test_schema_fuzz.py (loaded by the schemathesis CLI).

Authenticates every case as the fuzzing tenant's admin. A case may revoke the session it
runs with (logout, logout-all, a role change): schemathesis then sees a 401, drops the
token and calls ``get`` again, which logs in afresh.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis


@schemathesis.auth(refresh_interval=3600, retry_on=[401])
class TenantAdmin:
    def get(self, case: Any, ctx: Any) -> str:
        response = httpx.post(
            os.environ["FUZZ_BASE_URL"] + "/api/v1/auth/login",
            json={"email": os.environ["FUZZ_EMAIL"],
                  "password": os.environ["FUZZ_PASSWORD"]},
            timeout=60,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers.pop("X-API-Key", None)
        case.headers["Authorization"] = f"Bearer {data}"
