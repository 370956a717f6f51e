"""`ServiceConfig`: how the REST service runs, built once at the edge (CLI, `from_env`, tests)."""

import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields

from chunkcache.environment import PREFIX as ENV_PREFIX, variable
from chunkcache.errors import ConfigError, check_int
from chunkcache.marked import DocumentMarkers
from chunkcache.names import MAX_TOP_K


@dataclass(frozen=True)
class ServiceConfig:
    """host/port: where uvicorn listens (loopback by default). api_key: when set, every route but
    /healthz and /readyz needs `Authorization: Bearer <api_key>`. queue_size: model requests that
    may wait for a worker; one more gets 503. workers: requests answered at once (their decode steps
    run batched, see chunkcache/scheduler.py; keep it <= the cache's max_batch). request_timeout_s:
    queue wait plus model work, else 504. max_body_bytes: larger bodies get 413. max_top_k /
    max_new_tokens_limit: request caps (422 above). ingest_root: the only server-side directory
    `POST /v1/ingest` may read; None disables that route.
    redis_url: the shared KV tier every replica of a deployment points at (None = none);
    redis_prefix / redis_ttl_s / redis_timeout_s: its key namespace, expiry and per-call timeout
    (None = RedisConfig's defaults). The server's own `maxmemory` + `allkeys-lru` bound its size.
    max_document_chars: the longest document text a chat request may send (max_top_k caps how
    many). document_open/document_close: markers of documents inside chat messages (see
    chunkcache/marked.py); both or neither; None (the default) reads no message as documents."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    queue_size: int = 8
    workers: int = 16
    request_timeout_s: float = 120.0
    max_body_bytes: int = 2 * 2**20
    max_top_k: int = 20
    max_new_tokens_limit: int = 512
    ingest_root: str | None = None
    redis_url: str | None = None
    redis_prefix: str | None = None
    redis_ttl_s: int | None = None
    redis_timeout_s: float | None = None
    max_document_chars: int = 32_000
    document_open: str | None = None
    document_close: str | None = None

    def __post_init__(self):
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a non-empty string, got {self.host!r}")
        check_int("port", self.port, 0, 65535)
        if self.api_key is not None and (not isinstance(self.api_key, str) or len(self.api_key) < 8 or self.api_key != self.api_key.strip()):
            raise ConfigError("api_key must be a string of at least 8 characters without surrounding spaces, or None")
        check_int("queue_size", self.queue_size, 1, 10_000)
        check_int("workers", self.workers, 1, 64)
        if isinstance(self.request_timeout_s, bool) or not isinstance(self.request_timeout_s, (int, float)) or not 0 < self.request_timeout_s <= 3600:
            raise ConfigError(f"request_timeout_s must be a number in (0, 3600], got {self.request_timeout_s!r}")
        check_int("max_body_bytes", self.max_body_bytes, 1024, 1 << 30)
        check_int("max_top_k", self.max_top_k, 1, MAX_TOP_K)
        check_int("max_new_tokens_limit", self.max_new_tokens_limit, 1, 1 << 16)
        if self.ingest_root is not None:
            if not isinstance(self.ingest_root, str) or not os.path.isabs(self.ingest_root):
                raise ConfigError(f"ingest_root must be an absolute directory path or None, got {self.ingest_root!r}")
            if not os.path.isdir(self.ingest_root):
                raise ConfigError(f"ingest_root {self.ingest_root!r} is not an existing directory")
        if self.redis_url is None and (self.redis_prefix, self.redis_ttl_s, self.redis_timeout_s) != (None, None, None):
            raise ConfigError("redis_prefix, redis_ttl_s and redis_timeout_s need redis_url (CHUNKCACHE_REDIS_URL or --redis-url)")
        self.redis  # validates the Redis settings now, not at first use
        check_int("max_document_chars", self.max_document_chars, 1, 1 << 24)
        if (self.document_open is None) != (self.document_close is None):
            raise ConfigError(f"document_open and document_close are set together or not at all, got "
                              f"{self.document_open!r} and {self.document_close!r}")
        if self.document_open is not None:
            DocumentMarkers(self.document_open, self.document_close)  # raises ConfigError naming the bad marker

    @property
    def auth_enabled(self) -> bool:
        return self.api_key is not None

    @property
    def document_markers(self) -> DocumentMarkers | None:
        """The markers of documents inside chat messages, or None when that is off."""
        return None if self.document_open is None else DocumentMarkers(self.document_open, self.document_close)

    @property
    def redis(self):
        """The shared tier's RedisConfig, or None without redis_url."""
        if self.redis_url is None:
            return None
        from chunkcache.storage.redis_config import RedisConfig

        given = {"prefix": self.redis_prefix, "ttl_s": self.redis_ttl_s, "timeout_s": self.redis_timeout_s}
        return RedisConfig(self.redis_url, **{k: v for k, v in given.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ServiceConfig":
        """The service settings from CHUNKCACHE_<FIELD> variables (upper case; read through
        `chunkcache.environment`), e.g. CHUNKCACHE_API_KEY, CHUNKCACHE_PORT, CHUNKCACHE_INGEST_ROOT.
        Explicit `overrides` (from CLI flags; None means "not given") win over the environment; an
        empty variable counts as unset."""
        values: dict = {}
        for f in fields(cls):
            raw = variable(f.name, environ)
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown ServiceConfig fields {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(name: str, raw: str, kind) -> object:
    if isinstance(kind, types.UnionType):  # `int | None`: parse as the non-None type
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if kind not in (int, float):
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
