"""Tiers stacked fastest first, e.g. [MemoryTier, LmdbTier]: read-through, write-through."""

import threading
from typing import Iterable, Iterator, Sequence

from chunkcache.errors import ConfigError
from chunkcache.storage.tier import Tier, TierStats


class TieredStore:
    """A Tier over tiers ordered fastest first.

    get asks each tier in order; a hit in a slower tier is promoted into every faster one.
    put/put_many write to every tier, slowest first, so what a fast tier holds is durable
    first. delete removes from all. stats() aggregates: hits/misses are this store's lookups,
    entries/bytes are the slowest (backing) tier's, evictions/rejected are summed; per-tier
    numbers come from tier_stats(). A hit served by memory does not refresh the disk tier's
    access record, so disk eviction order follows disk reads only.
    """

    def __init__(self, tiers: Sequence[Tier], name: str = "tiered") -> None:
        if not tiers:
            raise ConfigError("TieredStore needs at least one tier, got none")
        self.name = name
        self.tiers = tuple(tiers)
        self._lock = threading.Lock()
        self._hits = self._misses = self._puts = 0

    def get(self, key: bytes) -> bytes | None:
        for i, tier in enumerate(self.tiers):
            value = tier.get(key)
            if value is not None:
                for faster in self.tiers[:i]:
                    faster.put(key, value)
                with self._lock:
                    self._hits += 1
                return value
        with self._lock:
            self._misses += 1
        return None

    def put(self, key: bytes, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        batch = list(items)
        for tier in reversed(self.tiers):
            tier.put_many(batch)
        with self._lock:
            self._puts += len(batch)

    def contains(self, key: bytes) -> bool:
        return any(tier.contains(key) for tier in self.tiers)

    def delete(self, key: bytes) -> bool:
        found = [tier.delete(key) for tier in self.tiers]  # a list, not any(): delete everywhere
        return any(found)

    def keys(self) -> Iterator[bytes]:
        """Every key once, slowest tier first."""
        iterators = [tier.keys() for tier in reversed(self.tiers)]  # raise now if closed
        return _unique(iterators)

    def tier_stats(self) -> tuple[TierStats, ...]:
        return tuple(tier.stats() for tier in self.tiers)

    def stats(self) -> TierStats:
        per_tier = self.tier_stats()
        backing = per_tier[-1]
        with self._lock:
            return TierStats(
                name=self.name, hits=self._hits, misses=self._misses, puts=self._puts,
                entries=backing.entries, bytes=backing.bytes, max_bytes=backing.max_bytes,
                evictions=sum(s.evictions for s in per_tier), rejected=sum(s.rejected for s in per_tier),
            )

    def close(self) -> None:
        errors = []
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as e:  # close the others before reporting
                errors.append(e)
        if errors:
            raise errors[0]


def _unique(iterators: list[Iterator[bytes]]) -> Iterator[bytes]:
    seen: set[bytes] = set()
    for it in iterators:
        for key in it:
            if key not in seen:
                seen.add(key)
                yield key
