"""JWT attack suite: forged, tampered and confused tokens are refused over real HTTP.

Every forged token starts from the claims and header of a token the running app really
issued (decoded without verification), so each test changes exactly one thing. The
``*_is_accepted`` controls prove the forging helpers themselves produce tokens the server
accepts, so a rejection below is caused by the one thing the test changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.warnings import InsecureKeyLengthWarning

from ragd.app import create_app
from tests.conftest import (
    STRONG_PASSWORD,
    TEST_SECRET,
    assert_error,
    bearer,
    make_settings,
    register,
    running,
)

ME = "/api/v1/auth/me"
REFRESH = "/api/v1/auth/refresh"
OTHER_SECRET = "an-entirely-different-secret-9876543210-ZYXWVUTSRQ"


# -- helpers ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def unpack(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims of a token, without verifying anything."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims


def resign(
    header: dict[str, Any],
    claims: dict[str, Any],
    *,
    key: str | bytes = TEST_SECRET,
    algorithm: str = "HS256",
) -> str:
    """Sign ``claims`` with PyJWT, keeping every header field (kid, typ) except ``alg``."""
    extra = {name: value for name, value in header.items() if name != "alg"}
    with warnings.catch_warnings():
        # HS384/HS512 with the 49-byte test secret: PyJWT warns, the attack does not care.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm, headers=extra)


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT computed with hmac directly (PyJWT refuses PEM keys as HMAC secrets)."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def with_payload(token: str, **changes: Any) -> str:
    """Replace claims in the payload segment and keep the original header and signature."""
    head, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims.update(changes)
    return f"{head}.{b64url_json(claims)}.{signature}"


async def get_me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(ME, headers=bearer(token))


async def post_refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def present(client: httpx.AsyncClient, kind: str, token: str) -> httpx.Response:
    """Send an access token to /auth/me or a refresh token to /auth/refresh."""
    if kind == "access":
        return await get_me(client, token)
    return await post_refresh(client, token)


def assert_rejected(response: httpx.Response, code: str = "not_authenticated") -> None:
    assert_error(response, 401, code)
    assert response.headers.get("www-authenticate") == "Bearer"


def token_of(issued: dict[str, Any], kind: str) -> str:
    token: str = issued[f"{kind}_token"]
    return token


@pytest.fixture
async def issued(client: httpx.AsyncClient) -> dict[str, Any]:
    """A freshly registered tenant admin: real access and refresh tokens."""
    return await register(client)


BOTH = pytest.mark.parametrize("kind", ["access", "refresh"])


# -- positive controls -----------------------------------------------------------------------


async def test_real_issued_access_token_is_accepted(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    response = await get_me(client, issued["access_token"])
    assert response.status_code == 200, response.text
    assert response.json()["email"] == issued["email"]
    assert response.json()["auth_method"] == "access_token"
    header, claims = unpack(issued["access_token"])
    assert header["alg"] == "HS256" and header["typ"] == "at+jwt" and header["kid"]
    assert {"exp", "iat", "iss", "aud", "sub", "jti", "tid", "sid", "typ"} <= set(claims)


async def test_real_issued_refresh_token_is_accepted(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    response = await post_refresh(client, issued["refresh_token"])
    assert response.status_code == 200, response.text
    assert (await get_me(client, response.json()["access_token"])).status_code == 200


@BOTH
async def test_resigned_copy_of_real_token_is_accepted(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    """Control for the forging helper: same header, claims, secret and kid -> accepted."""
    header, claims = unpack(token_of(issued, kind))
    response = await present(client, kind, resign(header, claims))
    assert response.status_code == 200, response.text


# -- algorithm attacks -----------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_unsigned_token_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str, alg: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    forged = f"{b64url_json({**header, 'alg': alg})}.{b64url_json(claims)}."
    assert_rejected(await present(client, kind, forged))


@BOTH
async def test_alg_none_with_original_signature_kept_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    token = token_of(issued, kind)
    header, _ = unpack(token)
    _, payload, signature = token.split(".")
    forged = f"{b64url_json({**header, 'alg': 'none'})}.{payload}.{signature}"
    assert_rejected(await present(client, kind, forged))


@BOTH
@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_algorithm_swap_to_other_hmac_with_same_secret_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str, algorithm: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    forged = resign(header, claims, algorithm=algorithm)
    assert jwt.get_unverified_header(forged)["alg"] == algorithm
    assert_rejected(await present(client, kind, forged))


def _write_rsa_keys(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = directory / "jwt-private.pem"
    public = directory / "jwt-public.pem"
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


@pytest.fixture
async def rs256(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, bytes]]:
    """An app configured for RS256 with real RSA keys; yields its client and public PEM."""
    private, public = _write_rsa_keys(tmp_path)
    settings = make_settings(
        tmp_path / "data",
        auth={"algorithm": "RS256", "private_key_file": private, "public_key_file": public},
    )
    async with running(create_app(settings)) as client:
        yield client, public.read_bytes()


async def test_rs256_real_issued_token_is_accepted(
    rs256: tuple[httpx.AsyncClient, bytes],
) -> None:
    client, _ = rs256
    issued = await register(client)
    assert jwt.get_unverified_header(issued["access_token"])["alg"] == "RS256"
    response = await get_me(client, issued["access_token"])
    assert response.status_code == 200, response.text


@BOTH
async def test_hs256_signed_with_rsa_public_key_rejected(
    rs256: tuple[httpx.AsyncClient, bytes], kind: str
) -> None:
    """The classic key-confusion attack: HMAC keyed with the server's public PEM."""
    client, public_pem = rs256
    issued = await register(client)
    header, claims = unpack(token_of(issued, kind))
    assert header["alg"] == "RS256"
    forged = hs256_by_hand({**header, "alg": "HS256"}, claims, public_pem)
    assert_rejected(await present(client, kind, forged))


