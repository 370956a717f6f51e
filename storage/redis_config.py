"""`RedisConfig`: where the shared KV tier lives and how long the service waits for it.

Kept apart from `redis_tier.py` so configuration code can name it without importing redis-py.
"""

import re
from dataclasses import dataclass

from chunkcache.errors import ConfigError

URL_SCHEMES = ("redis://", "rediss://", "unix://")
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class RedisConfig:
    """url: redis://[user:pass@]host:port/db, rediss:// (TLS) or unix:///path (Valkey speaks the same).
    prefix: namespace of this deployment's keys (`<prefix>:<32-byte chunk key>`); the chunk key
    already hashes the model fingerprint, prompt prefix and codec, so replicas of one deployment
    share entries and different models never collide. ttl_s: expiry set on every write, None =
    none. There is no byte budget here on purpose: give the server `maxmemory` and
    `maxmemory-policy allkeys-lru` and it evicts cold entries itself.
    timeout_s: connect and read timeout of one call. After a failure the tier skips Redis for
    backoff_s, doubling per failure in a row up to max_backoff_s (a circuit breaker), so a dead
    Redis costs a miss, not a timeout per request."""

    url: str
    prefix: str = "chunkcache"
    ttl_s: int | None = None
    timeout_s: float = 0.25
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(URL_SCHEMES):
            raise ConfigError(f"redis url must start with one of {', '.join(URL_SCHEMES)}, got {self.url!r}")
        if not isinstance(self.prefix, str) or not PREFIX_PATTERN.fullmatch(self.prefix):
            raise ConfigError(f"redis prefix must be 1-64 characters of A-Z a-z 0-9 _ . : -, got {self.prefix!r}")
        if self.ttl_s is not None and (isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, int) or self.ttl_s < 1):
            raise ConfigError(f"redis ttl_s must be an int >= 1 (seconds) or None, got {self.ttl_s!r}")
        for name in ("timeout_s", "backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ConfigError(f"redis {name} must be a number of seconds in (0, 3600], got {value!r}")
        if self.backoff_s > self.max_backoff_s:
            raise ConfigError(f"redis backoff_s ({self.backoff_s}) must be <= max_backoff_s ({self.max_backoff_s})")

    @property
    def key_prefix(self) -> bytes:
        return self.prefix.encode() + b":"
