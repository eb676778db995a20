"""Login throttling shared by every process, over GCRA buckets in the database.

The GCRA rule and the store's contract are in :mod:`ragd.stores.rate_limits`; this module
decides what a bucket is keyed on. A key names its scope in clear (``login-account:...``)
and the rest as an HMAC: the table holds no email address or client address in clear, and a
hostile value of any length becomes one short key. The HMAC key is derived from the token
signing key, which every replica must share anyway (its tokens verify everywhere), so every
replica computes the same bucket for the same account. Rotating the signing key starts
every bucket afresh, which costs an attacker nothing worth having: one more burst.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable

from ragd.errors import ConfigurationError
from ragd.settings import Settings
from ragd.stores.rate_limits import Hit, Rate, RateLimits, Verdict

__all__ = ["RateLimiter", "keying_secret", "wait_seconds"]


class RateLimiter:
    """Buckets of the shared store, keyed by scope and a keyed hash of what they count.

    ``clock`` (seconds since the epoch) is for tests; without it the database's clock is
    the one every process and host shares.
    """

    def __init__(
        self,
        store: RateLimits,
        secret: bytes,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._store = store
        self._key = hmac.new(secret, b"ragd rate-limit keys", hashlib.sha256).digest()
        self._clock = clock

    def bucket(self, scope: str, value: str, rate: Rate) -> Hit:
        """The bucket of ``value`` (an address, an account...) in ``scope``."""
        digest = hmac.new(
            self._key, f"{scope}\x00{value}".encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
        return Hit(f"{scope}:{digest}", rate)

    async def hit(self, *hits: Hit) -> Verdict:
        """Count one attempt against each bucket, in order (see ``RateLimits.hit``)."""
        return await self._store.hit(hits, now=self._now())

    async def reset(self, hit: Hit) -> None:
        await self._store.reset(hit.key)

    async def prune(self) -> int:
        """Forget the buckets that are full again (housekeeping, one process)."""
        return await self._store.prune(now=self._now())

    def _now(self) -> float | None:
        return None if self._clock is None else self._clock()


def wait_seconds(verdict: Verdict) -> int | None:
    """A refusal's wait as a ``Retry-After`` value (whole seconds, at least 1), or None."""
    if verdict.retry_after is None:
        return None
    return max(1, math.ceil(verdict.retry_after))


def keying_secret(settings: Settings) -> bytes:
    """Key material every replica shares: the HS256 secret, or the private signing key's
    file (EdDSA/RS256). Never logged, never stored: only an HMAC key is derived from it."""
    auth = settings.auth
    if auth.algorithm == "HS256":
        if settings.jwt_secret is None:
            raise ConfigurationError("a JWT secret is required for HS256")
        return settings.jwt_secret.get_secret_value().encode()
    if auth.private_key_file is None:
        raise ConfigurationError(f"{auth.algorithm} needs private_key_file")
    try:
        return auth.private_key_file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the private key file: {exc.strerror}") from None
