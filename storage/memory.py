"""In-process LRU tier under a byte budget."""

import threading
from collections import OrderedDict
from typing import Iterable, Iterator

from chunkcache.errors import ConfigError, StorageError
from chunkcache.storage.tier import TierStats, check_key, check_value


class MemoryTier:
    """LRU of values in an OrderedDict (oldest first), evicting until value bytes <= max_bytes.

    A value larger than the whole budget is not stored (counted in `rejected`). Thread-safe.
    """

    def __init__(self, max_bytes: int, name: str = "memory") -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ConfigError(f"MemoryTier max_bytes must be an int >= 0, got {max_bytes!r}")
        self.name = name
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._puts = self._evictions = self._rejected = 0
        self._closed = False
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        check_key(key)
        with self._lock:
            self._check_open()
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: bytes, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        batch = [(check_key(k), check_value(v)) for k, v in items]
        with self._lock:
            self._check_open()
            for key, value in batch:
                self._put_locked(key, value)

    def contains(self, key: bytes) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            return key in self._entries

    def delete(self, key: bytes) -> bool:
        check_key(key)
        with self._lock:
            self._check_open()
            value = self._entries.pop(key, None)
            if value is None:
                return False
            self._bytes -= len(value)
            return True

    def keys(self) -> Iterator[bytes]:
        with self._lock:
            self._check_open()
            snapshot = list(self._entries)
        return iter(snapshot)

    def stats(self) -> TierStats:
        with self._lock:
            self._check_open()
            return TierStats(
                name=self.name, hits=self._hits, misses=self._misses, puts=self._puts,
                entries=len(self._entries), bytes=self._bytes, max_bytes=self.max_bytes,
                evictions=self._evictions, rejected=self._rejected,
            )

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._closed = True

    def _put_locked(self, key: bytes, value: bytes) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        if len(value) > self.max_bytes:
            self._rejected += 1
            return
        self._entries[key] = value
        self._bytes += len(value)
        self._puts += 1
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted)
            self._evictions += 1

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"tier {self.name!r} is closed")
