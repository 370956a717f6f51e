"""Triton kernel behind `rope.dequant_rope` and `rope.rerotate`; imported only when a launcher
picks Triton, so `chunkcache.kernels` works without Triton. Launchers check all inputs first.

One program = one (layer, head) and BLOCK_T tokens, full head_dim as two halves, so
rotate_half is two loads and no shuffle: o1 = x1 cos - x2 sin, o2 = x2 cos + x1 sin.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .codecs import CodecLayout, Packing, Scales


def _kernel_codec(codec: CodecLayout | None) -> int:
    """The kernel's CODEC constant: 0 float keys as they are (None: already-rotated keys of any
    float dtype), 1 int8, 2 int4 (two nibbles a byte). Grouped codecs have their own kernel."""
    if codec is None or codec.scales is Scales.NONE:
        return 0
    if codec.scales is Scales.SYMMETRIC:
        return 2 if codec.packing is Packing.NIBBLES else 1
    raise ValueError(f"launch_rope: codec {codec.name} is grouped; use grouped_triton.launch_grouped_rope")


@triton.jit
def _cos_sin(pos_ptr, freq_ptr, t, j, t_mask, j_mask, scaling):
    # t: [BT] token indices, j: [BH] pair indices -> cos, sin [BT, BH] of pos[t] * freq[j], in fp32
    # (positions as fp32, never bf16), times the rope attention scaling
    pos = tl.load(pos_ptr + t, mask=t_mask, other=0).to(tl.float32)
    freq = tl.load(freq_ptr + j, mask=j_mask, other=0.0)
    angle = pos[:, None] * freq[None, :]
    return tl.cos(angle) * scaling, tl.sin(angle) * scaling


@triton.jit
def _load_q(row_ptr, e, mask, CODEC: tl.constexpr):
    # row_ptr: [BT, 1] row starts, e: [BH] element index along head_dim -> fp32 [BT, BH]
    if CODEC == 2:  # int4: element e is nibble e % 2 of byte e // 2, stored as q + 8
        b = tl.load(row_ptr + e[None, :] // 2, mask=mask, other=0).to(tl.int32)
        q = ((b >> ((e[None, :] % 2) * 4)) & 15) - 8
    else:
        q = tl.load(row_ptr + e[None, :], mask=mask, other=0)
    return q.to(tl.float32)


@triton.jit
def _dequant_rope_kernel(
    k_ptr, ks_ptr, v_ptr, vs_ptr, pos_ptr, freq_ptr, ko_ptr, vo_ptr,
    H, T, scaling,
    sk_l, sk_h, sk_t,  # packed_k [L, H, T, d or d/2], last stride 1
    sks_l, sks_h,  # k_scale [L, H, 1, d]
    sv_l, sv_h, sv_t,  # packed_v
    svs_l, svs_h, svs_t,  # v_scale [L, H, T, 1]
    so_l, so_h, so_t,  # k_out and v_out [L, H, T, d] (same strides), last stride 1
    HALF: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_HALF: tl.constexpr,
    CODEC: tl.constexpr, DO_V: tl.constexpr,
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

    k_row = k_ptr + l * sk_l + h * sk_h + t[:, None] * sk_t
    x1 = _load_q(k_row, j, mask, CODEC)
    x2 = _load_q(k_row, j + HALF, mask, CODEC)
    if CODEC != 0:  # per-channel key scale
        ks = ks_ptr + l * sks_l + h * sks_h
        x1 = x1 * tl.load(ks + j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
        x2 = x2 * tl.load(ks + j + HALF, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    o_row = l * so_l + h * so_h + t[:, None] * so_t  # outputs may be strided views (cache slots)
    out_ty = ko_ptr.dtype.element_ty
    tl.store(ko_ptr + o_row + j[None, :], (x1 * cos - x2 * sin).to(out_ty), mask=mask)
    tl.store(ko_ptr + o_row + HALF + j[None, :], (x2 * cos + x1 * sin).to(out_ty), mask=mask)

    if DO_V:
        v_row = v_ptr + l * sv_l + h * sv_h + t[:, None] * sv_t
        v1 = _load_q(v_row, j, mask, CODEC)
        v2 = _load_q(v_row, j + HALF, mask, CODEC)
        if CODEC != 0:  # per-token value scale
            vs = tl.load(vs_ptr + l * svs_l + h * svs_h + t * svs_t, mask=t_mask, other=0.0)
            v1 = v1 * vs.to(tl.float32)[:, None]
            v2 = v2 * vs.to(tl.float32)[:, None]
        tl.store(vo_ptr + o_row + j[None, :], v1.to(out_ty), mask=mask)
        tl.store(vo_ptr + o_row + HALF + j[None, :], v2.to(out_ty), mask=mask)


def launch_rope(
    packed_k: torch.Tensor,
    k_scale: torch.Tensor | None,
    positions: torch.Tensor,
    inv_freq: torch.Tensor,
    scaling: float,
    codec: CodecLayout | None,
    k_out: torch.Tensor,
    *,
    packed_v: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    v_out: torch.Tensor | None = None,
) -> None:
    """Write rope(dequant(packed_k)) into k_out [L, H, T, d] and, when packed_v is given,
    dequant(packed_v) into v_out (same strides as k_out). Inputs already checked by the launcher."""
    L, H, T, d = k_out.shape
    half = d // 2
    block_half = triton.next_power_of_2(half)
    block_t = max(1, min(64, 2048 // block_half))  # ~2K elements per half-tile
    do_v = packed_v is not None
    # Unused pointers get a real tensor so the signature stays one kernel; never loaded.
    ks = k_scale if k_scale is not None else packed_k
    v = packed_v if do_v else packed_k
    vs = v_scale if v_scale is not None else ks
    vo = v_out if do_v else k_out
    grid = (L * H, triton.cdiv(T, block_t))
    _dequant_rope_kernel[grid](
        packed_k, ks, v, vs, positions, inv_freq, k_out, vo,
        H, T, scaling,
        packed_k.stride(0), packed_k.stride(1), packed_k.stride(2),
        ks.stride(0), ks.stride(1),
        v.stride(0), v.stride(1), v.stride(2),
        vs.stride(0), vs.stride(1), vs.stride(2),
        k_out.stride(0), k_out.stride(1), k_out.stride(2),
        HALF=half, BLOCK_T=block_t, BLOCK_HALF=block_half,
        CODEC=_kernel_codec(codec), DO_V=do_v,
    )
