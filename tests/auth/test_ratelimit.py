"""Login throttling's limiter (``auth/ratelimit.py``): what a bucket is keyed on, and, over
a real SQLite store with an injected clock, that the shared buckets make exactly the pure
GCRA rule's decisions (``stores/rate_limits.py``) for arbitrary request timings."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragd.auth.ratelimit import RateLimiter, keying_secret, wait_seconds
from ragd.db import migrate
from ragd.db.engine import Database
from ragd.errors import ConfigurationError
from ragd.stores.rate_limits import MAX_KEY_CHARS, Rate, Verdict, admit, retry_after
from ragd.stores.sql_rate_limits import SqlRateLimits
from tests.conftest import make_settings

SECRET = b"0123456789abcdef0123456789abcdef"
_examples = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('ratelimit') / 'ragd.db'}"

    async def create() -> None:
        db = Database(url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(create())
    return url


def _limiter(secret: bytes = SECRET) -> RateLimiter:
    return RateLimiter(SqlRateLimits(Database("sqlite+aiosqlite://")), secret)


@given(value=st.text(max_size=5000))
def test_a_bucket_key_is_short_and_shows_no_value(value: str) -> None:
    key = _limiter().bucket("login-account", f"{value}|203.0.113.7", Rate(3, 60)).key
    assert key.startswith("login-account:")
    assert len(key) == len("login-account:") + 64 <= MAX_KEY_CHARS
    assert "@" not in key and "203.0.113.7" not in key


def test_buckets_depend_on_scope_value_and_secret_only() -> None:
    rate = Rate(3, 60)
    one, two = _limiter(), _limiter()
    assert one.bucket("s", "carol@acme.io", rate) == two.bucket("s", "carol@acme.io", rate)
    assert one.bucket("s", "carol@acme.io", rate) != one.bucket("t", "carol@acme.io", rate)
    assert one.bucket("s", "a", rate) != one.bucket("s", "b", rate)
    assert _limiter(b"another secret").bucket("s", "a", rate) != one.bucket("s", "a", rate)
    # A lone surrogate (never valid UTF-8) is still a value to count, not an error.
    assert one.bucket("s", "\ud800", rate) != one.bucket("s", "\ud801", rate)


def test_the_keying_secret_is_the_shared_signing_key(tmp_path: Path) -> None:
    hs = make_settings(tmp_path / "a", jwt_secret="x" * 16 + "-shared-secret-0123456789")
    assert keying_secret(hs) == b"x" * 16 + b"-shared-secret-0123456789"
    pem = tmp_path / "signing.pem"
    pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\n...\n")
    eddsa = hs.model_copy(update={"auth": hs.auth.model_copy(
        update={"algorithm": "EdDSA", "private_key_file": pem})})
    assert keying_secret(eddsa) == pem.read_bytes()
    missing = eddsa.model_copy(update={"auth": eddsa.auth.model_copy(
        update={"private_key_file": tmp_path / "missing.pem"})})
    with pytest.raises(ConfigurationError, match="private key file"):
        keying_secret(missing)
    unset = hs.model_copy(update={"jwt_secret": None})
    with pytest.raises(ConfigurationError):
        keying_secret(unset)


def test_a_refusal_waits_whole_seconds() -> None:
    assert wait_seconds(Verdict(1.0, (), None)) is None
    assert wait_seconds(Verdict(1.0, (), 0.0001)) == 1
    assert wait_seconds(Verdict(1.0, (), 2.5)) == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.builds(Rate, limit=st.integers(min_value=1, max_value=6),
                   window=st.floats(min_value=1.0, max_value=120.0)),
    steps=st.lists(st.tuples(st.sampled_from("ab"), st.floats(min_value=0.0, max_value=40.0)),
                   min_size=1, max_size=30),
)
def test_the_shared_buckets_decide_as_the_gcra_rule(
    database_url: str, rate: Rate, steps: list[tuple[str, float]]
) -> None:
    """Two keys hit in turn at arbitrary times: the store admits and refuses exactly what
    the pure rule does, with the same wait."""
    asyncio.run(_compare(database_url, rate, steps))


async def _compare(url: str, rate: Rate, steps: list[tuple[str, float]]) -> None:
    db = Database(url)
    clock = Clock()
    limiter = RateLimiter(SqlRateLimits(db), SECRET, clock=clock)
    scope = f"model-{next(_examples)}"  # fresh buckets for each example
    model: dict[str, float | None] = {"a": None, "b": None}
    try:
        for name, gap in steps:
            clock.now += gap
            verdict = await limiter.hit(limiter.bucket(scope, name, rate))
            tat = model[name]
            expected = admit(tat, clock.now, rate)
            if expected is None:
                assert tat is not None and not verdict.admitted
                assert verdict.retry_after == pytest.approx(retry_after(tat, clock.now, rate),
                                                            abs=1e-6)
            else:
                assert verdict.admitted and verdict.tats[0] == pytest.approx(expected, abs=1e-6)
                model[name] = expected
    finally:
        await db.dispose()
