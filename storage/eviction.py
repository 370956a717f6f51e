"""Access records and victim choice for a byte budget: plain Python, no I/O.

The LMDB tier keeps one AccessRecord per key (in its own sub-database) and asks
`choose_victims` which keys to delete when a write takes it over budget.
"""

import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from chunkcache.names import EVICTIONS as POLICIES


@dataclass(frozen=True)
class AccessRecord:
    """last_access_ns: wall clock of the last get or put; count: 1 for the put + one per get."""

    last_access_ns: int
    count: int
    size: int  # value bytes

    _STRUCT = struct.Struct("<qQQ")

    def pack(self) -> bytes:
        return self._STRUCT.pack(self.last_access_ns, self.count, self.size)

    @classmethod
    def unpack(cls, raw: bytes) -> "AccessRecord":
        return cls(*cls._STRUCT.unpack(raw))


def choose_victims(
    records: Iterable[tuple[bytes, AccessRecord]],
    bytes_to_free: int,
    policy: str,
    protected: Sequence[bytes] = (),
) -> list[bytes]:
    """Keys to delete, in order, whose sizes add up to at least `bytes_to_free` (or all of them).

    lru: least recently accessed first; lfu: fewest accesses first, ties by least recent.
    `protected` keys (the batch being written) are taken last, in the order given, so a new
    entry is never evicted to make room for an old one.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown eviction policy {policy!r}; choose one of {POLICIES}")
    if bytes_to_free <= 0:
        return []
    protected_set = set(protected)
    sizes: dict[bytes, int] = {}
    candidates = []
    for key, rec in records:
        sizes[key] = rec.size
        if key not in protected_set:
            rank = (rec.last_access_ns, rec.count) if policy == "lru" else (rec.count, rec.last_access_ns)
            candidates.append((rank, key))
    candidates.sort()
    order = [key for _, key in candidates] + [key for key in protected if key in sizes]
    victims, freed = [], 0
    for key in order:
        if freed >= bytes_to_free:
            break
        victims.append(key)
        freed += sizes[key]
    return victims
