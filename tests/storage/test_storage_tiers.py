"""One contract suite for every Tier implementation."""

import threading
import uuid

import pytest

from chunkcache.errors import ConfigError, StorageError
from chunkcache.storage import LmdbTier, MemoryTier, RedisConfig, TieredStore, TierStats
from chunkcache.storage.redis_tier import RedisTier


def k(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8  # 32 bytes, like chunk keys


@pytest.fixture(params=["memory", "lmdb", "tiered", "redis", "tiered+redis"])
def tier(request, tmp_path):
    if request.param.endswith("redis"):
        # A fresh namespace per test on the session's real redis-server.
        redis_tier = RedisTier(RedisConfig(request.getfixturevalue("redis_server").url, prefix=f"t-{uuid.uuid4().hex}"))
    if request.param == "memory":
        t = MemoryTier(max_bytes=2**24)
    elif request.param == "lmdb":
        t = LmdbTier(tmp_path / "db", map_size=2**20)
    elif request.param == "tiered":
        t = TieredStore([MemoryTier(max_bytes=2**24), LmdbTier(tmp_path / "db", map_size=2**20)])
    elif request.param == "redis":
        t = redis_tier
    else:
        t = TieredStore([MemoryTier(max_bytes=2**24), LmdbTier(tmp_path / "db", map_size=2**20), redis_tier])
    yield t
    t.close()


@pytest.fixture
def counts_held(request) -> bool:
    """False where entries/bytes are a shared server's (Redis: DBSIZE and used_memory), not this tier's."""
    return not request.node.callspec.params["tier"].endswith("redis")


def test_get_of_missing_key_is_none(tier):
    assert tier.get(k(1)) is None
    assert not tier.contains(k(1))


def test_put_get_round_trip_and_overwrite(tier, counts_held):
    tier.put(k(1), b"one")
    assert tier.get(k(1)) == b"one"
    assert tier.contains(k(1))
    tier.put(k(1), b"uno!")
    assert tier.get(k(1)) == b"uno!"
    if counts_held:
        assert tier.stats().entries == 1
        assert tier.stats().bytes == 4


def test_empty_and_large_values(tier):
    tier.put(k(1), b"")
    big = bytes(range(256)) * 4096  # 1 MiB: bigger than the initial LMDB map allows with overhead
    tier.put(k(2), big)
    assert tier.get(k(1)) == b""
    assert tier.contains(k(1))
    assert tier.get(k(2)) == big


def test_bytes_like_values_are_stored_as_bytes(tier):
    tier.put(k(1), bytearray(b"abc"))
    tier.put(k(2), memoryview(b"def"))
    assert tier.get(k(1)) == b"abc" and isinstance(tier.get(k(1)), bytes)
    assert tier.get(k(2)) == b"def"


def test_put_many_and_keys(tier, counts_held):
    items = [(k(i), bytes([i]) * (i + 1)) for i in range(50)]
    tier.put_many(iter(items))  # any iterable
    tier.put_many([])
    assert sorted(tier.keys()) == sorted(key for key, _ in items)
    for key, value in items:
        assert tier.get(key) == value
    s = tier.stats()
    if counts_held:
        assert (s.entries, s.bytes) == (50, sum(len(v) for _, v in items))


def test_keys_pages_through_many_entries(tier):
    tier.put_many((k(i), b"x") for i in range(2500))  # more than one LMDB key page
    keys = list(tier.keys())
    assert len(keys) == len(set(keys)) == 2500


def test_delete(tier, counts_held):
    tier.put(k(1), b"one")
    tier.put(k(2), b"two")
    assert tier.delete(k(1)) is True
    assert tier.delete(k(1)) is False
    assert tier.get(k(1)) is None and not tier.contains(k(1))
    assert list(tier.keys()) == [k(2)]
    if counts_held:
        assert (tier.stats().entries, tier.stats().bytes) == (1, 3)


def test_stats_count_hits_and_misses(tier):
    tier.put(k(1), b"one")
    tier.get(k(1))
    tier.get(k(1))
    tier.get(k(2))
    s = tier.stats()
    assert isinstance(s, TierStats)
    assert (s.hits, s.misses, s.puts) == (2, 1, 1)
    assert s.hit_rate == pytest.approx(2 / 3)


@pytest.mark.parametrize("bad", ["a-str-key", b"", b"x" * 512, 7])
def test_bad_keys_raise_config_error(tier, bad):
    with pytest.raises(ConfigError, match="key"):
        tier.put(bad, b"v")
    with pytest.raises(ConfigError, match="key"):
        tier.get(bad)


def test_bad_value_raises_config_error(tier):
    with pytest.raises(ConfigError, match="value"):
        tier.put(k(1), "not bytes")


def test_calls_after_close_raise_storage_error(tier):
    tier.put(k(1), b"one")
    tier.close()
    tier.close()  # idempotent
    for call in (lambda: tier.get(k(1)), lambda: tier.put(k(2), b"x"), lambda: tier.contains(k(1)),
                 lambda: tier.delete(k(1)), tier.keys, tier.stats):
        with pytest.raises(StorageError, match="closed"):
            call()


def test_concurrent_readers_and_writers(tier, counts_held):
    tier.put_many((k(i), bytes([i % 256]) * 100) for i in range(100))
    errors = []

    def reader():
        try:
            for _ in range(5):
                for i in range(100):
                    assert tier.get(k(i)) == bytes([i % 256]) * 100
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def writer():
        try:
            for i in range(100, 200):
                tier.put(k(i), b"w" * 20_000)  # 2 MB in all: forces LMDB map growth while readers run
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(list(tier.keys())) == 200
    if counts_held:
        assert tier.stats().entries == 200
