"""KVStore: the facade's view. Tensors in and out, corrupt entries become misses."""

import struct

import lmdb
import pytest
import torch

from chunkcache.errors import ConfigError
from chunkcache.storage import CodecSpec, KVStore, StoreConfig, StoreStats, chunk_key, encode_kv
from chunkcache.storage.lmdb_tier import ACCESS_DB, DATA_DB


def key(i: int) -> bytes:
    return chunk_key("model", "prefix", [i, i + 1, i + 2], "fp16+zstd3")


@pytest.fixture
def store(tmp_path):
    s = KVStore(StoreConfig(str(tmp_path / "kv"), codec="fp16", zstd_level=3))
    yield s
    s.close()


def test_put_get_round_trip(store, kv_factory):
    kv = kv_factory(tokens=40)
    store.put(key(1), kv)
    out = store.get(key(1))
    assert out.dtype == torch.float32 and out.shape == kv.shape
    torch.testing.assert_close(out, kv.half().float(), rtol=0, atol=0)
    assert store.contains(key(1))
    assert store.get(key(2)) is None


def test_put_many_delete_and_stats(store, kv_factory):
    store.put_many((key(i), kv_factory(tokens=10 + i, layers=2, seed=i)) for i in range(5))
    assert all(store.contains(key(i)) for i in range(5))
    assert store.delete(key(0)) is True and store.delete(key(0)) is False
    store.get(key(1))
    store.get(key(0))
    s = store.stats()
    assert isinstance(s, StoreStats)
    assert (s.hits, s.misses, s.corrupt, s.entries) == (1, 1, 0, 4)
    assert [t.name for t in s.tiers] == ["memory", "lmdb"]
    assert s.bytes == s.tiers[1].bytes > 0
    assert s.get_ms.count == 2 and s.get_ms.p95_ms >= s.get_ms.p50_ms > 0
    assert s.encode_ms.count == 5 and s.decode_ms.count == 1


def test_disk_entries_survive_reopen_and_are_promoted_to_memory(tmp_path, kv_factory):
    cfg = StoreConfig(str(tmp_path / "kv"), codec="int8", zstd_level=None)
    kv = kv_factory(tokens=32)
    with KVStore(cfg) as s:
        s.put(key(1), kv)
    with KVStore(cfg) as s:
        out = s.get(key(1))
        assert ((out - kv).norm() / kv.norm()) < 0.02
        mem, disk = s.stats().tiers
        assert (mem.misses, disk.hits, mem.entries) == (1, 1, 1)
        s.get(key(1))
        assert s.stats().tiers[0].hits == 1


def test_memory_only_store(kv_factory):
    with KVStore(StoreConfig(None, codec="int4", memory_bytes=2**22)) as s:
        kv = kv_factory(tokens=16)
        s.put(key(1), kv)
        assert s.get(key(1)).shape == kv.shape
        assert [t.name for t in s.stats().tiers] == ["memory"]


def test_disk_budget_evicts(tmp_path, kv_factory):
    kv = kv_factory(tokens=16, layers=4)
    size = len(encode_kv(kv, CodecSpec("fp16")))
    cfg = StoreConfig(str(tmp_path / "kv"), zstd_level=None, memory_bytes=0, disk_bytes=5 * size)
    with KVStore(cfg) as s:
        for i in range(8):
            s.put(key(i), kv)
        st = s.stats()
        assert st.bytes <= 5 * size and st.evictions >= 3 and st.entries <= 5
        assert s.get(key(7)) is not None and s.get(key(0)) is None


# -- corrupt entries, changed directly in LMDB ------------------------------------------------

def flip_byte(blob: bytes) -> bytes:
    b = bytearray(blob)
    b[len(b) // 2] ^= 0x40
    return bytes(b)


def change_version(blob: bytes) -> bytes:
    return blob[:4] + struct.pack("<H", 99) + blob[6:]


@pytest.mark.parametrize("damage", [flip_byte, lambda b: b[: len(b) - 10], change_version, lambda b: b + b"junk"],
                         ids=["flip", "truncate", "version", "over-long"])
def test_corrupt_entry_is_deleted_counted_and_missed(tmp_path, kv_factory, damage):
    path = str(tmp_path / "kv")
    cfg = StoreConfig(path, codec="int8", zstd_level=3)
    with KVStore(cfg) as s:
        s.put(key(1), kv_factory(tokens=20, layers=2))
        s.put(key(2), kv_factory(tokens=20, layers=2, seed=1))
    env = lmdb.open(path, max_dbs=3)
    with env.begin(write=True) as txn:
        data = env.open_db(DATA_DB, txn=txn, create=False)
        txn.put(key(1), damage(txn.get(key(1), db=data)), db=data)
    env.close()

    with KVStore(cfg) as s:
        assert s.get(key(1)) is None
        assert not s.contains(key(1))
        assert s.get(key(2)) is not None  # the neighbour is fine
        st = s.stats()
        assert (st.corrupt, st.misses, st.hits, st.entries) == (1, 1, 1, 1)
        assert s.get(key(1)) is None and s.stats().corrupt == 1  # gone: now a plain miss
    env = lmdb.open(path, max_dbs=3)
    with env.begin() as txn:
        assert txn.get(key(1), db=env.open_db(DATA_DB, txn=txn, create=False)) is None
        assert txn.get(key(1), db=env.open_db(ACCESS_DB, txn=txn, create=False)) is None
    env.close()


def test_corrupt_entry_in_memory_tier_is_deleted_everywhere(store, kv_factory):
    store.put(key(1), kv_factory(tokens=8, layers=2))
    mem = store._tiers.tiers[0]
    mem.put(key(1), flip_byte(mem.get(key(1))))
    assert store.get(key(1)) is None
    assert not store.contains(key(1)) and store.stats().corrupt == 1


# -- config -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(path=None, codec="int3"), "codec"),
        (dict(path=None, zstd_level=0), "zstd_level"),
        (dict(path=None, memory_bytes=-1), "memory_bytes"),
        (dict(path=None, memory_bytes=0), "nowhere"),
        (dict(path=None, disk_bytes=10), "needs a path"),
        (dict(path="x", disk_bytes=0), "disk_bytes"),
        (dict(path="x", map_size=100), "map_size"),
        (dict(path="x", eviction="mru"), "eviction"),
        (dict(path=""), "path"),
        (dict(path=None, memory_bytes=True), "memory_bytes"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        StoreConfig(**kwargs)


def test_config_accepts_pathlike_and_is_frozen(tmp_path):
    cfg = StoreConfig(tmp_path / "kv")
    assert cfg.path == str(tmp_path / "kv")
    assert cfg.codec_spec.tag == "fp16"  # CacheConfig's defaults (names.py): no zstd
    with pytest.raises(Exception):
        cfg.codec = "int8"
