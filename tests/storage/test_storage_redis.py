"""The shared Redis tier against a real redis-server: sharing, promotion, TTL, corruption,
a dead or silent server (a miss, never an error), namespaces and the eviction-policy warning."""

import logging
import socket
import time
import uuid

import pytest
import torch
from redis_support import RedisServer

from chunkcache.storage import KVStore, RedisConfig, StoreConfig
from chunkcache.storage.redis_tier import RedisTier

KEY = b"k" * 32


def prefix() -> str:
    return f"t-{uuid.uuid4().hex}"


def replica(tmp_path, name: str, redis: RedisConfig, **kw) -> KVStore:
    """A KVStore with its own memory and LMDB tiers over the shared Redis, as one replica has."""
    return KVStore(StoreConfig(str(tmp_path / name), redis=redis, **kw))


def test_entry_written_by_one_replica_is_a_hit_on_another_and_promoted(tmp_path, redis_server, kv_factory):
    cfg = RedisConfig(redis_server.url, prefix=prefix())
    kv = kv_factory(tokens=16)
    with replica(tmp_path, "a", cfg) as a, replica(tmp_path, "b", cfg) as b:
        a.put(KEY, kv)
        assert [t.name for t in b.stats().tiers] == ["memory", "lmdb", "redis"]
        memory, lmdb, redis_tier = b._tiers.tiers
        assert not memory.contains(KEY) and not lmdb.contains(KEY) and b.contains(KEY)
        torch.testing.assert_close(b.get(KEY), a.get(KEY))  # fp16 round trip, same bytes on both
        assert memory.contains(KEY) and lmdb.contains(KEY)  # promoted into b's local tiers
        assert [t.hits for t in b.stats().tiers] == [0, 0, 1]
        b.get(KEY)
        assert [t.hits for t in b.stats().tiers] == [1, 0, 1]  # the second get is local
    raw = redis_server.client().get(cfg.key_prefix + KEY)
    assert raw[:4] == b"CCKV"  # the store's own header format, not pickle


def test_ttl_is_set_on_every_write(tmp_path, redis_server, kv_factory):
    client = redis_server.client()
    with_ttl = RedisConfig(redis_server.url, prefix=prefix(), ttl_s=300)
    without = RedisConfig(redis_server.url, prefix=prefix())
    with replica(tmp_path, "a", with_ttl) as a, replica(tmp_path, "b", without) as b:
        a.put_many([(KEY, kv_factory(tokens=4))])
        b.put(KEY, kv_factory(tokens=4))
    assert 290 <= client.ttl(with_ttl.key_prefix + KEY) <= 300
    assert client.ttl(without.key_prefix + KEY) == -1  # no expiry


def test_corrupt_entry_in_redis_is_detected_dropped_and_recomputed(tmp_path, redis_server, kv_factory, caplog):
    cfg = RedisConfig(redis_server.url, prefix=prefix())
    client, name = redis_server.client(), cfg.key_prefix + KEY
    kv = kv_factory(tokens=8)
    with replica(tmp_path, "a", cfg) as a:
        a.put(KEY, kv)
    blob = bytearray(client.get(name))
    blob[100] ^= 0xFF  # bit rot in the payload
    client.set(name, bytes(blob))
    with replica(tmp_path, "b", cfg) as b, caplog.at_level(logging.WARNING):
        assert b.get(KEY) is None  # a miss, not an error
        assert b.stats().corrupt == 1 and "checksum mismatch" in caplog.text
        assert not client.exists(name) and not b.contains(KEY)  # dropped from Redis and from b's local tiers
        assert b.offer_many([(KEY, kv)])  # the caller recomputes and stores it again
    with replica(tmp_path, "c", cfg) as c:
        torch.testing.assert_close(c.get(KEY), kv, rtol=1e-3, atol=1e-2)


