"""KVStore: chunk KV tensors in, chunk KV tensors out, over a memory tier, an LMDB tier and,
optionally, a Redis/Valkey tier shared by several processes (`storage/redis_tier.py`).

Both tiers hold encoded blobs (`storage/codec.py`), so the memory budget buys as many chunks
as the codec allows and every get verifies the checksum. A corrupt entry is deleted from
every tier, counted, and reported as a miss: the caller recomputes it.

The store is an optimisation, so a caller that can go on without it writes with `offer_many`:
a failed write (a full disk, an I/O error) is logged, counted in `StoreStats.write_failures`
and returned (False), never raised. `put_many` (warm-up, where storing is the point) raises
StorageError naming the cause. Deletes are best-effort too:
entries are content-addressed, so one left behind is never served for other content.
"""

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Iterable

import torch

from chunkcache.errors import ConfigError, CorruptEntryError, StorageError, check_int, is_no_space
from chunkcache.names import DEFAULT_CODEC, DEFAULT_MEMORY_BYTES, DEFAULT_ZSTD_LEVEL
from chunkcache.storage.codec import CODECS, CodecSpec, decode_kv, decode_payload, encode_kv
from chunkcache.storage.eviction import POLICIES
from chunkcache.storage.header import read_header
from chunkcache.storage.latency import LatencyRecorder
from chunkcache.storage.lmdb_tier import LmdbTier
from chunkcache.storage.memory import MemoryTier
from chunkcache.storage.payload import Payload
from chunkcache.storage.redis_config import RedisConfig
from chunkcache.storage.tier import Tier
from chunkcache.storage.tiered import TieredStore
from chunkcache.types import StoreStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreConfig:
    """path: LMDB directory, None = memory only. disk_bytes: disk eviction budget, None =
    unbounded. map_size: initial LMDB map, grown when full. eviction applies to disk; the
    memory tier is always LRU. memory_bytes=0 disables the memory tier. redis: a shared tier
    below the local ones (a hit there is promoted into them, writes go through to it), None = none."""

    path: str | None
    codec: str = DEFAULT_CODEC
    zstd_level: int | None = DEFAULT_ZSTD_LEVEL
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    disk_bytes: int | None = None
    map_size: int = 1 * 2**30
    eviction: str = "lru"
    redis: RedisConfig | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
                raise ConfigError(f"StoreConfig.path must be a directory path or None, got {self.path!r}")
            object.__setattr__(self, "path", os.fspath(self.path))
        if self.codec not in CODECS:
            raise ConfigError(f"StoreConfig.codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        CodecSpec(self.codec, self.zstd_level)  # validates zstd_level
        check_int("StoreConfig.memory_bytes", self.memory_bytes, 0)
        check_int("StoreConfig.map_size", self.map_size, 32 * 1024)
        if self.disk_bytes is not None:
            check_int("StoreConfig.disk_bytes", self.disk_bytes, 1)
        if self.eviction not in POLICIES:
            raise ConfigError(f"StoreConfig.eviction must be one of {POLICIES}, got {self.eviction!r}")
        if self.path is None and self.memory_bytes == 0:
            raise ConfigError("StoreConfig has path=None and memory_bytes=0: nowhere to store entries")
        if self.path is None and self.disk_bytes is not None:
            raise ConfigError(f"StoreConfig.disk_bytes={self.disk_bytes} needs a path; path is None")
        if self.redis is not None and not isinstance(self.redis, RedisConfig):
            raise ConfigError(f"StoreConfig.redis must be a RedisConfig or None, got {type(self.redis).__name__}")

    @property
    def codec_spec(self) -> CodecSpec:
        return CodecSpec(self.codec, self.zstd_level)


class KVStore:
    """Stores kv: [layers, 2, kv_heads, tokens, head_dim] under 32-byte keys (`chunk_key`)."""

    def __init__(self, config: StoreConfig, tiers: Sequence[Tier] | None = None) -> None:
        """tiers: fastest first; None builds them from config (memory, then LMDB at config.path,
        then Redis at config.redis.url)."""
        self.config = config
        self.codec = config.codec_spec
        if tiers is None:
            tiers = []
            if config.memory_bytes > 0:
                tiers.append(MemoryTier(config.memory_bytes))
            if config.path is not None:
                tiers.append(LmdbTier(config.path, map_size=config.map_size, max_bytes=config.disk_bytes, eviction=config.eviction))
            if config.redis is not None:
                from chunkcache.storage.redis_tier import RedisTier

                tiers.append(RedisTier(config.redis))
        self._tiers = TieredStore(tiers)
        self._lock = threading.Lock()
        self._hits = self._misses = self._corrupt = 0
        self._write_failures = self._no_space_failures = 0
        self._get_ms = LatencyRecorder()
        self._encode_ms = LatencyRecorder()
        self._decode_ms = LatencyRecorder()

    def get(self, key: bytes) -> torch.Tensor | None:
        """-> kv [L, 2, H, T, d] float32, or None on a miss or a corrupt entry."""
        return self._fetch(key, decode_kv)

    def get_payload(self, key: bytes) -> Payload | None:
        """-> the entry's stored tensors undecoded (int8 / packed int4 / fp16 / bf16 views and
        fp16 scales, see `Payload`), or None on a miss or a corrupt entry. The checksum is
        verified and a corrupt entry deleted and counted, exactly as by `get`."""
        return self._fetch(key, decode_payload)

    def _fetch(self, key: bytes, decode):
        start = time.perf_counter()
        blob = self._tiers.get(key)
        out = None
        corrupt = False
        if blob is not None:
            t0 = time.perf_counter()
            try:
                out = decode(blob)
                self._decode_ms.record((time.perf_counter() - t0) * 1e3)
            except CorruptEntryError as e:
                corrupt = True
                log.warning("deleting corrupt KV entry %s: %s", key.hex(), e)
                self.delete(key)
        with self._lock:
            self._corrupt += corrupt
            if out is None:
                self._misses += 1
            else:
                self._hits += 1
        self._get_ms.record((time.perf_counter() - start) * 1e3)
        return out

    def put(self, key: bytes, kv: torch.Tensor) -> None:
        self.put_many([(key, kv)])

    def put_many(self, items: Iterable[tuple[bytes, torch.Tensor]], codec: CodecSpec | None = None,
                 rotated: bool = False) -> None:
        """Encode every item, then write them in one LMDB transaction; StorageError if it fails.

        codec: this write's codec instead of the store's (chain entries are kept lossless);
        rotated: the keys are rotated at their prompt positions (header rope flag 1)."""
        batch = [(key, self._encode(kv, codec or self.codec, rotated)) for key, kv in items]
        try:
            self._tiers.put_many(batch)
        except OSError as e:  # a tier that writes files directly
            raise StorageError(f"KV store write of {len(batch)} entries failed: {e.strerror or e}") from e

    def offer_many(self, items: Iterable[tuple[bytes, torch.Tensor]], codec: CodecSpec | None = None,
                   rotated: bool = False) -> bool:
        """put_many that never raises a write failure: True if stored; else logged, counted, False.

        All items are written in one transaction, so they are stored together or not at all.
        """
        batch = list(items)
        try:
            self.put_many(batch, codec, rotated)
            return True
        except StorageError as e:
            self._write_failed(e, f"not caching {len(batch)} computed chunk(s)")
            return False

    def contains(self, key: bytes) -> bool:
        return self._tiers.contains(key)

    def verify(self, key: bytes) -> bool:
        """True if the entry exists and its header and crc32 check out; a corrupt entry is
        deleted and counted (as `get` would), so the caller recomputes it. No tensor is decoded."""
        blob = self._tiers.get(key)
        if blob is None:
            return False
        try:
            read_header(blob)
            return True
        except CorruptEntryError as e:
            log.warning("deleting corrupt KV entry %s: %s", key.hex(), e)
            with self._lock:
                self._corrupt += 1
            self.delete(key)
            return False

    def delete(self, key: bytes) -> bool:
        """True if an entry was removed; a failed delete is logged and counted, the entry stays."""
        try:
            return self._tiers.delete(key)
        except (StorageError, OSError) as e:
            self._write_failed(e, "leaving the KV entry in place")
            return False

    def _write_failed(self, error: BaseException, consequence: str) -> None:
        log.warning("KV store write failed, %s: %s", consequence, error)
        with self._lock:
            self._write_failures += 1
            self._no_space_failures += is_no_space(error)

    def stats(self) -> StoreStats:
        per_tier = self._tiers.tier_stats()
        with self._lock:
            hits, misses, corrupt = self._hits, self._misses, self._corrupt
            write_failures, no_space_failures = self._write_failures, self._no_space_failures
        return StoreStats(
            tiers=per_tier, hits=hits, misses=misses, corrupt=corrupt,
            entries=per_tier[-1].entries, bytes=per_tier[-1].bytes,
            evictions=sum(s.evictions for s in per_tier),
            get_ms=self._get_ms.summary(), encode_ms=self._encode_ms.summary(), decode_ms=self._decode_ms.summary(),
            write_failures=write_failures, no_space_failures=no_space_failures,
        )

    def close(self) -> None:
        self._tiers.close()

    def __enter__(self) -> "KVStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _encode(self, kv: torch.Tensor, codec: CodecSpec, rotated: bool) -> bytes:
        t0 = time.perf_counter()
        blob = encode_kv(kv, codec, rotated)
        self._encode_ms.record((time.perf_counter() - t0) * 1e3)
        return blob
