"""Cache keys: a 32-byte blake2b digest of everything that determines a chunk's stored bytes."""

import hashlib
import struct
from typing import Sequence

import numpy as np

from chunkcache.errors import ConfigError
from chunkcache.storage.header import FORMAT_VERSION

KEY_SIZE = 32
_DOMAIN = b"chunkcache/kv"
_INT32 = np.iinfo(np.int32)


def chunk_key(
    model_fingerprint: str,
    prefix_digest: str,
    token_ids: Sequence[int],
    codec: str,
    format_version: int = FORMAT_VERSION,
) -> bytes:
    """32-byte key for one chunk's KV.

    Every field is length-prefixed so that no two different inputs share an encoding;
    token ids are hashed as little-endian int32 bytes. `codec` is a CodecSpec.tag such as
    "int8+zstd3". Same inputs give the same key, any difference gives a different key.
    """
    for name, value in (("model_fingerprint", model_fingerprint), ("prefix_digest", prefix_digest), ("codec", codec)):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a str, got {type(value).__name__}")
    if isinstance(format_version, bool) or not isinstance(format_version, int) or not 0 <= format_version < 2**16:
        raise ConfigError(f"format_version must be an int in [0, 65535], got {format_version!r}")
    ids = _token_bytes(token_ids)
    h = hashlib.blake2b(digest_size=KEY_SIZE, person=b"ccache-key-v1")
    h.update(_DOMAIN)
    h.update(struct.pack("<H", format_version))
    for field in (model_fingerprint.encode(), prefix_digest.encode(), codec.encode(), ids):
        h.update(struct.pack("<Q", len(field)))
        h.update(field)
    return h.digest()


def _token_bytes(token_ids: Sequence[int]) -> bytes:
    """token ids -> little-endian int32 bytes; ConfigError for non-integers or out of range."""
    arr = np.asarray(token_ids)
    if arr.size == 0:
        return b""
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ConfigError(f"token_ids must be a flat sequence of ints, got dtype {arr.dtype} shape {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < _INT32.min or hi > _INT32.max:
        raise ConfigError(f"token ids must fit int32, got range [{lo}, {hi}]")
    return arr.astype("<i4").tobytes()


def chain_keys(
    model_fingerprint: str,
    prefix_digest: str,
    chunks: Sequence[Sequence[int]],
    codec: str,
    format_version: int = FORMAT_VERSION,
) -> list[bytes]:
    """32-byte chain keys, one per chunk: key i names chunk i's KV *in context*, i.e. computed
    behind the prefix and chunks 0..i-1 in that order (exact at that place in that prompt).

    A different kind of entry than `chunk_key` (another blake2b personalisation), so the two
    never collide. The running hash is copied after each chunk: O(total tokens) for all keys.
    """
    for name, value in (("model_fingerprint", model_fingerprint), ("prefix_digest", prefix_digest), ("codec", codec)):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a str, got {type(value).__name__}")
    h = hashlib.blake2b(digest_size=KEY_SIZE, person=b"ccache-chain-v1")
    h.update(_DOMAIN)
    h.update(struct.pack("<H", format_version))
    for field in (model_fingerprint.encode(), prefix_digest.encode(), codec.encode()):
        h.update(struct.pack("<Q", len(field)))
        h.update(field)
    keys = []
    for ids in chunks:
        field = _token_bytes(ids)
        h.update(struct.pack("<Q", len(field)))
        h.update(field)
        keys.append(h.copy().digest())
    return keys
