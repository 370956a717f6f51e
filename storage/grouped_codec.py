"""Payloads of the grouped codecs: KVQuant-style codes, bit-packed (kvq*) or entropy-coded (ans*).

For kv [L, 2, H, T, d] (keys before RoPE), with G = value groups per token (`grouped.value_groups`):

    offset  size                  field
    0       8                     preamble "<BBBBHH": key levels - 1, value levels - 1,
                                  coding (0 packed, 1 entropy), 0, group size, 0
    8       2 * L*H*2*d           kscale fp16 [L, H, 2, d]   (step, offset per key channel)
    ...     2 * L*H*T*2G          vscale fp16 [L, H, T, 2G]  (G steps, G offsets per token)
    ...     packed                kvq*: key codes then value codes, each packed at ceil(log2(levels))
                                  bits (`grouped.pack_bits`)
            or the entropy stream ans*: `storage/entropy.py`

    codec     key levels  value levels  coding   bits a value, codes only (2WikiMQA chunks)
    kvq4      16          16            packed   4
    kvq3      8           8             packed   3
    ans20v10  20          10            entropy  ~3.5 (keys ~4.05, values ~3.0)
    ans16     16          16            entropy  ~3.7 (the codes of kvq4, the same values decoded)
    ans8v4    8           4             entropy  ~2.1

Keys get more levels than values in the entropy-coded codecs. Measured on the default model (blend,
12 2WikiMQA questions, first-token KL against the unquantized cache), KL ~= 0.72 / (key levels - 1)**2
+ 0.18 / (value levels - 1)**2: keys weigh four times more, so at equal bits the KL is lowest with
about twice the key steps of the values (20 / 10 rather than 16 / 16 at fewer bits). The scales cost
32 bits per key channel per chunk and 32 bits per value token group (about 0.4 bits a value on
2WikiMQA's ~100-token passages), the header 48 bytes per chunk.

The entry is self-describing (levels and group size are in the preamble), so a store read by a
process with another group size setting still decodes it. Decoding hands back codes uint8
[L, 2, H, T, d] and the fp16 scales as a `Payload`; `kernels.dequant_rope` dequantizes and
rotates in one pass.
"""

import struct

import torch

from chunkcache.errors import CorruptEntryError
from chunkcache.kernels import LAYOUTS, CodecLayout, Packing, Scales
from chunkcache.storage import entropy, grouped, stepped_codec
from chunkcache.storage.payload import Payload, tensor_view as _view

# The grouped codecs' levels and packing are `kernels.codecs.LAYOUTS`; the preamble's coding byte
# says which packing wrote the codes. The fixed-step ones (st*) have a payload of their own
# (`stepped_codec.py`), to which encode, parse and max_payload_size hand them.
GROUPED_CODECS: dict[str, CodecLayout] = {c.name: c for c in LAYOUTS if c.scales is Scales.GROUPED}
LEVEL_CODECS = {n: c for n, c in GROUPED_CODECS.items() if c.packing is not Packing.STEPPED}
CODING_BYTE = {Packing.BITS: 0, Packing.ENTROPY: 1}
_PREAMBLE = struct.Struct("<BBBBHH")
DEFAULT_GROUP = 64


def scale_bytes(shape: tuple[int, ...], group: int) -> int:
    L, _, H, T, d = shape
    return 2 * (L * H * 2 * d + L * H * T * 2 * grouped.value_groups(d, group))


