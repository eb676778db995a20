"""API key format: ``ragd_<key id>_<secret>``.

The key id (16 base32 characters) is public: it is stored in clear, shown in listings as the
key's prefix, and used for lookup. The secret (32 random bytes) is stored only as a SHA-256
digest; a key has 256 bits of entropy, so a slow hash would add nothing but latency.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "ragd_"
_PATTERN = re.compile(r"^ragd_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: str


def generate() -> tuple[str, str, str]:
    """Return ``(plaintext key, key id, secret hash)``."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    secret = secrets.token_urlsafe(32)
    return f"{PREFIX}{key_id}_{secret}", key_id, hash_secret(secret)


def parse(value: str) -> ParsedKey | None:
    match = _PATTERN.match(value)
    if match is None:
        return None
    return ParsedKey(key_id=match.group(1), secret=match.group(2))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def looks_like_key(value: str) -> bool:
    return value.startswith(PREFIX)


def display_prefix(key_id: str) -> str:
    return f"{PREFIX}{key_id}"
