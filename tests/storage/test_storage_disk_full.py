"""A full disk: writes fail with the real cause named, `offer_many` keeps the caller going."""

import errno
import os
import subprocess

import pytest

from chunkcache.errors import StorageError
from chunkcache.storage import KVStore, MemoryTier, StoreConfig, chunk_key
from chunkcache.errors import is_no_space


def key(i: int) -> bytes:
    return chunk_key("model", "prefix", [i], "fp16")


class NoSpaceTier(MemoryTier):
    def put_many(self, items):
        list(items)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_offer_many_reports_instead_of_raising(kv_factory):
    store = KVStore(StoreConfig(path=None), tiers=[MemoryTier(1 << 20), NoSpaceTier(1 << 20, name="disk")])
    with pytest.raises(StorageError) as err:
        store.put_many([(key(1), kv_factory(tokens=4))])
    assert is_no_space(err.value) and "No space left on device" in str(err.value)
    assert store.offer_many([(key(2), kv_factory(tokens=4)), (key(3), kv_factory(tokens=4))]) is False
    assert not store.contains(key(2)) and not store.contains(key(3))  # not in the memory tier either: what it holds is durable first
    stats = store.stats()
    assert (stats.write_failures, stats.no_space_failures) == (1, 1)


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (root and mount(2) needed; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_lmdb_on_a_full_filesystem_names_no_space(tiny_fs, kv_factory):
    store = KVStore(StoreConfig(path=str(tiny_fs / "kv"), memory_bytes=0, zstd_level=None, map_size=64 << 20))
    try:
        with pytest.raises(StorageError) as err:
            for i in range(200):  # ~32 kB each: the 1 MiB filesystem fills up
                store.put_many([(key(i), kv_factory(tokens=64, layers=4, seed=i))])
        assert "no space left on device" in str(err.value) and is_no_space(err.value)
        assert store.offer_many([(key(999), kv_factory(tokens=64, layers=4))]) is False
        assert store.stats().no_space_failures == 1
        assert store.get(key(0)) is not None  # what was stored before stays readable
    finally:
        store.close()
