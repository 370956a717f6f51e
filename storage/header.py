"""The fixed 48-byte header in front of every stored chunk KV, and its checks.

Layout, little-endian (struct "<4sHBBBBBB5IQ4xI"):

    offset size  field
    0      4     magic b"CCKV"
    4      2     format version, uint16 (FORMAT_VERSION)
    6      1     codec id (`kernels.codecs.LAYOUTS`): 1 fp16, 2 bf16, 3 int8, 4 int4, 5 fp32,
                 6 kvq4, 7 kvq3, 8 ans20v10, 9 ans16, 10 ans8v4, 11 st4, 12 st6
    7      1     source dtype id (what was encoded): 1 float32, 2 float16, 3 bfloat16
    8      1     rope flag: 0 = keys stored before RoPE; 1 = keys rotated at their prompt positions
                 (chain entries: a chunk's exact KV at its place in one prompt)
    9      1     zstd flag: 1 = the payload is one zstd frame
    10     1     ndim, always 5
    11     1     reserved, 0
    12     20    shape, 5 x uint32: [layers, 2, kv_heads, tokens, head_dim]
    32     8     payload length in bytes, uint64 (as stored, i.e. after zstd)
    40     4     reserved, 0
    44     4     crc32 of bytes [0, 44) followed by the payload

The payload follows at offset 48. A blob is exactly HEADER_SIZE + payload length bytes.
"""

import struct
import zlib
from dataclasses import dataclass

from chunkcache.errors import CorruptEntryError
from chunkcache.kernels import BY_ID, BY_NAME

FORMAT_VERSION = 1
MAGIC = b"CCKV"
_STRUCT = struct.Struct("<4sHBBBBBB5IQ4xI")
HEADER_SIZE = _STRUCT.size  # 48
_CRC_OFFSET = HEADER_SIZE - 4

CODEC_IDS = {name: c.id for name, c in BY_NAME.items()}  # fp16 1 ... st6 12 (pinned by a test)
DTYPE_IDS = {"float32": 1, "float16": 2, "bfloat16": 3}
_DTYPE_NAMES = {v: k for k, v in DTYPE_IDS.items()}


@dataclass(frozen=True)
class KVHeader:
    """What the header says about the payload; `shape` is [layers, 2, kv_heads, tokens, head_dim]."""

    codec: str
    source_dtype: str
    shape: tuple[int, int, int, int, int]
    payload_len: int
    zstd: bool
    rope: int = 0
    version: int = FORMAT_VERSION


def pack_header(header: KVHeader, payload: bytes) -> bytes:
    """The 48 header bytes for `payload`, checksum included."""
    head = _STRUCT.pack(
        MAGIC, header.version, CODEC_IDS[header.codec], DTYPE_IDS[header.source_dtype],
        header.rope, int(header.zstd), len(header.shape), 0, *header.shape, header.payload_len, 0,
    )[:_CRC_OFFSET]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + struct.pack("<I", crc)


def read_header(blob: bytes | memoryview) -> KVHeader:
    """Parse and verify a stored blob's header, length and checksum; CorruptEntryError if bad."""
    n = len(blob)
    if n < HEADER_SIZE:
        raise CorruptEntryError(f"entry is {n} bytes, shorter than the {HEADER_SIZE}-byte header")
    (magic, version, codec_id, dtype_id, rope, zstd, ndim, _, *shape, payload_len, crc) = _STRUCT.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptEntryError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CorruptEntryError(f"format version {version} is not supported (this build reads {FORMAT_VERSION})")
    if HEADER_SIZE + payload_len != n:
        kind = "truncated" if n < HEADER_SIZE + payload_len else "over-long"
        raise CorruptEntryError(
            f"{kind} entry: {n} bytes, header says {HEADER_SIZE} + payload {payload_len} = {HEADER_SIZE + payload_len}"
        )
    view = memoryview(blob)
    actual = zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[:_CRC_OFFSET]))
    if actual != crc:
        raise CorruptEntryError(f"checksum mismatch: stored crc32 {crc:#010x}, computed {actual:#010x}")
    # Fields below are covered by the checksum, so a bad value here is a writer bug or a
    # version mismatch rather than bit rot; still refuse it instead of guessing.
    if codec_id not in BY_ID or dtype_id not in _DTYPE_NAMES:
        raise CorruptEntryError(f"unknown codec id {codec_id} or dtype id {dtype_id}")
    if ndim != 5 or shape[1] != 2:
        raise CorruptEntryError(f"bad shape {shape} (ndim {ndim}); expected [layers, 2, heads, tokens, head_dim]")
    if rope not in (0, 1):
        raise CorruptEntryError(f"rope flag {rope} is not supported by format version {FORMAT_VERSION}")
    return KVHeader(
        codec=BY_ID[codec_id].name, source_dtype=_DTYPE_NAMES[dtype_id], shape=tuple(shape),
        payload_len=payload_len, zstd=bool(zstd), rope=rope, version=version,
    )
