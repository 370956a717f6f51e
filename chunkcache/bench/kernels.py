"""Micro-benchmark of the kernels on one assembled prompt: `chunks` chunks of
`tokens_per_chunk` tokens each, N = chunks * tokens_per_chunk context tokens.

What one timed run covers, per op:
- dequant_rope[codec]: one call per chunk (as the assembler does), [L, H, Tc, d] each.
- rerotate: one call on all context keys [L, H, N, d].
- scatter_rows: CacheBlend's overwrite, K and V of every layer: 2L calls of
  ceil(0.15 N) rows into [H, N, d].
- token_deviation: one call at the check layer, [H, N, d].
The reference runs on any device; Triton is timed too on CUDA when it imports (device="auto"
picks the GPU when there is one).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from chunkcache.kernels import dequant_rope, rerotate, scatter_rows, token_deviation, triton_available
from chunkcache.stats import percentile

RECOMPUTE_RATIO = 0.15  # CacheBlend's published default


@dataclass(frozen=True)
class KernelTiming:
    op: str  # e.g. "dequant_rope[int8]"
    impl: str  # "reference" | "triton"
    median_ms: float
    p95_ms: float
    shape: str  # what one timed run covers


def _time_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()  # warm-up; Triton compiles here
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), percentile(times, 0.95)


def _chunk_inputs(codec: str, L: int, H: int, T: int, d: int, dev: torch.device):
    """Random stored K/V of one chunk in `codec` layout: (packed_k, k_scale, packed_v, v_scale)."""
    if codec in ("fp16", "bf16"):
        dtype = torch.float16 if codec == "fp16" else torch.bfloat16
        return (torch.randn(L, H, T, d, device=dev, dtype=dtype), None,
                torch.randn(L, H, T, d, device=dev, dtype=dtype), None)
    if codec == "int8":
        k = torch.randint(-127, 128, (L, H, T, d), device=dev, dtype=torch.int8)
        v = torch.randint(-127, 128, (L, H, T, d), device=dev, dtype=torch.int8)
    else:  # int4: [L, H, T, d/2] uint8
        k = torch.randint(0, 256, (L, H, T, d // 2), device=dev, dtype=torch.uint8)
        v = torch.randint(0, 256, (L, H, T, d // 2), device=dev, dtype=torch.uint8)
    k_scale = torch.rand(L, H, 1, d, device=dev).to(torch.float16) / 127
    v_scale = torch.rand(L, H, T, 1, device=dev).to(torch.float16) / 127
    return k, k_scale, v, v_scale


def run_kernel_bench(
    device: str = "auto",
    layers: int = 30,
    heads: int = 3,
    head_dim: int = 64,
    chunks: int = 10,
    tokens_per_chunk: int = 256,
    repeats: int = 20,
) -> list[KernelTiming]:
    """Time every op's reference (and its Triton kernel on CUDA); defaults are the default
    model's KV shape (SmolLM2-135M: 30 layers, 3 KV heads, head_dim 64) and 10 passages.
    device: "auto" = the CUDA GPU when there is one (Triton and reference), else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    L, H, d, Tc = layers, heads, head_dim, tokens_per_chunk
    N = chunks * Tc
    out_dtype = torch.float32 if dev.type == "cpu" else torch.float16
    out_name = str(out_dtype).removeprefix("torch.")
    impls = ["reference"] + (["triton"] if dev.type == "cuda" and triton_available() else [])

    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d))
    positions = [torch.arange(c * Tc, (c + 1) * Tc, device=dev) for c in range(chunks)]
    keys = torch.randn(L, H, N, d, device=dev, dtype=out_dtype)
    delta = torch.full((N,), 7, device=dev, dtype=torch.int64)
    cache = torch.randn(L, 2, H, N, d, device=dev, dtype=out_dtype)
    M = math.ceil(RECOMPUTE_RATIO * N)
    index = torch.randperm(N, device=dev)[:M].sort().values
    rows = torch.randn(H, M, d, device=dev, dtype=out_dtype)
    fresh = torch.randn(H, N, d, device=dev, dtype=out_dtype)

    timings: list[KernelTiming] = []
    for impl in impls:
        for codec in ("int8", "int4", "fp16"):
            stored = [_chunk_inputs(codec, L, H, Tc, d, dev) for _ in range(chunks)]

            def run(stored=stored, codec=codec, impl=impl) -> None:
                for (k, ks, v, vs), pos in zip(stored, positions):
                    dequant_rope(k, ks, v, vs, pos, inv_freq, 1.0, codec, out_dtype, impl=impl)

            med, p95 = _time_ms(run, repeats, dev)
            timings.append(KernelTiming(f"dequant_rope[{codec}]", impl, med, p95,
                                        f"{chunks} x [{L}, {H}, {Tc}, {d}] -> {out_name}"))

        def run_rerotate(impl=impl) -> None:
            rerotate(keys, delta, inv_freq, impl=impl)

        def run_scatter(impl=impl) -> None:
            for layer in range(L):
                for kv in (0, 1):
                    scatter_rows(cache[layer, kv], rows, index, impl=impl)

        def run_deviation(impl=impl) -> None:
            token_deviation(fresh, cache[0, 1], impl=impl)

        for op, fn, shape in (
            ("rerotate", run_rerotate, f"[{L}, {H}, {N}, {d}] {out_name}"),
            ("scatter_rows", run_scatter, f"{2 * L} x [{H}, {M} of {N}, {d}] {out_name}"),
            ("token_deviation", run_deviation, f"[{H}, {N}, {d}] {out_name}"),
        ):
            med, p95 = _time_ms(fn, repeats, dev)
            timings.append(KernelTiming(op, impl, med, p95, shape))
    return timings