async def test_rs256_app_rejects_token_signed_with_hs256_shared_secret(
    rs256: tuple[httpx.AsyncClient, bytes],
) -> None:
    client, _ = rs256
    issued = await register(client)
    header, claims = unpack(issued["access_token"])
    assert_rejected(await get_me(client, resign(header, claims, algorithm="HS256")))


# -- tampering -------------------------------------------------------------------------------


async def test_tampered_sub_with_original_signature_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    victim = await register(client)
    forged = with_payload(
        issued["access_token"], sub=victim["user"]["id"], tid=victim["tenant"]["id"]
    )
    assert_rejected(await get_me(client, forged))


async def test_tampered_role_escalation_with_original_signature_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    member_email = f"member-{issued['user']['id'][:8]}@acme.io"
    created = await client.post(
        "/api/v1/tenant/users",
        headers=bearer(issued["access_token"]),
        json={"email": member_email, "password": STRONG_PASSWORD, "role": "member"},
    )
    assert created.status_code == 201, created.text
    login = await client.post(
        "/api/v1/auth/login", json={"email": member_email, "password": STRONG_PASSWORD}
    )
    assert login.status_code == 200, login.text
    member_token = login.json()["access_token"]
    _, claims = unpack(member_token)
    assert claims["role"] == "member" and claims["su"] is False
    forged = with_payload(member_token, role="admin", su=True)
    assert_rejected(await get_me(client, forged))
    # The untampered member token still works: the rejection is the tampering's doing.
    assert (await get_me(client, member_token)).status_code == 200


@BOTH
async def test_tampered_signature_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    token = token_of(issued, kind)
    head, payload, signature = token.split(".")
    # Flip the FIRST signature character: the last one of a 43-char base64url string carries
    # padding bits, so changing it may decode to the very same bytes.
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert b64url_decode(flipped) != b64url_decode(signature)
    assert_rejected(await present(client, kind, f"{head}.{payload}.{flipped}"))


