"""KVQuant-style asymmetric quantization of chunk KV to b-bit codes, and b-bit packing.

Grouping (KVQuant, KIVI): keys per channel over all of the chunk's tokens, because key outliers
sit in fixed channels before RoPE mixes each channel with its pair; values per token, in groups
of `group` channels along head_dim, because value outliers sit in tokens.

    kv     [L, 2, H, T, d] float (keys before RoPE)
    codes  [L, 2, H, T, d] uint8: keys in [0, key levels), values in [0, value levels)
    kscale [L, H, 2, d]    fp16: [:, :, 0] step, [:, :, 1] offset (per key channel)
    vscale [L, H, T, 2*G]  fp16: [..., :G] step, [..., G:] offset (G = d / group groups a token)

Arithmetic, exactly (kernels.grouped reproduces the dequantization bit for bit):
  1. lo, hi = min, max over the group in float32;
  2. step = fp16(min((hi - lo) / (levels - 1), 65504)), offset = fp16(lo) (levels: the part's);
  3. code = clamp(round_half_even((x - float32(offset)) / float32(step)), 0, levels - 1),
     a zero step gives code 0;
  4. dequantized x = float32(code) * float32(step) + float32(offset).
Keys and values have their own number of levels: on the default model the first-token KL of
blend answers moves several times more with key error than with value error, so keys get more.
Asymmetric levels spend none of the codes on a side of zero the group does not reach,
which at 3-4 bits is worth more than the extra fp16 offset (0.25 bits a value at group 64).
"""

import torch

from chunkcache.errors import ConfigError

_FP16_MAX = 65504.0


def value_groups(head_dim: int, group: int) -> int:
    """Groups per value token: head_dim / group, or 1 when `group` does not divide head_dim."""
    return head_dim // group if 0 < group <= head_dim and head_dim % group == 0 else 1


def check_levels_group(levels: int, group: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 256:
        raise ConfigError(f"quantization levels must be an int in 2..256, got {levels!r}")
    if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= 65535:
        raise ConfigError(f"group size must be an int in 1..65535, got {group!r}")


def _quantize(x: torch.Tensor, dim: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: [...] float32 -> (codes uint8 like x, step fp16, offset fp16; `dim` reduced to size 1)."""
    lo, hi = torch.aminmax(x, dim=dim, keepdim=True)
    step = ((hi - lo) / qmax).clamp_(max=_FP16_MAX).to(torch.float16)
    offset = lo.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16)
    s = step.float()
    safe = torch.where(s > 0, s, torch.ones_like(s))  # a constant group: every code 0
    codes = (x - offset.float()).div_(safe).round_().clamp_(0, qmax)
    codes = torch.where(s > 0, codes, torch.zeros_like(codes)).to(torch.uint8)
    return codes, step, offset


def quantize(kv: torch.Tensor, key_levels: int, value_levels: int, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kv: [L, 2, H, T, d] -> (codes uint8 [L, 2, H, T, d], keys in [0, key_levels) and values in
    [0, value_levels), kscale [L, H, 2, d], vscale [L, H, T, 2*G])."""
    check_levels_group(key_levels, group)
    check_levels_group(value_levels, group)
    L, _, H, T, d = kv.shape
    G = value_groups(d, group)
    codes = torch.zeros((L, 2, H, T, d), dtype=torch.uint8)
    kscale = torch.zeros((L, H, 2, d), dtype=torch.float16)
    vscale = torch.zeros((L, H, T, 2 * G), dtype=torch.float16)
    if T == 0 or d == 0:
        return codes, kscale, vscale
    k = kv[:, 0].float()  # [L, H, T, d]
    codes[:, 0], kscale[:, :, 0:1], kscale[:, :, 1:2] = _quantize(k, dim=-2, qmax=key_levels - 1)
    v = kv[:, 1].float().reshape(L, H, T, G, d // G)  # [L, H, T, G, d/G]
    vc, vs, vo = _quantize(v, dim=-1, qmax=value_levels - 1)  # [L, H, T, G, d/G], [L, H, T, G, 1] x2
    codes[:, 1] = vc.reshape(L, H, T, d)
    vscale[..., :G], vscale[..., G:] = vs.squeeze(-1), vo.squeeze(-1)
    return codes, kscale, vscale


def packed_size(n: int, bits: int) -> int:
    """Bytes holding n codes of `bits` bits: 8 codes in `bits` bytes, the last group zero-padded."""
    return (n + 7) // 8 * bits


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """codes: uint8 [...] in [0, 2**bits) -> uint8 [packed_size(numel, bits)].

    Codes are taken in C order, 8 at a time: code i of a group sits at bit bits*i of a
    little-endian integer of `bits` bytes (for bits=4 that is two nibbles a byte, low first)."""
    flat = codes.reshape(-1).to(torch.int64)
    n = flat.numel()
    padded = torch.zeros((n + 7) // 8 * 8, dtype=torch.int64)
    padded[:n] = flat
    shifts = torch.arange(8, dtype=torch.int64) * bits
    word = (padded.view(-1, 8) << shifts).sum(dim=1, keepdim=True)  # [n/8, 1], 8*bits <= 64 bits
    out = (word >> (torch.arange(bits, dtype=torch.int64) * 8)) & 0xFF  # [n/8, bits]
    return out.to(torch.uint8).reshape(-1)


def unpack_bits(packed: torch.Tensor, bits: int, shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 [packed_size(prod(shape), bits)] -> codes uint8 of `shape` (the inverse of pack_bits)."""
    n = 1
    for s in shape:
        n *= s
    if packed.numel() != packed_size(n, bits):
        raise ValueError(f"unpack_bits: {packed.numel()} bytes cannot hold {n} codes of {bits} bits")
    if n == 0:
        return torch.zeros(shape, dtype=torch.uint8)
    if bits == 4:  # two nibbles a byte, low first: no word needed
        codes = torch.stack([packed & 0x0F, packed >> 4], dim=1)  # [n/2, 2]
        return codes.reshape(-1)[:n].reshape(shape)
    wide = torch.int32 if bits <= 3 else torch.int64  # a word of 8 codes fits 24 bits at 3
    groups = packed.view(-1, bits).to(wide)  # [n/8, bits]
    word = groups[:, 0:1].clone()  # [n/8, 1]
    for j in range(1, bits):
        word |= groups[:, j : j + 1] << (8 * j)
    codes = (word >> (torch.arange(8, dtype=wide) * bits)) & ((1 << bits) - 1)  # [n/8, 8]
    return codes.to(torch.uint8).reshape(-1)[:n].reshape(shape)
