"""Tiny inputs for the kernel tests: an independent int8/int4 encoder of the storage layouts
(so the kernels' decoders are checked against an encoder written from the spec, not against
themselves), Llama inverse frequencies, and the Triton skip mark."""

from __future__ import annotations

import os

import pytest
import torch

from chunkcache.kernels import triton_available

# The second pytest process of test_kernel_cuda.py, where Triton compiles for the GPU.
CUDA_RUN = os.environ.get("CHUNKCACHE_KERNEL_RUN") == "cuda"
NO_GPU = "no CUDA GPU on this machine (torch.cuda.is_available() is False)"

needs_triton = pytest.mark.skipif(
    not triton_available(), reason="triton does not import (pip install -e '.[triton]')"
)

KEY_GROUP = 2  # keys: one scale per channel, i.e. the absmax over tokens -> [L, H, 1, d]
VALUE_GROUP = 3  # values: one scale per token, the absmax over channels -> [L, H, T, 1]


def quantize(x: torch.Tensor, codec: str, group_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [L, H, T, d] fp32 -> (stored, fp16 scale) in the int8 or int4 layout."""
    qmax = {"int8": 127, "int4": 7}[codec]
    scale = (x.abs().amax(dim=group_dim, keepdim=True) / qmax).to(torch.float16)
    q = (x / scale.float().clamp_min(1e-8)).round().clamp(-qmax, qmax).to(torch.int32)
    if codec == "int8":
        return q.to(torch.int8), scale
    u = (q + 8).to(torch.uint8)  # [L, H, T, d] in [1, 15]
    return u[..., 0::2] | (u[..., 1::2] << 4), scale  # element 2i low nibble, 2i+1 high


def make_chunk(codec: str, L: int, H: int, T: int, d: int, seed: int = 0):
    """Stored K/V of one chunk: (packed_k, k_scale, packed_v, v_scale)."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(L, H, T, d, generator=g)
    v = torch.randn(L, H, T, d, generator=g)
    if codec in ("int8", "int4"):
        pk, ks = quantize(k, codec, KEY_GROUP)
        pv, vs = quantize(v, codec, VALUE_GROUP)
        return pk, ks, pv, vs
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[codec]
    return k.to(dtype), None, v.to(dtype), None


def llama_inv_freq(d: int, theta: float = 10000.0) -> torch.Tensor:
    """[d/2] float32, plain RoPE."""
    return 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))


def positions(T: int, start: int = 0, seed: int = 0, high: int = 4096) -> torch.Tensor:
    """[T] int64 distinct-ish target positions, not sorted (the kernels must not assume so)."""
    g = torch.Generator().manual_seed(seed)
    return start + torch.randint(0, high, (T,), generator=g)


# Triton (interpreter) against the torch reference, per output dtype: both compute in fp32;
# they differ by cos/sin ulps and, in bf16, by the interpreter's truncating fp32->bf16 cast
# (a real GPU rounds to nearest even), i.e. at most one ulp of the output dtype.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
}
