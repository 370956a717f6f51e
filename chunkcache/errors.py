"""The one error hierarchy of chunkcache. A cache miss is not an error."""

import errno


class ChunkCacheError(Exception):
    """Base class of every error chunkcache raises on purpose."""


class ConfigError(ChunkCacheError, ValueError):
    """A setting or argument has a value we cannot work with; the message names it."""


class InvalidRequestError(ChunkCacheError, ValueError):
    """A request (question, passages, options) is malformed; the message says what to fix."""


class ContextTooLongError(InvalidRequestError):
    """The prompt would exceed the model's context window."""


class ModelLoadError(ChunkCacheError):
    """The generator or embedder could not be loaded from local files."""


class StorageError(ChunkCacheError):
    """The KV store failed to read or write."""


class CorruptEntryError(StorageError):
    """A stored entry failed its header, version, length or checksum check."""


class NotFoundError(ChunkCacheError, KeyError):
    """A document or job id that does not exist was asked for."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


def check_int(name: str, value, low: int, high: int | None = None, error: type[ChunkCacheError] = ConfigError) -> None:
    """Raise `error` naming `name` and the value unless `value` is an int (a bool is not) in
    [low, high] (no upper bound when high is None)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise error(f"{name} must be an int {bound}, got {value!r}")


class WorkingCacheFullError(ChunkCacheError, RuntimeError):
    """The request cannot get working-cache memory: it can never fit (retry_after_s None: change
    the request or the server's setting), or it was given up while waiting for it."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestCancelledError(ChunkCacheError, RuntimeError):
    """`should_stop` said so before the request's first token (later, the answer ends with
    finish_reason "cancelled" instead)."""


class CacheClosedError(ChunkCacheError, RuntimeError):
    """The ChunkCache was closed: it takes no more requests."""


def is_no_space(exc: BaseException | None) -> bool:
    """True if exc or any exception in its __cause__ chain is OSError(ENOSPC or EDQUOT)."""
    seen = 0
    while exc is not None and seen < 16:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False
