"""The one tier interface that the memory, LMDB, Redis and tiered stores implement.

A tier maps bytes keys to bytes values. It knows nothing about tensors or codecs; a miss is
`None`, never an error. Byte budgets and `TierStats.bytes` count value bytes only.
"""

from typing import Iterable, Iterator, Protocol

from chunkcache.errors import ConfigError
from chunkcache.types import TierStats

MAX_KEY_SIZE = 511  # LMDB's default key limit; chunk keys are 32 bytes


class Tier(Protocol):
    """Key-value tier. Implementations are thread-safe; after close() every call raises StorageError."""

    name: str

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None: ...

    def contains(self, key: bytes) -> bool: ...

    def delete(self, key: bytes) -> bool: ...

    def keys(self) -> Iterator[bytes]: ...

    def stats(self) -> TierStats: ...

    def close(self) -> None: ...


def check_key(key: bytes) -> bytes:
    """The key itself, or ConfigError if it is not 1..511 bytes."""
    if not isinstance(key, bytes):
        raise ConfigError(f"key must be bytes, got {type(key).__name__}")
    if not 0 < len(key) <= MAX_KEY_SIZE:
        raise ConfigError(f"key must be 1..{MAX_KEY_SIZE} bytes, got {len(key)}")
    return key


def check_value(value: bytes) -> bytes:
    """The value as bytes (bytearray and memoryview are copied), or ConfigError."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise ConfigError(f"value must be bytes, got {type(value).__name__}")
