"""The kernel micro-benchmark runs and reports every op (tiny shapes); on CUDA it times Triton too."""

from chunkcache.kernels.bench import KernelTiming, format_timings, run_kernel_bench


def test_bench_reports_every_op(device):
    timings = run_kernel_bench(device.type, layers=2, heads=1, head_dim=64, chunks=2,
                               tokens_per_chunk=8, repeats=2)
    assert all(isinstance(t, KernelTiming) for t in timings)
    ops = ["dequant_rope[int8]", "dequant_rope[int4]", "dequant_rope[fp16]", "rerotate", "scatter_rows", "token_deviation"]
    impls = ["reference"] if device.type == "cpu" else ["reference", "triton"]
    assert [(t.impl, t.op) for t in timings] == [(impl, op) for impl in impls for op in ops]
    assert all(0 < t.median_ms <= t.p95_ms for t in timings)
    assert "dequant_rope[int4]" in format_timings(timings)
