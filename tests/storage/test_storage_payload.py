"""KVStore.get_payload: the stored codec tensors undecoded, checked like `get`."""

import lmdb
import pytest
import torch

from chunkcache.storage import CODECS, KVStore, Payload, StoreConfig, chunk_key, decode_kv, decode_payload, encode_kv, CodecSpec
from chunkcache.storage.lmdb_tier import DATA_DB

STORED_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.int8, "int4": torch.uint8, "fp32": torch.float32,
                 **{name: torch.uint8 for name in ("kvq4", "kvq3", "ans20v10", "ans16", "ans8v4", "st4", "st6")}}  # grouped: codes


def key(i: int) -> bytes:
    return chunk_key("model", "prefix", [i], "payload")


@pytest.mark.parametrize("zstd", [None, 3])
@pytest.mark.parametrize("codec", CODECS)
def test_payload_decodes_to_what_get_returns(codec, zstd, kv_factory):
    kv = kv_factory(tokens=37, layers=3)
    blob = encode_kv(kv, CodecSpec(codec, zstd))
    p = decode_payload(blob)
    L, _, H, T, d = kv.shape
    assert isinstance(p, Payload) and p.codec == codec and p.shape == tuple(kv.shape) and p.tokens == T
    width = (d + 1) // 2 if codec == "int4" else d
    assert p.k.shape == p.v.shape == (L, H, T, width)
    assert p.q.dtype == STORED_DTYPES[codec]
    if codec in ("int8", "int4"):
        assert p.k_scale.shape == (L, H, 1, d) and p.v_scale.shape == (L, H, T, 1)
        assert p.k_scale.dtype == p.v_scale.dtype == torch.float16
    elif codec in STORED_DTYPES and STORED_DTYPES[codec] == torch.uint8:  # grouped: step + offset each
        assert p.k_scale.shape == (L, H, 2, d) and p.v_scale.shape == (L, H, T, 2)
        assert p.k_scale.dtype == p.v_scale.dtype == torch.float16
    else:
        assert p.k_scale is None and p.v_scale is None
    torch.testing.assert_close(p.decode(), decode_kv(blob), rtol=0, atol=0)


def test_get_payload_hits_misses_and_corrupt_entries(tmp_path, kv_factory):
    store = KVStore(StoreConfig(str(tmp_path / "kv"), codec="int8", zstd_level=None, memory_bytes=0))
    kv = kv_factory(tokens=20, layers=2)
    store.put_many([(key(1), kv), (key(2), kv)])
    p = store.get_payload(key(1))
    assert p.codec == "int8" and p.q.dtype == torch.int8
    torch.testing.assert_close(p.decode(), store.get(key(1)), rtol=0, atol=0)
    assert store.get_payload(key(3)) is None
    store.close()
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=8, subdir=True)
    with env.begin(write=True, db=env.open_db(DATA_DB)) as txn:
        blob = bytearray(txn.get(key(2)))
        blob[len(blob) // 2] ^= 0xFF
        txn.put(key(2), bytes(blob))
    env.close()
    store = KVStore(StoreConfig(str(tmp_path / "kv"), codec="int8", zstd_level=None, memory_bytes=0))
    assert store.get_payload(key(2)) is None  # corrupt: deleted, counted, a miss
    assert not store.contains(key(2))
    stats = store.stats()
    assert stats.corrupt == 1 and stats.misses == 1 and stats.hits == 0
    store.close()