@BOTH
async def test_truncated_signature_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    head, payload, _ = token_of(issued, kind).split(".")
    assert_rejected(await present(client, kind, f"{head}.{payload}."))


# -- claims ----------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("claim", ["exp", "aud", "iss", "iat", "sub", "jti", "tid", "sid", "typ"])
async def test_missing_claim_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str, claim: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    assert claim in claims
    del claims[claim]
    assert_rejected(await present(client, kind, resign(header, claims)))


@BOTH
async def test_wrong_audience_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    assert_rejected(await present(client, kind, resign(header, {**claims, "aud": "other-api"})))


async def test_audience_list_containing_ours_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    """strict_aud: a token minted for several audiences is not a token for us."""
    header, claims = unpack(issued["access_token"])
    forged = resign(header, {**claims, "aud": [claims["aud"], "other-api"]})
    assert_rejected(await get_me(client, forged))


@BOTH
async def test_wrong_issuer_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    assert_rejected(await present(client, kind, resign(header, {**claims, "iss": "evil"})))


@BOTH
async def test_expired_beyond_leeway_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    now = int(time.time())
    forged = resign(header, {**claims, "iat": now - 1000, "exp": now - 120})
    assert_rejected(await present(client, kind, forged), code="token_expired")


async def test_expired_within_leeway_is_accepted(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    """Positive control for the 30 s default leeway: 10 s past exp still verifies."""
    header, claims = unpack(issued["access_token"])
    now = int(time.time())
    forged = resign(header, {**claims, "iat": now - 900, "exp": now - 10})
    response = await get_me(client, forged)
    assert response.status_code == 200, response.text


async def test_iat_in_future_beyond_leeway_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    header, claims = unpack(issued["access_token"])
    now = int(time.time())
    forged = resign(header, {**claims, "iat": now + 300, "exp": now + 1200})
    assert_rejected(await get_me(client, forged))


async def test_iat_in_future_within_leeway_is_accepted(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    header, claims = unpack(issued["access_token"])
    now = int(time.time())
    forged = resign(header, {**claims, "iat": now + 10, "exp": now + 900})
    response = await get_me(client, forged)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("value", [1, 0.5, None, ["x"], {"id": "x"}, ""])
async def test_non_string_or_empty_sub_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], value: Any
) -> None:
    header, claims = unpack(issued["access_token"])
    assert_rejected(await get_me(client, resign(header, {**claims, "sub": value})))


# -- token type confusion --------------------------------------------------------------------


async def test_refresh_token_used_as_access_token_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    assert_rejected(await get_me(client, issued["refresh_token"]))


async def test_access_token_used_at_refresh_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    assert_rejected(await post_refresh(client, issued["access_token"]))


async def test_refresh_token_with_access_payload_typ_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    """Payload typ and header typ must agree: changing only one is still refused."""
    header, claims = unpack(issued["refresh_token"])
    assert header["typ"] == "rt+jwt"
    forged = resign(header, {**claims, "typ": "access", "role": "admin"})
    assert_rejected(await get_me(client, forged))


# -- keys and kid ----------------------------------------------------------------------------


@BOTH
async def test_unknown_kid_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    forged = resign({**header, "kid": "0123456789abcdef"}, claims)
    assert_rejected(await present(client, kind, forged))


@BOTH
async def test_missing_kid_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    del header["kid"]
    assert_rejected(await present(client, kind, resign(header, claims)))


@BOTH
async def test_different_secret_with_right_kid_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kind: str
) -> None:
    header, claims = unpack(token_of(issued, kind))
    forged = resign(header, claims, key=OTHER_SECRET)
    assert jwt.get_unverified_header(forged)["kid"] == header["kid"]
    assert_rejected(await present(client, kind, forged))


@pytest.mark.parametrize("kid", [["x"], {"k": "v"}, 7, None, ""])
async def test_non_string_or_empty_kid_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], kid: Any
) -> None:
    """Odd kid values are a 401, never a server error from the key lookup."""
    header, claims = unpack(issued["access_token"])
    forged = f"{b64url_json({**header, 'kid': kid})}.{b64url_json(claims)}.AAAA"
    assert_rejected(await get_me(client, forged))


