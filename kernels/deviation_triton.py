"""Triton kernel behind `deviation.token_deviation`; imported only when a launcher picks
Triton. One program = BLOCK_T tokens, looping over heads; full head_dim per load.

No `tl.sum` / `tl.zeros`: they are `@triton.jit` functions of Triton's own library, decorated
when triton is first imported. torch._dynamo (pulled in by transformers) imports triton early,
so in a test process they are usually decorated before TRITON_INTERPRET=1 is set, and an
interpreted kernel cannot call them. `tl.full` and `tl.reduce` with our own combine function
are builtins and behave the same compiled or interpreted.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


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
    acc = tl.full([BLOCK_T, BLOCK_D], 0.0, tl.float32)  # not tl.zeros, see top
    for _ in range(0, H):  # sum over heads elementwise, reduce over d once at the end
        f = tl.load(f_rows, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(c_rows, mask=mask, other=0.0).to(tl.float32)
        acc += (f - c) * (f - c)
        f_rows += sf_h  # pointer arithmetic is 64-bit: no h * stride overflow
        c_rows += sc_h
    tl.store(out_ptr + t, tl.reduce(acc, 1, _add), mask=t_mask)  # = tl.sum(acc, 1), see top


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
