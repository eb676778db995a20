"""Schemathesis hooks for tests/api/test_schema_fuzz.py (loaded by the schemathesis CLI).

Authenticates every case as a tenant admin. A case may revoke the session it runs with
(logout, logout-all, a role change): schemathesis then sees a 401, drops the token and calls
``get`` again, which logs in afresh. A case may even demote, deactivate or delete the admin
itself (allowed once it created another admin): then ``get`` registers a new tenant and goes
on as its admin.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import schemathesis

_PASSWORD = os.environ.get("FUZZ_PASSWORD", "")
_account = {"email": os.environ.get("FUZZ_EMAIL", "")}


@schemathesis.auth(refresh_interval=3600, retry_on=[401])
class TenantAdmin:
    def get(self, case: Any, ctx: Any) -> str:
        base = os.environ["FUZZ_BASE_URL"]
        with httpx.Client(base_url=base, timeout=60) as client:
            login = client.post("/api/v1/auth/login",
                                json={"email": _account["email"], "password": _PASSWORD})
            if login.status_code == 200:
                token = str(login.json()["access_token"])
                me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
                if me.status_code == 200 and me.json()["role"] == "admin":
                    return token
            email = f"fuzz-{uuid.uuid4().hex[:12]}@acme.io"
            registered = client.post("/api/v1/auth/register", json={
                "email": email, "password": _PASSWORD, "tenant_name": email})
            registered.raise_for_status()
            _account["email"] = email
            return str(registered.json()["access_token"])

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = case.headers or {}
        case.headers.pop("X-API-Key", None)
        case.headers["Authorization"] = f"Bearer {data}"
