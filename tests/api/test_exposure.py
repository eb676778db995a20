"""What a production server shows to anyone: no API schema or docs, no open registration,
unless the operator turns them on."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragd.app import create_app
from tests.conftest import STRONG_PASSWORD, TEST_SECRET, assert_error, make_settings, running

REGISTER = {"email": "new@acme.io", "password": STRONG_PASSWORD, "tenant_name": "new"}


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_production_serves_no_schema_or_docs(tmp_path: Path, path: str) -> None:
    settings = make_settings(tmp_path, env="production", jwt_secret=TEST_SECRET)
    async with running(create_app(settings)) as client:
        assert_error(await client.get(path), 404)


async def test_production_docs_can_be_turned_on(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, env="production", api_docs=True)
    async with running(create_app(settings)) as client:
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200


async def test_development_serves_schema_and_docs(tmp_path: Path) -> None:
    async with running(create_app(make_settings(tmp_path))) as client:
        assert (await client.get("/openapi.json")).status_code == 200


async def test_production_registration_is_closed_unless_allowed(tmp_path: Path) -> None:
    closed = make_settings(tmp_path / "closed", env="production")
    async with running(create_app(closed)) as client:
        assert_error(await client.post("/api/v1/auth/register", json=REGISTER), 403,
                     "registration_disabled")
    opened = make_settings(tmp_path / "open", env="production", allow_registration=True)
    async with running(create_app(opened)) as client:
        assert (await client.post("/api/v1/auth/register", json=REGISTER)).status_code == 201
