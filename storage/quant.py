"""Pure-torch symmetric quantizers for chunk KV; the reference the Triton kernels must match.

Grouping (KVQuant): keys are quantized per channel over tokens, values per token, because key
outliers sit in fixed channels (before RoPE mixes them) while value outliers sit in tokens.

    keys   k: [..., tokens, head_dim] -> q: same shape, scale: [..., 1, head_dim]
    values v: [..., tokens, head_dim] -> q: same shape, scale: [..., tokens, 1]

Arithmetic, exactly (a kernel that differs in any step will not match bit for bit):
  1. absmax over the group, in float32;
  2. scale = fp16(min(absmax / qmax, 65504)), qmax = 127 (int8) or 7 (int4);
  3. q = clamp(round_half_even(x / float32(scale)), -qmax, qmax); a zero scale gives q = 0;
  4. dequantized x = float32(q) * float32(scale).
The rounded fp16 scale is the one q is computed with, so dequantization error is at most
scale / 2 per element.

int4 packing along the last dim: element 2i goes in the low nibble of byte i, element 2i+1 in
the high nibble, each stored as q + 8 in [1, 15]. An odd last dim is padded with one zero. The
unpacking is the kernels' (`kernels.unpack_int4`), the one reader of that layout.
"""

import torch

from chunkcache.kernels import layout

INT8_QMAX = layout("int8").qmax  # 127
INT4_QMAX = layout("int4").qmax  # 7
_FP16_MAX = 65504.0


def quantize_symmetric(x: torch.Tensor, dim: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [...] float -> (q: int8, same shape as x; scale: fp16, x's shape with `dim` of size 1)."""
    xf = x.float()
    if xf.shape[dim] == 0:
        scale_shape = list(xf.shape)
        scale_shape[dim] = 1
        return torch.zeros(xf.shape, dtype=torch.int8), torch.zeros(scale_shape, dtype=torch.float16)
    lo, hi = torch.aminmax(xf, dim=dim, keepdim=True)  # one pass instead of abs() then amax()
    absmax = torch.maximum(hi, -lo)
    scale = (absmax / qmax).clamp_(max=_FP16_MAX).to(torch.float16)
    s = scale.float()
    safe = torch.where(s > 0, s, torch.ones_like(s))  # absmax 0 (or underflow) -> x / 1 rounds to 0
    q = torch.div(xf, safe).round_().clamp_(-qmax, qmax).to(torch.int8)
    return q, scale


def quantize_int8_keys(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k: [..., T, d] -> (q int8 [..., T, d], scale fp16 [..., 1, d]); per channel over tokens."""
    return quantize_symmetric(k, dim=-2, qmax=INT8_QMAX)


def quantize_int8_values(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v: [..., T, d] -> (q int8 [..., T, d], scale fp16 [..., T, 1]); per token."""
    return quantize_symmetric(v, dim=-1, qmax=INT8_QMAX)


def quantize_int4_keys(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k: [..., T, d] -> (q int8 in [-7, 7] [..., T, d], scale fp16 [..., 1, d])."""
    return quantize_symmetric(k, dim=-2, qmax=INT4_QMAX)


def quantize_int4_values(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v: [..., T, d] -> (q int8 in [-7, 7] [..., T, d], scale fp16 [..., T, 1])."""
    return quantize_symmetric(v, dim=-1, qmax=INT4_QMAX)


def dequantize_int8(
    q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None
) -> torch.Tensor:
    """q: int8 [..., T, d], scale: fp16 broadcastable to q -> [..., T, d] of `dtype`.

    Also dequantizes int4 values once unpacked (they are int8 in [-7, 7]). With `out`
    (float32, q's shape, may be a strided view) the product is written there in one pass.
    """
    if out is not None:
        return torch.mul(q, scale.float(), out=out)
    return (q.float() * scale.float()).to(dtype)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """q: int8 in [-8, 7] [..., n] -> uint8 [..., ceil(n / 2)], low nibble = even element."""
    if q.dtype != torch.int8:
        raise TypeError(f"pack_int4 takes int8, got {q.dtype}")
    u = (q.to(torch.int16) + 8).to(torch.uint8)  # [..., n] in [0, 15]
    if u.shape[-1] % 2:
        u = torch.cat([u, torch.full((*u.shape[:-1], 1), 8, dtype=torch.uint8)], dim=-1)  # [..., n + 1]
    return u[..., 0::2] | (u[..., 1::2] << 4)  # [..., n / 2]
