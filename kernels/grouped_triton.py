"""Triton kernel behind `rope.dequant_rope` for the grouped codecs (kvq*, ans*; see `quant.py`):
uint8 codes -> keys dequantized per channel and rotated, values dequantized per token group.
Imported only when a launcher picks Triton; the launcher checks every input first.

One program = one (layer, head) and BLOCK_T tokens, head_dim as two halves as in
`rope_triton.py`, so rotate_half is two loads: o1 = x1 cos - x2 sin, o2 = x2 cos + x1 sin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rope_triton import _cos_sin


@triton.jit
def _grouped_rope_kernel(
    k_ptr, ks_ptr, v_ptr, vs_ptr, pos_ptr, freq_ptr, ko_ptr, vo_ptr,
    H, T, scaling,
    sk_l, sk_h, sk_t,  # codes_k [L, H, T, d] uint8, last stride 1
    sks_l, sks_h, sks_r,  # k_scale [L, H, 2, d]: row 0 step, row 1 offset
    sv_l, sv_h, sv_t,  # codes_v
    svs_l, svs_h, svs_t,  # v_scale [L, H, T, 2G]: G steps, then G offsets
    so_l, so_h, so_t,  # k_out and v_out [L, H, T, d] (same strides), last stride 1
    HALF: tl.constexpr, GROUPS: tl.constexpr, GROUP_SIZE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    lh = tl.program_id(0).to(tl.int64)
    l = lh // H
    h = lh % H
    t = tl.program_id(1).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BT]
    j = tl.arange(0, BLOCK_HALF)  # [BH]
    t_mask = t < T
    j_mask = j < HALF
    mask = t_mask[:, None] & j_mask[None, :]

    cos, sin = _cos_sin(pos_ptr, freq_ptr, t, j, t_mask, j_mask, scaling)  # [BT, BH] fp32

    # keys: x = code * step[c] + offset[c], per channel c
    k_row = k_ptr + l * sk_l + h * sk_h + t[:, None] * sk_t
    ks = ks_ptr + l * sks_l + h * sks_h
    step1 = tl.load(ks + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    step2 = tl.load(ks + HALF + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    off1 = tl.load(ks + sks_r + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    off2 = tl.load(ks + sks_r + HALF + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    x1 = tl.load(k_row + j[None, :], mask=mask, other=0).to(tl.float32) * step1 + off1
    x2 = tl.load(k_row + HALF + j[None, :], mask=mask, other=0).to(tl.float32) * step2 + off2
    o_row = l * so_l + h * so_h + t[:, None] * so_t  # outputs may be strided views (cache slots)
    out_ty = ko_ptr.dtype.element_ty
    tl.store(ko_ptr + o_row + j[None, :], (x1 * cos - x2 * sin).to(out_ty), mask=mask)
    tl.store(ko_ptr + o_row + HALF + j[None, :], (x2 * cos + x1 * sin).to(out_ty), mask=mask)

    # values: x = code * step[t, c // GROUP_SIZE] + offset[t, c // GROUP_SIZE]
    v_row = v_ptr + l * sv_l + h * sv_h + t[:, None] * sv_t
    vs_row = vs_ptr + l * svs_l + h * svs_h + t[:, None] * svs_t
    for half in tl.static_range(2):
        c = j + half * HALF  # [BH] channel
        g = c // GROUP_SIZE
        vstep = tl.load(vs_row + g[None, :], mask=mask, other=0.0).to(tl.float32)
        voff = tl.load(vs_row + GROUPS + g[None, :], mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_row + c[None, :], mask=mask, other=0).to(tl.float32) * vstep + voff
        tl.store(vo_ptr + o_row + c[None, :], v.to(out_ty), mask=mask)


def launch_grouped_rope(
    codes_k: torch.Tensor,
    k_scale: torch.Tensor,
    codes_v: torch.Tensor,
    v_scale: torch.Tensor,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    scaling: float,
    k_out: torch.Tensor,
    v_out: torch.Tensor,
) -> None:
    """Write rope(dequant(codes_k)) into k_out [L, H, T, d] and dequant(codes_v) into v_out
    (same strides as k_out). Inputs already checked by `rope.dequant_rope`."""
    L, H, T, d = k_out.shape
    half = d // 2
    groups = v_scale.shape[-1] // 2
    block_half = triton.next_power_of_2(half)
    block_t = max(1, min(64, 2048 // block_half))  # ~2K elements per half-tile
    grid = (L * H, triton.cdiv(T, block_t))
    _grouped_rope_kernel[grid](
        codes_k, k_scale, codes_v, v_scale, positions, inv_freq, k_out, v_out,
        H, T, scaling,
        codes_k.stride(0), codes_k.stride(1), codes_k.stride(2),
        k_scale.stride(0), k_scale.stride(1), k_scale.stride(2),
        codes_v.stride(0), codes_v.stride(1), codes_v.stride(2),
        v_scale.stride(0), v_scale.stride(1), v_scale.stride(2),
        k_out.stride(0), k_out.stride(1), k_out.stride(2),
        HALF=half, GROUPS=groups, GROUP_SIZE=d // groups, BLOCK_T=block_t, BLOCK_HALF=block_half,
    )
