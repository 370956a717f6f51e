"""Stored KV codecs as the kernels read them, and their torch dequantize reference.

Layouts (they match `chunkcache.storage`'s codecs; keys are stored before RoPE):
- fp16 / bf16 / fp32: the tensor as is, no scale.
- int8: symmetric, q in [-127, 127], x ~= q * scale with scale = absmax / 127.
  Keys per channel: scale `[L, H, 1, d]` (one per key channel over the tokens).
  Values per token: scale `[L, H, T, 1]`.
- int4: the same scale grouping, q in [-7, 7], scale = absmax / 7. Two values per uint8
  along head_dim: element 2i in the low nibble, 2i+1 in the high nibble, each stored as
  q + 8. Packed `[L, H, T, d/2]` uint8.
- kvq4 / kvq3 / ans20v10 / ans16 / ans8v4 (asymmetric, grouped; storage unpacks or entropy-decodes them):
  codes uint8 `[L, H, T, d]`, x = float32(code) * float32(step) + float32(offset).
  Keys per channel: k_scale `[L, H, 2, d]`, [:, :, 0] step and [:, :, 1] offset per channel.
  Values per token in G groups of d / G channels: v_scale `[L, H, T, 2G]`, [..., :G] step,
  [..., G:] offset.
"""

from __future__ import annotations

import torch

from .errors import KernelInputError

# codec -> dtype of the stored tensor
CODEC_DTYPES: dict[str, torch.dtype] = {
    "int8": torch.int8,
    "int4": torch.uint8,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
}
GROUPED_CODECS = ("kvq4", "kvq3", "ans20v10", "ans16", "ans8v4")
CODEC_DTYPES.update({name: torch.uint8 for name in GROUPED_CODECS})
QUANTIZED_CODECS = ("int8", "int4")


def dequantize_reference(
    packed: torch.Tensor, scale: torch.Tensor | None, codec: str
) -> torch.Tensor:
    """Stored K or V `[L, H, T, d]` (int4: `[L, H, T, d/2]`) -> a new fp32 `[L, H, T, d]`.
    `scale` broadcasts against the result: `[L, H, 1, d]` for keys, `[L, H, T, 1]` for values."""
    if codec not in CODEC_DTYPES:
        raise KernelInputError(f"unknown codec {codec!r}")
    if codec in GROUPED_CODECS:
        raise KernelInputError(f"{codec} keys and values scale differently: use dequantize_grouped_reference")
    d = packed.shape[-1] * (2 if codec == "int4" else 1)
    x = torch.empty((*packed.shape[:-1], d), dtype=torch.float32, device=packed.device)
    if codec == "int4":
        x[..., 0::2] = packed & 0x0F  # element 2i: low nibble, stored as q + 8
        x[..., 1::2] = packed >> 4  # element 2i + 1: high nibble
        x.sub_(8)
    else:
        x.copy_(packed)
    if codec in QUANTIZED_CODECS:
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
