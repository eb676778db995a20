"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import secrets
from functools import lru_cache

import anyio
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ragd.errors import InvalidInput

MAX_PASSWORD_CHARS = 256
#: zxcvbn's matching is super-linear in length and it refuses longer input (ValueError past
#: 72 characters since zxcvbn 4.5); beyond this many characters the score of the prefix is
#: already decisive.
_ZXCVBN_PREFIX = 72


class PasswordHasher:
    """argon2id hashing that runs in worker threads, never on the event loop.

    At most ``concurrency`` hashes run at once, which bounds memory to about
    ``concurrency * memory_kib``.
    """

    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, concurrency: int
    ) -> None:
        self._hasher = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str, password: str) -> tuple[bool, bool]:
        """Return ``(matches, needs_rehash)``."""
        return await anyio.to_thread.run_sync(
            self._verify_sync, password_hash, password, limiter=self._limiter
        )

    async def verify_dummy(self, password: str) -> None:
        """Spend the same time as a real verification, for unknown accounts."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
        await self.verify(self._dummy_hash, password)

    def _verify_sync(self, password_hash: str, password: str) -> tuple[bool, bool]:
        try:
            self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, False
        return True, self._hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def _zxcvbn() -> object:
    # Imported on first use: its dictionaries take a while to load and startup stays fast.
    from zxcvbn import zxcvbn

    return zxcvbn


def check_password(
    password: str, *, min_length: int, min_score: int, user_inputs: list[str]
) -> None:
    """Raise :class:`InvalidInput` (code ``weak_password``) unless the password is acceptable.

    Length first, then zxcvbn's estimate, which knows common passwords, keyboard patterns,
    dates, and the user's own inputs (email, tenant name).
    """
    if len(password) < min_length:
        raise InvalidInput(
            f"password must be at least {min_length} characters", code="weak_password"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(
            f"password must be at most {MAX_PASSWORD_CHARS} characters", code="weak_password"
        )
    estimate = _zxcvbn()(password[:_ZXCVBN_PREFIX], user_inputs=user_inputs)  # type: ignore[operator]
    if int(estimate["score"]) < min_score:
        feedback = estimate.get("feedback", {})
        hint = feedback.get("warning") or " ".join(feedback.get("suggestions", []))
        message = "password is too easy to guess"
        if hint:
            message += f": {hint}"
        raise InvalidInput(message, code="weak_password")
