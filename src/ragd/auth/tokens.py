"""JWT access and refresh tokens (RFC 8725 practices).

* The algorithm is pinned from settings; the token header's ``alg`` must equal it, so
  ``none`` and algorithm swaps (e.g. HS256 signed with an RSA public key) fail.
* Every token carries a ``kid``; verification accepts the current key and, while keys
  rotate, the previous one. An unknown ``kid`` fails.
* ``exp``, ``iat``, ``iss``, ``aud``, ``sub``, ``jti``, ``tid``, ``typ`` are required; leeway
  is at most 60 s; ``typ`` separates access from refresh tokens.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from ragd.errors import AuthenticationFailed, ConfigurationError
from ragd.settings import Settings
from ragd.stores.base import Role

TokenType = Literal["access", "refresh"]
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "tid", "typ"]
_HEADER_TYPES: dict[TokenType, str] = {"access": "at+jwt", "refresh": "rt+jwt"}


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """The verified content of an access token."""

    user_id: str
    tenant_id: str
    session_id: str
    role: Role
    is_superuser: bool
    jti: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    user_id: str
    tenant_id: str
    session_id: str
    jti: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    signing: Any  # None for a previous key: verification only
    verifying: Any


def new_jti() -> str:
    return secrets.token_urlsafe(24)


def _kid(material: bytes) -> str:
    # A fingerprint, not the key: SHA-256 of a >= 32-byte secret reveals nothing usable.
    return hashlib.sha256(b"ragd-kid:" + material).hexdigest()[:16]


def _load_keys(settings: Settings) -> list[_Key]:
    auth = settings.auth
    if auth.algorithm == "HS256":
        if settings.jwt_secret is None:
            raise ConfigurationError("a JWT secret is required for HS256")
        current = settings.jwt_secret.get_secret_value().encode()
        keys = [_Key(_kid(current), current, current)]
        if auth.previous_jwt_secret is not None:
            previous = auth.previous_jwt_secret.get_secret_value().encode()
            keys.append(_Key(_kid(previous), None, previous))
        return keys

    from cryptography.hazmat.primitives import serialization

    def public(path: Path) -> tuple[str, Any]:
        key = serialization.load_pem_public_key(path.read_bytes())
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _kid(der), key

    if auth.private_key_file is None or auth.public_key_file is None:
        raise ConfigurationError(f"{auth.algorithm} needs private_key_file and public_key_file")
    try:
        private = serialization.load_pem_private_key(auth.private_key_file.read_bytes(), None)
        kid, verifying = public(auth.public_key_file)
        keys = [_Key(kid, private, verifying)]
        if auth.previous_public_key_file is not None:
            old_kid, old_key = public(auth.previous_public_key_file)
            keys.append(_Key(old_kid, None, old_key))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot load JWT keys: {exc}") from None
    return keys


class TokenService:
    """Issues and verifies ragd's JWTs. Stateless: revocation lives elsewhere."""

    def __init__(self, settings: Settings) -> None:
        auth = settings.auth
        self.algorithm = auth.algorithm
        self.issuer = auth.issuer
        self.audience = auth.audience
        self.access_ttl = auth.access_token_ttl_seconds
        self.refresh_ttl = auth.refresh_token_ttl_seconds
        self.leeway = min(auth.leeway_seconds, 60)
        keys = _load_keys(settings)
        self._signing = keys[0]
        self._verifying = {key.kid: key.verifying for key in keys}

    def issue_access(
        self,
        *,
        user_id: str,
        tenant_id: str,
        session_id: str,
        role: Role,
        is_superuser: bool,
        now: int | None = None,
    ) -> tuple[str, int]:
        """Return ``(token, expires_in_seconds)``."""
        issued = int(time.time()) if now is None else now
        claims = {
            "sub": user_id,
            "tid": tenant_id,
            "sid": session_id,
            "role": role,
            "su": is_superuser,
            "jti": new_jti(),
            "typ": "access",
            "iat": issued,
            "exp": issued + self.access_ttl,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return self._encode(claims, "access"), self.access_ttl

    def issue_refresh(
        self, *, user_id: str, tenant_id: str, session_id: str, jti: str, now: int | None = None
    ) -> tuple[str, int]:
        """Return ``(token, expires_at_epoch)``."""
        issued = int(time.time()) if now is None else now
        expires = issued + self.refresh_ttl
        claims = {
            "sub": user_id,
            "tid": tenant_id,
            "sid": session_id,
            "jti": jti,
            "typ": "refresh",
            "iat": issued,
            "exp": expires,
            "iss": self.issuer,
            "aud": self.audience,
        }
        return self._encode(claims, "refresh"), expires

    def verify_access(self, token: str) -> AccessClaims:
        payload = self._decode(token, "access")
        role: Role = "admin" if payload.get("role") == "admin" else "member"
        return AccessClaims(
            user_id=payload["sub"],
            tenant_id=payload["tid"],
            session_id=payload["sid"],
            role=role,
            is_superuser=payload.get("su") is True,
            jti=payload["jti"],
            expires_at=int(payload["exp"]),
        )

    def verify_refresh(self, token: str) -> RefreshClaims:
        payload = self._decode(token, "refresh")
        return RefreshClaims(
            user_id=payload["sub"],
            tenant_id=payload["tid"],
            session_id=payload["sid"],
            jti=payload["jti"],
            expires_at=int(payload["exp"]),
        )

    def _encode(self, claims: dict[str, Any], typ: TokenType) -> str:
        headers = {"kid": self._signing.kid, "typ": _HEADER_TYPES[typ]}
        return jwt.encode(claims, self._signing.signing, algorithm=self.algorithm, headers=headers)

    def _decode(self, token: str, expected: TokenType) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError:
            raise AuthenticationFailed(reason="malformed") from None
        if header.get("alg") != self.algorithm:
            raise AuthenticationFailed(reason="algorithm")
        key = self._verifying.get(header.get("kid", ""))
        if key is None:
            raise AuthenticationFailed(reason="unknown_kid")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "strict_aud": True},
            )
        except ExpiredSignatureError:
            raise AuthenticationFailed("Token expired", reason="expired",
                                       code="token_expired") from None
        except InvalidAudienceError:
            raise AuthenticationFailed(reason="audience") from None
        except InvalidIssuerError:
            raise AuthenticationFailed(reason="issuer") from None
        except MissingRequiredClaimError:
            raise AuthenticationFailed(reason="missing_claim") from None
        except InvalidSignatureError:
            raise AuthenticationFailed(reason="signature") from None
        except ImmatureSignatureError:
            raise AuthenticationFailed(reason="not_yet_valid") from None
        except PyJWTError:
            raise AuthenticationFailed(reason="malformed") from None
        if payload.get("typ") != expected or header.get("typ") != _HEADER_TYPES[expected]:
            raise AuthenticationFailed(reason="token_type")
        for claim in ("sub", "tid", "sid", "jti"):
            if not isinstance(payload.get(claim), str) or not payload[claim]:
                raise AuthenticationFailed(reason="missing_claim")
        return payload
