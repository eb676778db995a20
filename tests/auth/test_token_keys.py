"""Asymmetric signing: EdDSA keys from PEM files, with the algorithm pinned."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ragd.app import create_app
from ragd.errors import ConfigurationError
from ragd.settings import load_settings
from tests.conftest import assert_error, bearer, make_settings, register, running


def _write_ed25519(directory: Path) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private = directory / "ed25519.pem"
    public = directory / "ed25519.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


async def test_eddsa_tokens_work_and_hs256_forgeries_fail(tmp_path: Path) -> None:
    private, public = _write_ed25519(tmp_path)
    settings = make_settings(
        tmp_path / "data",
        auth={"algorithm": "EdDSA", "private_key_file": private, "public_key_file": public},
    )
    async with running(create_app(settings)) as client:
        user = await register(client)
        header = jwt.get_unverified_header(user["access_token"])
        assert header["alg"] == "EdDSA"
        assert (
            await client.get("/api/v1/auth/me", headers=bearer(user["access_token"]))
        ).status_code == 200
        claims = jwt.decode(user["access_token"], options={"verify_signature": False})
        forged = jwt.encode(
            claims,
            "some-shared-secret-of-32-bytes-or-more!",
            algorithm="HS256",
            headers={"kid": header["kid"]},
        )
        assert_error(await client.get("/api/v1/auth/me", headers=bearer(forged)), 401)


def test_production_eddsa_needs_key_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGD_ENV", "production")
    monkeypatch.setenv("RAGD_AUTH__ALGORITHM", "EdDSA")
    with pytest.raises(ConfigurationError, match="private_key_file"):
        load_settings()


async def test_unreadable_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    settings = make_settings(
        tmp_path / "data",
        auth={"algorithm": "EdDSA", "private_key_file": bad, "public_key_file": bad},
    )
    with pytest.raises(ConfigurationError, match="cannot load JWT keys"):
        async with running(create_app(settings)):
            pass
