"""A least-recently-used cache bounded in bytes, with an optional time to live.

Caches that hold vectors (query embeddings) or results (keywords, searches) are bounded by
what they cost in memory, not by how many entries they hold: one entry can be a 1.5 kB vector
or a 200 kB result list. Each cache registers with the memory manager, which expires and
clears them and reports their figures.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

__all__ = ["ENTRY_OVERHEAD_BYTES", "ByteLRUCache", "CacheStats", "sizeof"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Bookkeeping per entry (ordered-dict node, the entry record), counted against the budget.
ENTRY_OVERHEAD_BYTES = 160


def sizeof(value: Any) -> int:
    """Approximate bytes held by ``value``.

    Arrays (anything with an integer ``nbytes``, such as numpy arrays) count their buffer, so
    store owned arrays, not views of larger ones. Strings, bytes and numbers use
    ``sys.getsizeof``; lists, tuples, sets and dicts add up their items.
    """
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes + 112  # the array header
    if isinstance(value, list | tuple | set | frozenset):
        return sys.getsizeof(value) + sum(sizeof(item) for item in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k) + sizeof(v) for k, v in value.items())
    return sys.getsizeof(value)


@dataclass(frozen=True, slots=True)
class CacheStats:
    name: str
    entries: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int
    expirations: int
    ttl_seconds: float | None

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None


@dataclass(slots=True)
class _Item(Generic[V]):
    value: V
    size: int
    expires_at: float | None


class ByteLRUCache(Generic[K, V]):
    """LRU cache holding at most ``max_bytes`` (0 disables it). Safe to use from threads.

    An entry costs ``sizeof(key) + size(value) + ENTRY_OVERHEAD_BYTES`` (see :meth:`measure`);
    one larger than the whole budget is not stored. With ``ttl`` (seconds, measured with
    ``clock``) entries expire: :meth:`get` ignores and drops them, :meth:`expire` sweeps them.
    """

    def __init__(
        self,
        name: str,
        max_bytes: int,
        *,
        ttl: float | None = None,
        size: Callable[[V], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.name = name
        self.max_bytes = max_bytes
        self.ttl = ttl if ttl else None
        self._size: Callable[[V], int] = size or sizeof
        self._clock = clock
        self._items: OrderedDict[K, _Item[V]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0

    def measure(self, key: K, value: V) -> int:
        """Bytes an entry counts against the budget."""
        return sizeof(key) + self._size(value) + ENTRY_OVERHEAD_BYTES

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether a live entry exists; does not count as a use."""
        with self._lock:
            item = self._items.get(cast("K", key))
            return item is not None and not self._expired(item, self._clock())

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._items)

    def get(self, key: K) -> V | None:
        """The value, marked most recently used; ``None`` when absent or expired."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and self._expired(item, self._clock()):
                self._drop(key, item)
                self._expirations += 1
                item = None
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item.value

    def put(self, key: K, value: V) -> bool:
        """Store ``value``, evicting least recently used entries; False if it cannot fit."""
        if self.max_bytes == 0:
            return False
        size = self.measure(key, value)
        with self._lock:
            old = self._items.get(key)
            if old is not None:
                self._drop(key, old)
            if size > self.max_bytes:
                return False
            while self._bytes + size > self.max_bytes:
                oldest_key, oldest = next(iter(self._items.items()))
                self._drop(oldest_key, oldest)
                self._evictions += 1
            expires_at = self._clock() + self.ttl if self.ttl is not None else None
            self._items[key] = _Item(value, size, expires_at)
            self._bytes += size
            return True

    def pop(self, key: K) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._drop(key, item)
            return item.value

    def expire(self) -> int:
        """Remove expired entries; return the bytes they held."""
        if self.ttl is None:
            return 0
        with self._lock:
            now = self._clock()
            freed = 0
            # Entries are stored with the same TTL, but a get() reorders them, so scan all.
            for key, item in list(self._items.items()):
                if self._expired(item, now):
                    self._drop(key, item)
                    self._expirations += 1
                    freed += item.size
            return freed

    def clear(self) -> int:
        """Remove every entry; return the bytes they held."""
        with self._lock:
            freed = self._bytes
            self._items.clear()
            self._bytes = 0
            return freed

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                name=self.name,
                entries=len(self._items),
                bytes=self._bytes,
                max_bytes=self.max_bytes,
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expirations=self._expirations,
                ttl_seconds=self.ttl,
            )

    def _expired(self, item: _Item[V], now: float) -> bool:
        return item.expires_at is not None and now >= item.expires_at

    def _drop(self, key: K, item: _Item[V]) -> None:
        del self._items[key]
        self._bytes -= item.size
