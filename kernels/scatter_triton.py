"""Triton kernel behind `scatter.scatter_rows`; imported only when a launcher picks Triton.
One program = one (leading, head) pair and BLOCK_M rows."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _scatter_rows_kernel(
    cache_ptr, rows_ptr, idx_ptr,
    H, M, D,
    sc_b, sc_h, sc_n,  # cache [B, H, N, d], last stride 1
    sr_b, sr_h, sr_m,  # rows [B, H, M, d], last stride 1
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    m = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM]
    e = tl.arange(0, BLOCK_D)  # [BD]
    m_mask = m < M
    mask = m_mask[:, None] & (e < D)[None, :]
    n = tl.load(idx_ptr + m, mask=m_mask, other=0)  # [BM] int64
    x = tl.load(rows_ptr + b * sr_b + h * sr_h + m[:, None] * sr_m + e[None, :], mask=mask)
    tl.store(cache_ptr + b * sc_b + h * sc_h + n[:, None] * sc_n + e[None, :], x, mask=mask)


def launch_scatter_rows(cache: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> None:
    """Inputs already checked by `scatter_rows`."""
    cache4 = cache if cache.dim() == 4 else cache.unsqueeze(0)  # [B, H, N, d]
    rows4 = rows if rows.dim() == 4 else rows.unsqueeze(0)  # [B, H, M, d]
    B, H, _, d = cache4.shape
    M = rows4.shape[2]
    block_d = triton.next_power_of_2(d)
    block_m = max(1, min(64, 4096 // block_d))
    grid = (B * H, triton.cdiv(M, block_m))
    _scatter_rows_kernel[grid](
        cache4, rows4, index, H, M, d,
        cache4.stride(0), cache4.stride(1), cache4.stride(2),
        rows4.stride(0), rows4.stride(1), rows4.stride(2),
        BLOCK_M=block_m, BLOCK_D=block_d,
    )
