"""Encode a chunk's KV tensor to bytes and back: a versioned header, then the payload.

Never pickle or torch.save: a blob is the 48-byte header described in `storage/header.py`
followed by the payload, optionally as one zstd frame. Payloads, for
kv: [L, 2, H, T, d] (index 0 of dim 1 = keys before RoPE, 1 = values):

    fp16   kv as float16, C order                                 2 * L*2*H*T*d bytes
    bf16   kv as bfloat16, C order                                2 * L*2*H*T*d bytes
    fp32   kv as float32, C order (lossless for a float32 model)  4 * L*2*H*T*d bytes
    int8   q     int8  [L, 2, H, T, d]                             L*2*H*T*d
           kscale fp16 [L, H, 1, d]  (keys: per channel over tokens)  2 * L*H*d
           vscale fp16 [L, H, T, 1]  (values: per token)              2 * L*H*T
    int4   q     uint8 [L, 2, H, T, ceil(d/2)], two nibbles a byte (see `storage/quant.py`)
           kscale, vscale as for int8
    kvq4, kvq3, ans20v10, ans16, ans8v4: asymmetric codes with per-channel key and per-token
           value scales, bit-packed or entropy-coded (`storage/grouped_codec.py`)
    st4, st6: 8-bit codes at a step a key channel and a value token set by its spread,
           entropy-coded (`storage/stepped_codec.py`)

The quantizers are `storage/quant.py`; decode returns float32 unless asked otherwise, and
`decode_payload` the stored tensors themselves (`storage/payload.py`) for the fused load path.
Decode cost is mostly the crc32 check (about 4 GB/s: 1.4 ms for a 256-token fp16 chunk of the
default model, 5.9 MB) and, with zstd, decompression (about 1-1.5 GB/s of output).
"""

from dataclasses import dataclass

import torch
import zstandard

from chunkcache.errors import ConfigError, CorruptEntryError
from chunkcache.kernels import BY_NAME, CodecLayout, Packing, Scales
from chunkcache.names import CODECS, DEFAULT_CODEC
from chunkcache.storage import quant
from chunkcache.storage import grouped_codec
from chunkcache.storage.grouped_codec import DEFAULT_GROUP
from chunkcache.storage.payload import Payload, tensor_view as _view
from chunkcache.storage.header import HEADER_SIZE, KVHeader, pack_header, read_header

_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_TORCH_DTYPES = {v: k for k, v in _DTYPES.items()}
_ZSTD_LEVELS = range(1, zstandard.MAX_COMPRESSION_LEVEL + 1)


@dataclass(frozen=True)
class CodecSpec:
    """How entries are encoded: `name` in CODECS, zstd level 1..22 or None for no zstd.

    group_size: channels a value scale covers in the grouped codecs (kvq*, ans*); each entry
    records its own, so it may change without making stored entries unreadable."""

    name: str = DEFAULT_CODEC
    zstd_level: int | None = None
    group_size: int = DEFAULT_GROUP

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ConfigError(f"unknown codec {self.name!r}; choose one of {', '.join(CODECS)}")
        level = self.zstd_level
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level not in _ZSTD_LEVELS):
            raise ConfigError(f"zstd_level must be None or an int in 1..{_ZSTD_LEVELS[-1]}, got {level!r}")
        g = self.group_size
        if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= 65535:
            raise ConfigError(f"group_size must be an int in 1..65535, got {g!r}")

    @property
    def layout(self) -> CodecLayout:
        return BY_NAME[self.name]

    @property
    def tag(self) -> str:
        """Short name that goes into cache keys, e.g. "fp16", "int8+zstd3" or "kvq4g32"."""
        name = self.name
        if self.layout.scales is Scales.GROUPED and self.group_size != DEFAULT_GROUP:
            name = f"{name}g{self.group_size}"
        return name if self.zstd_level is None else f"{name}+zstd{self.zstd_level}"


def payload_size(codec: str, shape: tuple[int, ...], group: int = DEFAULT_GROUP) -> int:
    """Bytes of the uncompressed payload of `codec` for kv of `shape` [L, 2, H, T, d] (for an
    entropy-coded codec an upper bound: its size depends on the values)."""
    c = BY_NAME[codec]
    if c.scales is Scales.GROUPED:
        return grouped_codec.max_payload_size(codec, shape, group)
    L, two, H, T, d = shape
    q = c.stored.itemsize * L * two * H * T * c.stored_width(d)
    return q if c.scales is Scales.NONE else q + 2 * (L * H * d + L * H * T)  # + fp16 scales


def encode_kv(kv: torch.Tensor, spec: CodecSpec, rotated: bool = False) -> bytes:
    """kv: [layers, 2, kv_heads, tokens, head_dim], float32/float16/bfloat16 -> header + payload.

    rotated: the keys are already rotated at their prompt positions (header rope flag 1)."""
    _check_kv(kv)
    kv = kv.detach().cpu()
    if spec.layout.scales is Scales.GROUPED:
        payload = grouped_codec.encode(kv, spec.name, spec.group_size)[0]
    else:
        payload = _encode_payload(kv, spec.layout)
    stored = payload if spec.zstd_level is None else zstandard.compress(payload, spec.zstd_level)
    header = KVHeader(
        codec=spec.name, source_dtype=_DTYPES[kv.dtype], shape=tuple(kv.shape),
        payload_len=len(stored), zstd=spec.zstd_level is not None, rope=int(rotated),
    )
    return pack_header(header, stored) + stored


