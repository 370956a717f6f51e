"""The kernel micro-benchmark runs and reports every op (tiny shapes); on CUDA it times Triton too."""

from dataclasses import asdict

import pytest
import torch

from chunkcache.bench.kernels import KernelTiming, run_kernel_bench
from chunkcache.bench.report import format_kernels


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_bench_reports_every_op(device):
    timings = run_kernel_bench(device, layers=2, heads=1, head_dim=64, chunks=2,
                               tokens_per_chunk=8, repeats=2)
    assert all(isinstance(t, KernelTiming) for t in timings)
    ops = ["dequant_rope[int8]", "dequant_rope[int4]", "dequant_rope[fp16]", "rerotate", "scatter_rows", "token_deviation"]
    impls = ["reference"] if device == "cpu" else ["reference", "triton"]
    assert [(t.impl, t.op) for t in timings] == [(impl, op) for impl in impls for op in ops]
    assert all(0 < t.median_ms <= t.p95_ms for t in timings)
    assert "| dequant_rope[int4] |" in "\n".join(format_kernels([asdict(t) for t in timings]))