def test_namespaces_do_not_see_each_other(tmp_path, redis_server):
    one = RedisTier(RedisConfig(redis_server.url, prefix=prefix()))
    two = RedisTier(RedisConfig(redis_server.url, prefix=prefix()))
    one.put(KEY, b"one")
    assert two.get(KEY) is None and list(two.keys()) == [] and list(one.keys()) == [KEY]
    one.close()
    two.close()


def test_killed_redis_degrades_to_misses_and_back_off_skips_it(tmp_path, kv_factory):
    kv = kv_factory(tokens=4)
    with RedisServer() as server:
        cfg = RedisConfig(server.url, prefix=prefix(), timeout_s=0.5, backoff_s=30.0, max_backoff_s=60.0)
        with replica(tmp_path, "a", cfg) as a:
            a.put(KEY, kv)
        b = replica(tmp_path, "b", cfg, memory_bytes=0)
        server.kill()  # mid-test: b's only copy was in Redis
        t0 = time.perf_counter()
        assert b.get(KEY) is None  # a miss, not an exception
        b.put(b"x" * 32, kv)  # writes go on locally
        assert b.get(b"x" * 32) is not None
        for _ in range(20):  # the breaker is open: no call waits on the dead server
            assert b.get(KEY) is None
        assert time.perf_counter() - t0 < 2.0
        redis_stats = b.stats().tiers[-1]
        assert redis_stats.name == "redis" and redis_stats.errors == 1
        assert b._tiers.tiers[-1].skipped >= 20
        b.close()


def test_redis_down_at_start_then_back(tmp_path, kv_factory):
    server = RedisServer()  # not started yet: its port refuses connections
    clock = [0.0]
    tier = RedisTier(RedisConfig(server.url, prefix=prefix(), backoff_s=5.0), clock=lambda: clock[0])
    assert tier.get(KEY) is None and tier.stats().errors == 1
    with server:
        assert tier.get(KEY) is None and tier.skipped == 2  # still backing off (stats() was skipped too)
        clock[0] += 5.0
        tier.put(KEY, b"v")  # the probe succeeds and closes the breaker
        assert tier.get(KEY) == b"v" and tier.stats().errors == 1
    tier.close()


def test_silent_server_times_out_into_a_miss():
    """A server that accepts connections and never answers (a hung Redis) costs one timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        tier = RedisTier(RedisConfig(f"redis://127.0.0.1:{port}/0", prefix=prefix(), timeout_s=0.2, backoff_s=30.0, max_backoff_s=30.0))
        t0 = time.perf_counter()
        assert tier.get(KEY) is None
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(10):
            assert tier.get(KEY) is None
            tier.put(KEY, b"v")
        assert first < 1.5 and time.perf_counter() - t0 < 0.1
        assert tier.stats().errors == 1
        tier.close()


def test_noeviction_policy_is_warned_about(caplog):
    with RedisServer() as server:  # redis-server's default policy is noeviction
        with caplog.at_level(logging.WARNING, logger="chunkcache.storage.redis_tier"):
            tier = RedisTier(RedisConfig(server.url, prefix=prefix()))
            tier.put(KEY, b"v")
            assert "noeviction" in caplog.text and "allkeys-lru" in caplog.text
            tier.close()
    with RedisServer("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru") as server:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="chunkcache.storage.redis_tier"):
            tier = RedisTier(RedisConfig(server.url, prefix=prefix()))
            tier.put(KEY, b"v")
            stats = tier.stats()
            assert "noeviction" not in caplog.text
            assert stats.max_bytes == 64 * 2**20 and stats.entries == 1 and stats.bytes > 0
            tier.close()


def test_password_is_not_logged(caplog):
    with caplog.at_level(logging.WARNING):
        tier = RedisTier(RedisConfig("redis://user:s3cret@127.0.0.1:1/0", prefix=prefix()))
        assert tier.get(KEY) is None
        tier.close()
    assert "127.0.0.1:1" in caplog.text and "s3cret" not in caplog.text