def decode_kv(blob: bytes, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """header + payload -> kv: [layers, 2, kv_heads, tokens, head_dim] of `dtype`.

    dtype=None returns the dtype that was encoded. Raises CorruptEntryError for a wrong magic,
    an unsupported version, a bad checksum, a truncated or over-long blob.
    """
    header, payload = _read(blob)
    out_dtype = _TORCH_DTYPES[header.source_dtype] if dtype is None else dtype
    return payload.decode(out_dtype)


def decode_payload(blob: bytes) -> Payload:
    """header + payload -> the stored tensors as views, not decoded (see `storage/payload.py`).

    Verifies exactly what `decode_kv` verifies and raises the same CorruptEntryError.
    """
    return _read(blob)[1]


def _read(blob: bytes) -> tuple[KVHeader, Payload]:
    header = read_header(blob)
    stored = memoryview(blob)[HEADER_SIZE:]
    if BY_NAME[header.codec].scales is Scales.GROUPED:  # its size depends on its group size (preamble) or values
        bound = payload_size(header.codec, header.shape, group=1)
        raw = _decompress(stored, bound) if header.zstd else stored
        return header, grouped_codec.parse(bytearray(raw), header.codec, header.shape, rotated=header.rope == 1)
    expected = payload_size(header.codec, header.shape)
    raw = _decompress(stored, expected) if header.zstd else stored
    if len(raw) != expected:
        raise CorruptEntryError(
            f"{header.codec} payload for shape {list(header.shape)} should be {expected} bytes, got {len(raw)}"
        )
    # A writable copy: torch.frombuffer on read-only bytes warns, and the copy is ~0.15 ms per 6 MB.
    return header, _payload(bytearray(raw), header)


def _decompress(stored: memoryview, max_size: int) -> bytes:
    try:
        return zstandard.decompress(stored, max_output_size=max_size)
    except zstandard.ZstdError as e:
        raise CorruptEntryError(f"zstd payload does not decompress: {e}") from e


def _check_kv(kv: torch.Tensor) -> None:
    if not isinstance(kv, torch.Tensor):
        raise ConfigError(f"kv must be a torch.Tensor, got {type(kv).__name__}")
    if kv.dim() != 5 or kv.shape[1] != 2:
        raise ConfigError(f"kv must be [layers, 2, kv_heads, tokens, head_dim], got shape {list(kv.shape)}")
    if kv.dtype not in _DTYPES:
        raise ConfigError(f"kv dtype must be one of {[str(d) for d in _DTYPES]}, got {kv.dtype}")
    if any(s >= 2**32 for s in kv.shape):
        raise ConfigError(f"kv shape {list(kv.shape)} does not fit uint32 fields")


def _encode_payload(kv: torch.Tensor, c: CodecLayout) -> bytes:
    """A float or symmetric codec's payload (the grouped ones: `grouped_codec.encode`)."""
    if c.scales is Scales.NONE:
        x = kv.to(c.stored).contiguous()
        # numpy has no bfloat16: its bytes go out as int16
        return (x.view(torch.int16) if c.stored == torch.bfloat16 else x).numpy().tobytes()
    kq, kscale = quant.quantize_symmetric(kv[:, 0], dim=-2, qmax=c.qmax)  # [L, H, T, d], [L, H, 1, d] per channel
    vq, vscale = quant.quantize_symmetric(kv[:, 1], dim=-1, qmax=c.qmax)  # [L, H, T, d], [L, H, T, 1] per token
    q = torch.stack([kq, vq], dim=1)  # [L, 2, H, T, d] int8
    if c.packing is Packing.NIBBLES:
        q = quant.pack_int4(q)  # [L, 2, H, T, ceil(d/2)] uint8
    return b"".join(
        [q.contiguous().numpy().tobytes(), kscale.numpy().tobytes(), vscale.numpy().tobytes()]
    )


def _payload(raw: bytearray, header: KVHeader) -> Payload:
    """raw payload (writable) -> Payload whose tensors are views over `raw`."""
    L, two, H, T, d = header.shape
    c = BY_NAME[header.codec]
    if c.scales is Scales.NONE:
        return Payload(header.codec, header.shape, _view(raw, c.stored, 0, header.shape), rotated=header.rope == 1)
    width = c.stored_width(d)
    q = _view(raw, c.stored, 0, (L, two, H, T, width))  # int8, or uint8 two nibbles a byte
    nq = q.numel() * c.stored.itemsize
    kscale = _view(raw, torch.float16, nq, (L, H, 1, d))
    vscale = _view(raw, torch.float16, nq + 2 * L * H * d, (L, H, T, 1))
    return Payload(header.codec, header.shape, q, kscale, vscale, rotated=header.rope == 1)

