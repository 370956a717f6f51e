"""Triton kernel behind `deviation.token_deviation`; imported only when a launcher picks
Triton. One program = BLOCK_T tokens, looping over heads; full head_dim per load."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _token_deviation_kernel(
    f_ptr, c_ptr, out_ptr,
    H, T, D,
    sf_h, sf_t,  # fresh [H, T, d], last stride 1
    sc_h, sc_t,  # cached [H, T, d], last stride 1
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)  # [BT]
    e = tl.arange(0, BLOCK_D)  # [BD]
    t_mask = t < T
    mask = t_mask[:, None] & (e < D)[None, :]
    f_rows = f_ptr + t[:, None] * sf_t + e[None, :]  # [BT, BD] pointers into head 0
    c_rows = c_ptr + t[:, None] * sc_t + e[None, :]
    acc = tl.zeros([BLOCK_T], dtype=tl.float32)
    for _ in range(0, H):
        f = tl.load(f_rows, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_rows, mask=mask, other=0.0).to(tl.float32)
        acc += tl.sum((f - c) * (f - c), axis=1)
        f_rows += sf_h  # pointer arithmetic is 64-bit: no h * stride overflow
        c_rows += sc_h
    tl.store(out_ptr + t, acc, mask=t_mask)


def launch_token_deviation(fresh: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
    """Inputs already checked by `token_deviation`. Returns [T] float32."""
    H, T, d = fresh.shape
    out = torch.empty((T,), dtype=torch.float32, device=fresh.device)
    block_d = triton.next_power_of_2(d)
    block_t = max(1, min(64, 4096 // block_d))
    _token_deviation_kernel[(triton.cdiv(T, block_t),)](
        fresh, cached, out, H, T, d,
        fresh.stride(0), fresh.stride(1), cached.stride(0), cached.stride(1),
        BLOCK_T=block_t, BLOCK_D=block_d,
    )
    return out
