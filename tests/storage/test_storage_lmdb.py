"""LMDB tier: map growth, eviction under a byte budget, other processes, a killed writer."""

import os
import signal
import subprocess
import sys
import textwrap

import lmdb
import pytest
import torch

from chunkcache.errors import ConfigError, StorageError
from chunkcache.storage import KVStore, LmdbTier, MemoryTier, StoreConfig
from chunkcache.storage.lmdb_tier import ACCESS_DB, DATA_DB


def k(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


# -- map growth ---------------------------------------------------------------------------------

def test_map_grows_from_64kb_to_many_mb(tmp_path):
    tier = LmdbTier(tmp_path / "db", map_size=64 * 1024)
    value = os.urandom(200_000)
    for i in range(40):
        tier.put(k(i), value)
    tier.put_many((k(i), value) for i in range(40, 80))  # one 8 MB transaction
    assert tier.map_size >= 16 * 2**20
    assert all(tier.get(k(i)) == value for i in range(80))
    tier.close()
    reopened = LmdbTier(tmp_path / "db", map_size=64 * 1024)  # smaller than the file: LMDB keeps the file's
    assert reopened.stats().entries == 80 and reopened.get(k(79)) == value
    reopened.close()


def test_validation(tmp_path):
    with pytest.raises(ConfigError, match="eviction"):
        LmdbTier(tmp_path / "a", eviction="fifo")
    with pytest.raises(ConfigError, match="map_size"):
        LmdbTier(tmp_path / "b", map_size=1000)
    with pytest.raises(ConfigError, match="max_bytes"):
        LmdbTier(tmp_path / "c", max_bytes=0)


def test_second_open_in_same_process_is_refused(tmp_path):
    tier = LmdbTier(tmp_path / "db")
    with pytest.raises(StorageError, match="cannot open"):
        LmdbTier(tmp_path / "db")
    tier.close()


# -- eviction -------------------------------------------------------------------------------------

def test_memory_lru_eviction_under_budget():
    tier = MemoryTier(max_bytes=10_000)
    for i in range(10):
        tier.put(k(i), b"v" * 1000)
    tier.get(k(0))  # 0 is now the most recent
    tier.put(k(10), b"v" * 1000)
    assert not tier.contains(k(1)) and tier.contains(k(0)) and tier.contains(k(10))
    s = tier.stats()
    assert (s.bytes, s.entries, s.evictions) == (10_000, 10, 1)
    tier.put(k(11), b"v" * 20_000)  # larger than the budget: refused, nothing evicted
    assert not tier.contains(k(11)) and tier.stats().rejected == 1 and tier.stats().entries == 10


def fill(tier, n, size=1000):
    for i in range(n):
        tier.put(k(i), bytes([i]) * size)


def test_lmdb_lru_evicts_least_recently_used(tmp_path):
    tier = LmdbTier(tmp_path / "db", max_bytes=10_000, eviction="lru", low_water=1.0)
    fill(tier, 10)
    tier.get(k(0))
    tier.get(k(1))
    tier.put(k(10), b"n" * 1000)  # over budget by one entry: the oldest untouched one goes
    assert not tier.contains(k(2))
    assert all(tier.contains(k(i)) for i in (0, 1, 3, 10))
    s = tier.stats()
    assert (s.entries, s.bytes, s.evictions) == (10, 10_000, 1)
    tier.close()


def test_lmdb_lfu_evicts_least_frequently_used(tmp_path):
    tier = LmdbTier(tmp_path / "db", max_bytes=10_000, eviction="lfu", low_water=1.0)
    fill(tier, 10)
    for i in range(10):
        for _ in range(1 if i == 7 else 3):
            tier.get(k(i))
    tier.put(k(10), b"n" * 3000)  # needs three slots: 7 (1 get), then the oldest of the rest
    assert not tier.contains(k(7)) and not tier.contains(k(0)) and not tier.contains(k(1))
    assert tier.contains(k(10)) and tier.contains(k(2))
    assert tier.stats().bytes <= 10_000
    tier.close()


def test_low_water_evicts_below_the_budget(tmp_path):
    tier = LmdbTier(tmp_path / "db", max_bytes=10_000, low_water=0.5)
    fill(tier, 11)
    s = tier.stats()
    assert s.bytes <= 5_000 and s.evictions >= 6
    assert tier.contains(k(10))  # the entry just written survives
    tier.close()


def test_access_records_survive_reopen(tmp_path):
    tier = LmdbTier(tmp_path / "db", max_bytes=10_000, low_water=1.0, access_flush_every=10_000)
    fill(tier, 10)
    tier.get(k(0))  # buffered, written on close
    tier.close()
    tier = LmdbTier(tmp_path / "db", max_bytes=10_000, low_water=1.0)
    tier.put(k(10), b"n" * 1000)
    assert tier.contains(k(0)) and not tier.contains(k(1))
    tier.close()


def test_value_larger_than_budget_is_rejected_and_replaces_nothing(tmp_path):
    tier = LmdbTier(tmp_path / "db", max_bytes=5_000)
    tier.put(k(1), b"a" * 100)
    tier.put(k(1), b"b" * 6_000)  # the stale value must not survive
    assert tier.get(k(1)) is None
    s = tier.stats()
    assert (s.rejected, s.entries, s.bytes) == (1, 0, 0)
    tier.close()


def test_a_batch_larger_than_the_budget_keeps_its_newest_entries(tmp_path):
    tier = LmdbTier(tmp_path / "db", max_bytes=5_000, low_water=1.0)
    tier.put_many((k(i), b"x" * 1000) for i in range(8))
    assert sorted(tier.keys()) == [k(i) for i in range(3, 8)]
    tier.close()


# -- other processes --------------------------------------------------------------------------------

WRITER = """
    import sys
    from chunkcache.storage import LmdbTier
    tier = LmdbTier(sys.argv[1], map_size=64 * 1024)
    for i in range(20):
        tier.put_many([((i * 100 + j).to_bytes(4, "big") * 8, bytes([j]) * 50_000) for j in range(10)])
    tier.close()
    print("done", flush=True)
"""


def test_write_in_one_process_read_in_another(tmp_path):
    path = str(tmp_path / "db")
    reader = LmdbTier(path, map_size=64 * 1024)  # open before the writer grows the map to ~10 MB
    proc = run_python(WRITER, path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "done"
    # The map was grown by the other process: this handle adopts the new size (MapResizedError).
    assert reader.get((19 * 100 + 9).to_bytes(4, "big") * 8) == bytes([9]) * 50_000
    assert reader.stats().entries == 200
    assert reader.map_size > 64 * 1024
    reader.put(k(999_999), b"reader writes too")  # and can write past the grown map
    reader.close()


CRASH_WRITER = """
    import sys, torch
    from chunkcache.storage import KVStore, StoreConfig
    store = KVStore(StoreConfig(sys.argv[1], codec="fp16", zstd_level=None, memory_bytes=0, map_size=64 * 1024))
    for b in range(10_000):
        items = []
        for j in range(8):
            g = torch.Generator().manual_seed(b * 8 + j)
            items.append(((b * 8 + j).to_bytes(4, "big") * 8, torch.randn(4, 2, 3, 64, 64, generator=g)))
        store.put_many(items)
        print(b, flush=True)
"""


def test_killed_writer_leaves_every_committed_batch_intact(tmp_path):
    path = str(tmp_path / "db")
    proc = run_python(CRASH_WRITER, path)
    committed = -1
    for line in proc.stdout:
        committed = int(line)
        if committed >= 30:
            break
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)  # also closes the pipes
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 30, err
    committed = max([committed] + [int(line) for line in out.split()])  # printed before the kill landed
    store = KVStore(StoreConfig(path, codec="fp16", zstd_level=None, memory_bytes=0))
    batch = 0
    while True:
        present = [store.contains((batch * 8 + j).to_bytes(4, "big") * 8) for j in range(8)]
        assert all(present) or not any(present), f"batch {batch} is partly committed: {present}"
        if not any(present):
            break
        batch += 1
    assert committed < batch <= committed + 2  # all reported batches, plus at most the one in flight
    for b in range(batch):
        for j in (0, 7):
            g = torch.Generator().manual_seed(b * 8 + j)
            expected = torch.randn(4, 2, 3, 64, 64, generator=g).half().float()
            assert torch.equal(store.get((b * 8 + j).to_bytes(4, "big") * 8), expected)
    assert store.stats().corrupt == 0
    store.close()


def test_direct_lmdb_layout(tmp_path):
    """The sub-database names the corruption tests rely on."""
    tier = LmdbTier(tmp_path / "db")
    tier.put(k(1), b"value")
    tier.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=3)
    with env.begin() as txn:
        assert txn.get(k(1), db=env.open_db(DATA_DB, txn=txn, create=False)) == b"value"
        assert txn.get(k(1), db=env.open_db(ACCESS_DB, txn=txn, create=False)) is not None
    env.close()


def test_gets_are_read_only_until_the_access_buffer_fills(tmp_path):
    tier = LmdbTier(tmp_path / "db", access_flush_every=4)
    tier.put(k(1), b"v")
    txn_id = lambda: tier._env.info()["last_txnid"]  # noqa: E731 - each committed write bumps it
    before = txn_id()
    for _ in range(3):
        assert tier.get(k(1)) == b"v"
    assert txn_id() == before
    tier.get(k(1))  # the 4th buffered get flushes, in one write transaction
    assert txn_id() == before + 1
    tier.close()
