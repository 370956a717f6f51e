"""chunkcache: RAG context caching with precomputed chunk KV, re-positioning and selective recompute.

`import chunkcache` stays light: the facade (and with it torch and transformers) is imported on
first use of `chunkcache.ChunkCache`.
"""

from chunkcache.errors import (
    ChunkCacheError,
    ConfigError,
    ContextTooLongError,
    CorruptEntryError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    StorageError,
)

__version__ = "0.1.0"

__all__ = [
    "ChunkCache",
    "ChunkCacheError",
    "ConfigError",
    "ContextTooLongError",
    "CorruptEntryError",
    "InvalidRequestError",
    "ModelLoadError",
    "NotFoundError",
    "StorageError",
]


def __getattr__(name: str):
    if name == "ChunkCache":
        from chunkcache.facade import ChunkCache

        return ChunkCache
    raise AttributeError(f"module 'chunkcache' has no attribute {name!r}")