@pytest.mark.parametrize(
    "segments",
    [
        pytest.param(("[]", "{}"), id="header-is-array"),
        pytest.param(("{}", "[]"), id="payload-is-array"),
        pytest.param(("not json", "{}"), id="header-not-json"),
        pytest.param(("HEADER", '"just a string"'), id="payload-is-string"),
    ],
)
async def test_structurally_invalid_token_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], segments: tuple[str, str]
) -> None:
    header, _ = unpack(issued["access_token"])
    head, payload = segments
    head_segment = b64url_json(header) if head == "HEADER" else b64url(head.encode())
    forged = f"{head_segment}.{b64url(payload.encode())}.AAAA"
    assert_rejected(await get_me(client, forged))


async def test_previous_secret_accepted_during_rotation_then_rejected_after_removal(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    old_secret = "rotation-old-secret-0123456789-abcdefghijklmnop"
    new_secret = "rotation-new-secret-9876543210-qrstuvwxyzABCDEF"

    async with running(create_app(make_settings(data, jwt_secret=old_secret))) as client:
        issued = await register(client)
        assert (await get_me(client, issued["access_token"])).status_code == 200
    old_kid = jwt.get_unverified_header(issued["access_token"])["kid"]

    rotating = make_settings(data, jwt_secret=new_secret, auth={"previous_jwt_secret": old_secret})
    async with running(create_app(rotating)) as client:
        response = await get_me(client, issued["access_token"])
        assert response.status_code == 200, response.text
        assert response.json()["email"] == issued["email"]
        # New tokens are signed with the new key only.
        fresh = await client.post(
            "/api/v1/auth/login", json={"email": issued["email"], "password": STRONG_PASSWORD}
        )
        assert fresh.status_code == 200, fresh.text
        new_kid = jwt.get_unverified_header(fresh.json()["access_token"])["kid"]
        assert new_kid != old_kid
        # A token forged for the old kid with some other secret is still refused.
        header, claims = unpack(issued["access_token"])
        assert_rejected(await get_me(client, resign(header, claims, key=OTHER_SECRET)))

    async with running(create_app(make_settings(data, jwt_secret=new_secret))) as client:
        assert_rejected(await get_me(client, issued["access_token"]))
        assert_rejected(await post_refresh(client, issued["refresh_token"]))
        # Tokens of the new key keep working once the previous key is gone.
        assert (await get_me(client, fresh.json()["access_token"])).status_code == 200


# -- garbage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"Authorization": "Bearer abc"}, id="abc"),
        pytest.param({"Authorization": "Bearer a.b.c"}, id="a.b.c"),
        pytest.param({"Authorization": "Bearer ..."}, id="dots"),
        pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
        pytest.param({"Authorization": "Bearer"}, id="scheme-only"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic-scheme"),
        pytest.param({"Authorization": "Bearer " + "A" * 10_240}, id="10kb-garbage"),
        pytest.param({"Authorization": "Bearer ragd_notakey"}, id="api-key-shaped"),
        pytest.param({}, id="no-credentials"),
    ],
)
async def test_garbage_credentials_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], header: dict[str, str]
) -> None:
    assert_rejected(await client.get(ME, headers=header))


async def test_oversized_but_validly_signed_token_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any]
) -> None:
    """A correctly signed 10 KB token is refused by the credential size cap."""
    header, claims = unpack(issued["access_token"])
    forged = resign(header, {**claims, "pad": "x" * 10_240})
    assert len(forged) > 10_000
    assert_rejected(await get_me(client, forged))


@pytest.mark.parametrize("token", ["abc", "a.b.c", "...", "x" * 4000])
async def test_garbage_refresh_token_rejected(
    client: httpx.AsyncClient, issued: dict[str, Any], token: str
) -> None:
    assert_rejected(await post_refresh(client, token))
