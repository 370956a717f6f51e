"""Shared tier on a Redis or Valkey server, below the local tiers (memory -> LMDB -> Redis).

Values are the store's blobs as they are (48-byte header + payload, crc32 checked by the
reader, never pickle); keys are `<prefix>:<32-byte chunk key>`. Several replicas pointing at
one server share every chunk one of them computed.

The tier is best effort, because the store is an optimisation: a connection failure, a timeout
or an error reply (e.g. OOM under `noeviction`) is counted in `TierStats.errors`, logged when
the state changes, and turns a get into a miss and a put or delete into a no-op. After a
connection failure or timeout a circuit breaker (`storage/breaker.py`) skips the server for a
back-off, so a dead Redis adds no timeout to the requests behind it. ConfigError (bad key or
value) and StorageError after close() are raised as by every tier.

Budget: none on this side. The server evicts: set `maxmemory` and `maxmemory-policy
allkeys-lru` (a warning is logged if the policy is `noeviction`, where writes fail once full).
stats(): hits/misses/puts/errors count this handle's calls; entries and bytes are the server's
(DBSIZE and used_memory, the whole database: counting one namespace would scan every key);
max_bytes is its maxmemory (None if unbounded). They are the last values read while it is down.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chunkcache.errors import StorageError
from chunkcache.storage.breaker import CircuitBreaker
from chunkcache.storage.redis_config import RedisConfig
from chunkcache.storage.tier import TierStats, check_key, check_value

log = logging.getLogger(__name__)
T = TypeVar("T")
_SCAN_COUNT = 1000
# Errors that say the server is unreachable or slow: these open the breaker. Any other
# RedisError is a reply from a live server (OOM, READONLY replica, ...) and is only counted.
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class RedisTier:
    def __init__(self, config: RedisConfig, name: str = "redis", clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config
        self.where = _redacted(config.url)
        self._prefix = config.key_prefix
        # No client-side retries: one failure opens the breaker instead of tripling the wait.
        self._client = redis.Redis.from_url(
            config.url, socket_timeout=config.timeout_s, socket_connect_timeout=config.timeout_s,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        )
        self._breaker = CircuitBreaker(config.backoff_s, config.max_backoff_s, clock)
        self._lock = threading.Lock()
        self._hits = self._misses = self._puts = self._errors = self._skipped = 0
        self._server = (0, 0, None)  # last (DBSIZE, used_memory, maxmemory or None)
        self._policy_checked = False
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        name = self._prefix + check_key(key)
        value = self._call("get", lambda c: c.get(name), None)
        with self._lock:
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
        return value

    def put(self, key: bytes, value: bytes) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        batch = [(self._prefix + check_key(k), check_value(v)) for k, v in items]
        if not batch:
            return

        def write(client: redis.Redis) -> int:
            pipe = client.pipeline(transaction=False)
            for name, value in batch:
                pipe.set(name, value, ex=self.config.ttl_s)
            pipe.execute()
            return len(batch)

        written = self._call("put", write, 0)
        with self._lock:
            self._puts += written

    def contains(self, key: bytes) -> bool:
        name = self._prefix + check_key(key)
        return bool(self._call("exists", lambda c: c.exists(name), 0))

    def delete(self, key: bytes) -> bool:
        name = self._prefix + check_key(key)
        return bool(self._call("delete", lambda c: c.delete(name), 0))

    def keys(self) -> Iterator[bytes]:
        """This namespace's keys (SCAN, so the server is never blocked); stops early if it fails."""
        self._check_open()
        return self._scan()

    def stats(self) -> TierStats:
        def read(client: redis.Redis) -> tuple[int, int, int | None]:
            pipe = client.pipeline(transaction=False)
            pipe.dbsize()
            pipe.info("memory")
            entries, memory = pipe.execute()
            return entries, int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0)) or None

        server = self._call("stats", read, None)
        with self._lock:
            if server is not None:
                self._server = server
            entries, used, maxmemory = self._server
            return TierStats(
                name=self.name, hits=self._hits, misses=self._misses, puts=self._puts,
                entries=entries, bytes=used, max_bytes=maxmemory, evictions=0, rejected=0, errors=self._errors,
            )

    @property
    def skipped(self) -> int:
        """Calls not sent because the breaker was open (each one a miss or a no-op)."""
        with self._lock:
            return self._skipped

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._client.close()

    # -- one guarded call -------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[redis.Redis], T], fallback: T) -> T:
        self._check_open()
        if not self._breaker.allow():
            with self._lock:
                self._skipped += 1
            return fallback
        try:
            out = fn(self._client)
        except _UNREACHABLE as e:
            was_closed = not self._breaker.is_open
            delay = self._breaker.failed()
            self._count_error()
            if was_closed:
                log.warning("Redis tier at %s unreachable on %s (%s: %s); serving misses, retrying in %.1f s",
                            self.where, what, type(e).__name__, e, delay)
            return fallback
        except redis.RedisError as e:
            self._breaker.succeeded()  # it answered
            self._count_error()
            log.warning("Redis tier at %s refused %s: %s", self.where, what, e)
            return fallback
        self._recovered()
        return out

    def _recovered(self) -> None:
        if self._breaker.succeeded():
            log.warning("Redis tier at %s reachable again", self.where)
        if not self._policy_checked:
            self._policy_checked = True
            self._check_policy()

    def _check_policy(self) -> None:
        try:
            memory = self._client.info("memory")
        except redis.RedisError:
            return
        policy, maxmemory = memory.get("maxmemory_policy"), int(memory.get("maxmemory", 0))
        if policy == "noeviction":
            log.warning("Redis at %s has maxmemory-policy noeviction: once %s is used, every write fails; set "
                        "maxmemory and maxmemory-policy allkeys-lru so it evicts cold chunks",
                        self.where, f"maxmemory {maxmemory} bytes" if maxmemory else "all memory")
        elif not maxmemory:
            log.info("Redis at %s has no maxmemory: the KV tier grows until the host's memory is full", self.where)

    def _count_error(self) -> None:
        with self._lock:
            self._errors += 1

    def _scan(self) -> Iterator[bytes]:
        cursor, cut = 0, len(self._prefix)
        pattern = self._prefix + b"*"  # the prefix has no glob characters (RedisConfig checks it)
        while True:
            page = self._call("scan", lambda c: c.scan(cursor, match=pattern, count=_SCAN_COUNT), None)
            if page is None:
                return
            cursor, names = page
            for name in names:
                yield name[cut:]
            if cursor == 0:
                return

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"tier {self.name!r} at {self.where} is closed")


def _redacted(url: str) -> str:
    """The URL without its user and password, for logs and errors."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return url.split("?", 1)[0]
    host = parts.hostname or "localhost"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or ''}"
