"""Stored KV codecs as the kernels read them, and their torch dequantize reference.

The layouts (dtype, scale grouping, packing) are `codecs.LAYOUTS`; keys are stored before RoPE.
- float codecs (fp16 / bf16 / fp32): the tensor as is, no scale.
- int8: symmetric, q in [-127, 127], x ~= q * scale with scale = absmax / 127.
  Keys per channel: scale `[L, H, 1, d]` (one per key channel over the tokens).
  Values per token: scale `[L, H, T, 1]`.
- int4: the same scale grouping, q in [-7, 7], scale = absmax / 7, two values a byte
  (`unpack_int4`): packed `[L, H, T, ceil(d/2)]` uint8.
- grouped (kvq4 / kvq3 / ans20v10 / ans16 / ans8v4 / st4 / st6; storage unpacks or entropy-decodes them):
  codes uint8 `[L, H, T, d]`, x = float32(code) * float32(step) + float32(offset).
  Keys per channel: k_scale `[L, H, 2, d]`, [:, :, 0] step and [:, :, 1] offset per channel.
  Values per token in G groups of d / G channels: v_scale `[L, H, T, 2G]`, [..., :G] step,
  [..., G:] offset.
"""

from __future__ import annotations

import torch

from .codecs import LAYOUTS, Packing, Scales, layout
from .errors import KernelInputError

# Views of `codecs.LAYOUTS` for the launchers' checks: codec -> dtype of the stored tensor, and
# the codecs of each scale layout.
CODEC_DTYPES: dict[str, torch.dtype] = {c.name: c.stored for c in LAYOUTS}
GROUPED_CODECS = tuple(c.name for c in LAYOUTS if c.scales is Scales.GROUPED)
QUANTIZED_CODECS = tuple(c.name for c in LAYOUTS if c.scales is Scales.SYMMETRIC)


def unpack_int4(packed: torch.Tensor, n: int) -> torch.Tensor:
    """packed: uint8 [..., m] -> int8 [..., n] in [-8, 7], where m == ceil(n / 2).

    Element 2i is the low nibble of byte i, element 2i + 1 the high one, each stored as q + 8
    (`chunkcache.storage.quant.pack_int4` writes them)."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_int4 takes uint8, got {packed.dtype}")
    m = packed.shape[-1]
    if m != (n + 1) // 2:
        raise ValueError(f"unpack_int4: last dim {m} cannot hold n={n} nibbles")
    u = torch.empty((*packed.shape[:-1], 2 * m), dtype=torch.uint8, device=packed.device)  # [..., 2m]
    torch.bitwise_and(packed, 0x0F, out=u[..., 0::2])
    torch.bitwise_right_shift(packed, 4, out=u[..., 1::2])
    q = u.view(torch.int8).sub_(8)  # nibbles 0..15 -> -8..7
    return q if 2 * m == n else q[..., :n]


def dequantize_reference(
    packed: torch.Tensor, scale: torch.Tensor | None, codec: str
) -> torch.Tensor:
    """Stored K or V `[L, H, T, d]` (int4: `[L, H, T, d/2]`) -> a new fp32 `[L, H, T, d]`.
    `scale` broadcasts against the result: `[L, H, 1, d]` for keys, `[L, H, T, 1]` for values."""
    c = layout(codec)
    if c.scales is Scales.GROUPED:
        raise KernelInputError(f"{codec} keys and values scale differently: use dequantize_grouped_reference")
    if c.packing is Packing.NIBBLES:
        x = unpack_int4(packed, c.head_dim(packed.shape[-1])).to(torch.float32)
    else:
        x = packed.to(torch.float32, copy=True)
    if c.scales is Scales.SYMMETRIC:
        x.mul_(scale.to(torch.float32))
    return x


def dequantize_grouped_reference(codes: torch.Tensor, scale: torch.Tensor, part: str) -> torch.Tensor:
    """Grouped codes `[L, H, T, d]` uint8 -> a new fp32 `[L, H, T, d]`.

    part "k": scale `[L, H, 2, d]` (step, offset per channel); part "v": scale `[L, H, T, 2G]`
    (G steps then G offsets per token, each over d / G channels)."""
    x = codes.to(torch.float32)
    s = scale.to(torch.float32)
    if part == "k":
        return x.mul_(s[:, :, 0:1]).add_(s[:, :, 1:2])  # [L, H, T, d] * [L, H, 1, d] + [L, H, 1, d]
    if part != "v":
        raise KernelInputError(f"part={part!r}: expected 'k' or 'v'")
    L, H, T, d = codes.shape
    G = s.shape[-1] // 2
    xg = x.view(L, H, T, G, d // G)  # [L, H, T, G, d/G]
    xg.mul_(s[..., :G, None]).add_(s[..., G:, None])
    return x