def max_payload_size(codec: str, shape: tuple[int, ...], group: int) -> int:
    """Bytes of a packed payload; an upper bound (levels bits a value) for an entropy-coded one."""
    spec = GROUPED_CODECS[codec]
    if spec.packing is Packing.STEPPED:
        return stepped_codec.max_payload_size(shape)
    L, two, H, T, d = shape
    half = L * H * T * d  # keys, and as many values
    if spec.packing is Packing.BITS:
        return _PREAMBLE.size + scale_bytes(shape, group) + sum(grouped.packed_size(half, b) for b in spec.bits)
    model = L * sum(1 + 4 * (2 * n - 1) + 4 for n in spec.levels)
    return _PREAMBLE.size + scale_bytes(shape, group) + model + 4 * (2 * half * 8 // 32 + L * two * 4)


def encode(kv: torch.Tensor, codec: str, group: int) -> tuple[bytes, list[entropy.SegmentStats]]:
    """kv [L, 2, H, T, d] -> (payload, entropy segment stats: empty for packed codecs)."""
    spec = GROUPED_CODECS[codec]
    if spec.packing is Packing.STEPPED:
        return stepped_codec.encode(kv, stepped_codec.PLANS[codec])
    codes, kscale, vscale = grouped.quantize(kv, spec.key_levels, spec.value_levels, group)
    stats: list[entropy.SegmentStats] = []
    if spec.packing is Packing.BITS:
        body = b"".join(grouped.pack_bits(codes[:, part], spec.bits[part]).numpy().tobytes() for part in (0, 1))
    else:
        body, stats = entropy.encode_codes(codes, spec.levels)
    head = _PREAMBLE.pack(spec.key_levels - 1, spec.value_levels - 1, CODING_BYTE[spec.packing], 0, group, 0)
    return b"".join([head, kscale.numpy().tobytes(), vscale.numpy().tobytes(), body]), stats


def parse(raw: bytearray, codec: str, shape: tuple[int, ...], rotated: bool) -> Payload:
    """raw payload (writable) -> Payload(codes uint8 [L, 2, H, T, d], kscale, vscale views)."""
    spec = GROUPED_CODECS[codec]
    if spec.packing is Packing.STEPPED:
        return stepped_codec.parse(raw, codec, shape, rotated)
    L, two, H, T, d = shape
    if len(raw) < _PREAMBLE.size:
        raise CorruptEntryError(f"{codec} payload is {len(raw)} bytes, shorter than its {_PREAMBLE.size}-byte preamble")
    key_m1, value_m1, coding, _, group, _ = _PREAMBLE.unpack_from(raw)
    expected = CODING_BYTE[spec.packing]
    if (key_m1 + 1, value_m1 + 1, coding) != (*spec.levels, expected) or group == 0:
        raise CorruptEntryError(f"{codec} preamble says {key_m1 + 1}/{value_m1 + 1} key/value levels, coding {coding}, "
                                f"group {group}; expected {spec.key_levels}/{spec.value_levels}, coding {expected}, a group >= 1")
    G = grouped.value_groups(d, group)
    at = _PREAMBLE.size
    body = at + scale_bytes(shape, group)
    n = L * two * H * T * d
    if spec.packing is Packing.BITS and len(raw) != max_payload_size(codec, shape, group):
        raise CorruptEntryError(f"{codec} payload for shape {list(shape)} should be "
                                f"{max_payload_size(codec, shape, group)} bytes, got {len(raw)}")
    if len(raw) < body:
        raise CorruptEntryError(f"{codec} payload for shape {list(shape)} is {len(raw)} bytes, its scales alone take {body}")
    kscale = _view(raw, torch.float16, at, (L, H, 2, d))
    vscale = _view(raw, torch.float16, at + 2 * L * H * 2 * d, (L, H, T, 2 * G))
    if spec.packing is Packing.BITS:
        half = (L, H, T, d)
        sizes = [grouped.packed_size(n // 2, b) for b in spec.bits]
        keys = grouped.unpack_bits(_view(raw, torch.uint8, body, (sizes[0],)), spec.bits[0], half)
        values = grouped.unpack_bits(_view(raw, torch.uint8, body + sizes[0], (sizes[1],)), spec.bits[1], half)
        codes = torch.stack([keys, values], dim=1)  # [L, 2, H, T, d]
    else:
        codes = entropy.decode_codes(memoryview(raw)[body:], spec.levels, shape)
    return Payload(codec, shape, codes, kscale, vscale, rotated=rotated)

