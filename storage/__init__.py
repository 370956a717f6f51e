"""chunkcache.storage: the tiered store of encoded chunk KV. Moves bytes and tensors only."""

from chunkcache.storage.codec import CODECS, CodecSpec, decode_kv, decode_payload, encode_kv
from chunkcache.storage.header import FORMAT_VERSION, KVHeader, read_header
from chunkcache.storage.keys import chain_keys, chunk_key
from chunkcache.storage.latency import LatencySummary
from chunkcache.storage.lmdb_tier import LmdbTier
from chunkcache.storage.memory import MemoryTier
from chunkcache.storage.payload import Payload
from chunkcache.storage.redis_config import RedisConfig
from chunkcache.storage.store import KVStore, StoreConfig, StoreStats
from chunkcache.storage.tier import Tier, TierStats
from chunkcache.storage.tiered import TieredStore

__all__ = [
    "CODECS",
    "FORMAT_VERSION",
    "CodecSpec",
    "KVHeader",
    "KVStore",
    "LatencySummary",
    "LmdbTier",
    "MemoryTier",
    "Payload",
    "RedisConfig",
    "StoreConfig",
    "StoreStats",
    "Tier",
    "TierStats",
    "TieredStore",
    "chain_keys",
    "chunk_key",
    "decode_kv",
    "decode_payload",
    "encode_kv",
    "read_header",
]
