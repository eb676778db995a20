"""ByteLRUCache: the byte budget, LRU order and TTL, including Hypothesis properties."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.ops.cache import ENTRY_OVERHEAD_BYTES, ByteLRUCache, sizeof
from tests.fake_clock import FakeClock


def test_sizeof_counts_array_buffers_and_containers() -> None:
    vector = np.zeros(384, dtype=np.float32)
    assert sizeof(vector) >= 384 * 4
    assert sizeof([vector, vector]) >= 2 * 384 * 4
    assert sizeof("x" * 1000) >= 1000
    assert sizeof(b"x" * 1000) >= 1000
    assert sizeof({"a": "b" * 500}) >= 500


def test_lru_eviction_order() -> None:
    cache: ByteLRUCache[str, int] = ByteLRUCache("t", 1000, size=lambda v: v)
    per_entry = cache.measure("a", 0)
    budget = 3 * per_entry
    cache = ByteLRUCache("t", budget, size=lambda v: v)
    for key in "abc":
        assert cache.put(key, 0)
    assert cache.get("a") == 0  # "a" is now the most recently used
    assert cache.put("d", 0)
    assert cache.keys() == ["c", "a", "d"]  # "b" was the least recently used
    assert cache.stats().evictions == 1
    assert cache.get("b") is None


def test_replacing_a_key_updates_its_size() -> None:
    cache: ByteLRUCache[str, int] = ByteLRUCache("t", 10_000, size=lambda v: v)
    cache.put("a", 100)
    cache.put("a", 300)
    assert len(cache) == 1
    assert cache.bytes == cache.measure("a", 300)


def test_an_item_larger_than_the_budget_is_not_stored() -> None:
    cache: ByteLRUCache[str, int] = ByteLRUCache("t", 1000, size=lambda v: v)
    assert cache.put("small", 10)
    assert not cache.put("huge", 5000)
    assert "huge" not in cache
    assert "small" in cache  # nothing was evicted for an item that cannot fit


def test_zero_budget_disables_the_cache() -> None:
    cache: ByteLRUCache[str, str] = ByteLRUCache("t", 0)
    assert not cache.put("a", "b")
    assert cache.get("a") is None
    assert cache.stats().entries == 0


def test_ttl_expiry_with_an_injected_clock() -> None:
    clock = FakeClock(now=0.0)
    cache: ByteLRUCache[str, str] = ByteLRUCache("t", 100_000, ttl=60, clock=clock)
    cache.put("old", "x" * 100)
    clock.now = 30
    cache.put("new", "y" * 100)
    assert cache.get("old") == "x" * 100

    clock.now = 61
    assert "old" not in cache
    assert "new" in cache
    freed = cache.expire()
    assert freed == cache.measure("old", "x" * 100)
    assert cache.keys() == ["new"]
    assert cache.stats().expirations == 1

    clock.now = 95
    assert cache.get("new") is None  # expired on read too
    assert cache.bytes == 0


def test_stats_and_clear() -> None:
    cache: ByteLRUCache[str, bytes] = ByteLRUCache("queries", 100_000)
    cache.put("a", b"1" * 100)
    cache.get("a")
    cache.get("missing")
    stats = cache.stats()
    assert (stats.name, stats.entries, stats.hits, stats.misses) == ("queries", 1, 1, 1)
    assert stats.hit_rate == 0.5
    assert stats.bytes > 100
    assert cache.clear() == stats.bytes
    assert cache.stats().bytes == 0 and len(cache) == 0


def test_thread_safety_keeps_the_accounting_exact() -> None:
    cache: ByteLRUCache[int, int] = ByteLRUCache("t", 50 * ENTRY_OVERHEAD_BYTES, size=lambda v: v)

    def worker(offset: int) -> None:
        for i in range(2000):
            cache.put((offset + i) % 300, i % 50)
            cache.get((offset * 7 + i) % 300)

    threads = [threading.Thread(target=worker, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.bytes <= cache.max_bytes
    stats = cache.stats()
    assert stats.hits + stats.misses == 4 * 2000
    entries = {key: cache.get(key) for key in cache.keys()}
    assert cache.bytes == sum(
        cache.measure(key, value) for key, value in entries.items() if value is not None
    )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 20), st.integers(0, 400)),
        st.tuples(st.just("get"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 30)),
        st.tuples(st.just("expire"), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=operations, max_bytes=st.integers(0, 2000), ttl=st.sampled_from([None, 50.0]))
def test_matches_a_reference_lru_and_never_exceeds_its_budget(
    ops: list[tuple[str, int, int]], max_bytes: int, ttl: float | None
) -> None:
    clock = FakeClock(now=0.0)
    cache: ByteLRUCache[int, int] = ByteLRUCache(
        "t", max_bytes, ttl=ttl, size=lambda v: v, clock=clock
    )
    # The reference: key -> (value, size, expires_at), oldest first.
    model: OrderedDict[int, tuple[int, int, float | None]] = OrderedDict()

    def live(key: int) -> bool:
        expires = model[key][2]
        return expires is None or clock.now < expires

    for op, key, arg in ops:
        if op == "put":
            size = cache.measure(key, arg)
            stored = cache.put(key, arg)
            model.pop(key, None)
            if 0 < max_bytes and size <= max_bytes:
                while sum(item[1] for item in model.values()) + size > max_bytes:
                    model.popitem(last=False)
                model[key] = (arg, size, clock.now + ttl if ttl else None)
                assert stored
            else:
                assert not stored
        elif op == "get":
            want = model[key][0] if key in model and live(key) else None
            if key in model and not live(key):
                del model[key]
            elif key in model:
                model.move_to_end(key)
            assert cache.get(key) == want
        elif op == "tick":
            clock.now += arg
        else:
            freed = cache.expire()
            dead = [k for k in model if not live(k)]
            assert freed == sum(model[k][1] for k in dead)
            for k in dead:
                del model[k]
        assert cache.bytes <= max_bytes
        assert cache.keys() == list(model)
        assert cache.bytes == sum(item[1] for item in model.values())


@pytest.mark.parametrize("value", [np.ones((4, 384), dtype=np.float32), "text", [1.0, 2.0]])
def test_default_sizes_are_used_when_no_size_function_is_given(value: object) -> None:
    cache: ByteLRUCache[str, object] = ByteLRUCache("t", 1_000_000)
    cache.put("k", value)
    assert cache.bytes == sizeof("k") + sizeof(value) + ENTRY_OVERHEAD_BYTES
