"""Launcher input checks (every kernel, no Triton needed) and the dispatch rule."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from kernel_factories import llama_inv_freq, make_chunk, needs_triton, positions

from chunkcache.kernels import (
    KernelInputError,
    choose_impl,
    dequant_rope,
    rerotate,
    scatter_rows,
    token_deviation,
    triton_available,
)

L, H, T, D = 2, 3, 5, 64


def call(stored="int8", **override):
    """dequant_rope on a valid int8 (or `stored`) chunk, with some arguments replaced."""
    codec = stored
    pk, ks, pv, vs = make_chunk(stored, L, H, T, D)
    args = dict(packed_k=pk, k_scale=ks, packed_v=pv, v_scale=vs, positions=positions(T),
                inv_freq=llama_inv_freq(D), attention_scaling=1.0, codec=codec,
                out_dtype=torch.float16)
    args.update(override)
    return dequant_rope(**args, impl="reference")


def transposed(shape, dtype=torch.float32):
    """A tensor of `shape` whose last dim has a non-unit stride."""
    return torch.zeros(*shape[:-2], shape[-1], shape[-2], dtype=dtype).transpose(-1, -2)


I8 = dict(dtype=torch.int8)
F16 = dict(dtype=torch.float16)
REJECTED = {
    "transposed": (dict(packed_k=transposed((L, H, T, D), torch.int8)),
                   r"packed_k: shape \(2, 3, 5, 64\) with strides \(960, 320, 1, 5\)"),
    "every other": (dict(packed_v=torch.zeros(L, H, T, 2 * D, **I8)[..., ::2]),
                    r"packed_v: .*strides \(1920, 640, 128, 2\)"),
    "k_scale shape": (dict(k_scale=torch.ones(L, H, T, D, **F16)),
                      r"k_scale: expected shape \[L, H, 1, d\] = \(2, 3, 1, 64\), "
                      r"got \(2, 3, 5, 64\)"),
    "v_scale shape": (dict(v_scale=torch.ones(L, H, 1, D, **F16)),
                      r"v_scale: expected shape \[L, H, T, 1\] = \(2, 3, 5, 1\)"),
    "v_scale dtype": (dict(v_scale=torch.ones(L, H, T, 1, dtype=torch.int32)),
                      r"v_scale: dtype torch.int32"),
    "k dtype": (dict(packed_k=torch.zeros(L, H, T, D, dtype=torch.uint8)),
                r"packed_k: dtype torch.uint8, expected one of torch.int8"),
    "v tokens": (dict(packed_v=torch.zeros(L, H, T + 1, D, **I8)),
                 r"packed_v: expected shape .* = \(2, 3, 5, 64\), got \(2, 3, 6, 64\)"),
    "pos dtype": (dict(positions=torch.arange(T, dtype=torch.int32)),
                  r"positions: dtype torch.int32, expected one of torch.int64"),
    "pos length": (dict(positions=torch.arange(T + 2)),
                   r"positions: expected shape \[T\] = \(5\), got \(7,\)"),
    "pos device": (dict(positions=torch.arange(T, device="meta")),
                   r"positions is on meta, the other inputs on cpu"),
    "freq dtype": (dict(inv_freq=llama_inv_freq(D).double()), r"inv_freq: dtype torch.float64"),
    "freq length": (dict(inv_freq=llama_inv_freq(2 * D)),
                    r"inv_freq: expected shape \[d/2\] = \(32\), got \(64,\)"),
    "scaling tensor": (dict(attention_scaling=torch.tensor(1.0)),
                       r"attention_scaling: expected a float, got Tensor"),
    "scaling nan": (dict(attention_scaling=float("nan")),
                    r"attention_scaling: expected a finite float"),
    "codec": (dict(codec="int2"), r"codec='int2': expected one of"),
    "out dtype": (dict(out_dtype=torch.int8), r"out_dtype=torch.int8"),
    "out not a pair": (dict(out=torch.zeros(L, H, T, D, **F16)), r"out: expected a \(k_out, v_out\) tuple"),
    "out shape": (dict(out=(torch.zeros(L, H, T + 1, D, **F16),) * 2),
                  r"out\[0\]: expected shape \[L, H, T, d\] = \(2, 3, 5, 64\), got \(2, 3, 6, 64\)"),
    "out dtype mismatch": (dict(out=(torch.zeros(L, H, T, D), torch.zeros(L, H, T, D))),
                           r"out\[0\]: dtype torch.float32, expected one of torch.float16"),
    "out strides": (dict(out=(torch.zeros(L, H, T, D, **F16), torch.zeros(L, H, 9, D, **F16)[:, :, :T])),
                    r"out: k_out strides \(960, 320, 64, 1\) differ from v_out strides \(1728, 576, 64, 1\)"),
    "out aliasing": (dict(out=(torch.zeros(1, 1, 1, D, **F16).expand(L, H, T, D),) * 2),
                     r"out\[0\]: shape \(2, 3, 5, 64\) with strides \(0, 0, 0, 1\) overlaps itself"),
}


@pytest.mark.parametrize("override,match", REJECTED.values(), ids=REJECTED.keys())
def test_dequant_rope_rejects(override, match):
    with pytest.raises(KernelInputError, match=match):
        call(**override)


def test_dequant_rope_rejects_scales_for_float_codecs_and_odd_head_dims():
    with pytest.raises(KernelInputError, match="codec='fp16' has no scales"):
        call("fp16", k_scale=torch.ones(L, H, 1, D, dtype=torch.float16))
    k = torch.zeros(L, H, T, 63, dtype=torch.float16)
    with pytest.raises(KernelInputError, match="head_dim 63 is odd"):
        call("fp16", packed_k=k, packed_v=k, inv_freq=llama_inv_freq(62))


def test_rerotate_rejects():
    f, delta = llama_inv_freq(D), torch.zeros(T, dtype=torch.int64)
    with pytest.raises(KernelInputError, match=r"k: shape \(3, 5, 64\) with strides"):
        rerotate(transposed((H, T, D)), delta, f)
    with pytest.raises(KernelInputError, match=r"k: expected shape \[L, H, T, d\] or \[H"):
        rerotate(torch.zeros(T, D), delta, f)
    with pytest.raises(KernelInputError, match="delta_positions: dtype torch.float32"):
        rerotate(torch.zeros(H, T, D), delta.float(), f)
    with pytest.raises(KernelInputError, match=r"k: dtype torch.int8"):
        rerotate(torch.zeros(H, T, D, dtype=torch.int8), delta, f)


def test_scatter_rows_rejects():
    N, M = 10, 3
    cache, rows, index = torch.zeros(H, N, D), torch.ones(H, M, D), torch.tensor([0, 4, 9])
    cases = [
        ((cache, rows.half(), index), r"rows: dtype torch.float16, expected one of torch.f"),
        ((cache, torch.ones(H + 1, M, D), index),
         r"rows: expected shape \[H, M, d\] = \(3, \*, 64\), got \(4, 3, 64\)"),
        ((cache, transposed((H, M, D)), index), r"rows: shape \(3, 3, 64\) with strides"),
        ((cache, rows, index.int()), r"index: dtype torch.int32"),
        ((cache, rows, torch.tensor([0, 4])), r"index: expected shape \[M\] = \(3\), got \(2,\)"),
        ((cache, rows, torch.tensor([0, 4, 10])), r"index: values in \[0, 10\], the cache has N"),
        ((cache, rows, torch.tensor([-1, 4, 9])), r"index: values in \[-1, 9\]"),
        ((cache, rows, torch.tensor([4, 0, 4])), r"index: 1 duplicate token indices among M=3"),
        ((torch.zeros(1, N, D).expand(H, N, D), rows, index), r"cache: .* overlaps itself"),
        ((torch.zeros(1, 1, H, N, D), rows, index),
         r"cache: expected \[H, N, d\] or \[L, H, N, d\], got \(1, 1, 3, 10, 64\)"),
        ((cache.int(), rows.int(), index), r"cache: dtype torch.int32"),
    ]
    for args, match in cases:
        with pytest.raises(KernelInputError, match=match):
            scatter_rows(*args)
    assert cache.count_nonzero() == 0  # nothing was written by a rejected call
    scatter_rows(cache, rows[:, :0], index[:0])  # M = 0: nothing to do


def test_token_deviation_rejects():
    fresh = torch.zeros(H, T, D)
    with pytest.raises(KernelInputError, match=r"cached: .* = \(3, 5, 64\), got \(3, 6, 64\)"):
        token_deviation(fresh, torch.zeros(H, T + 1, D))
    with pytest.raises(KernelInputError, match=r"fresh: shape \(3, 5, 64\) with strides"):
        token_deviation(transposed((H, T, D)), fresh)
    with pytest.raises(KernelInputError, match=r"cached: dtype torch.int8"):
        token_deviation(fresh, fresh.to(torch.int8))


def test_dispatch_rule():
    cpu = torch.device("cpu")
    assert choose_impl("auto", cpu) == "reference"
    assert choose_impl("reference", torch.device("cuda")) == "reference"
    with pytest.raises(KernelInputError, match=r"impl='cuda': expected one of"):
        choose_impl("cuda", cpu)
    if triton_available():  # "auto" on a CUDA tensor; no GPU needed to decide
        assert choose_impl("auto", torch.device("cuda")) == "triton"


@needs_triton
def test_forced_triton_on_cpu_uses_the_interpreter():
    assert os.environ["TRITON_INTERPRET"] == "1"
    assert choose_impl("triton", torch.device("cpu")) == "triton"


def test_kernels_work_without_triton():
    """A fresh interpreter: importing and the CPU path never import triton, and with triton
    unimportable the reference still runs and impl='triton' says why it cannot."""
    script = textwrap.dedent("""
        import sys
        import torch
        import chunkcache.kernels as K
        k = torch.randn(1, 2, 3, 8)
        out, _ = K.dequant_rope(k, None, k, None, torch.arange(3), torch.ones(4), 1.0,
                                "fp32", torch.float32)
        assert out.shape == (1, 2, 3, 8)
        assert "triton" not in sys.modules, "the CPU path imported triton"
        sys.modules["triton"] = None  # from here on `import triton` raises ImportError
        assert not K.triton_available()
        try:
            K.token_deviation(k[0], k[0], impl="triton")
        except K.KernelInputError as exc:
            assert "triton does not import" in str(exc), exc
        else:
            raise AssertionError("impl='triton' ran without triton")
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"



@needs_triton
def test_kernels_run_interpreted_after_an_early_triton_import():
    """In a full test run transformers pulls in torch._dynamo, which imports triton before
    this folder sets TRITON_INTERPRET: Triton's own @jit library (tl.sum, tl.zeros...) is then
    in compiled mode and an interpreted kernel cannot call it. Guard every kernel against that
    in a fresh process."""
    script = textwrap.dedent("""
        import os
        import torch
        import triton  # noqa: F401  (before the variable, as in a full pytest run)
        os.environ["TRITON_INTERPRET"] = "1"
        import chunkcache.kernels as K

        def same(a, b):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

        pk = torch.randint(0, 256, (1, 2, 9, 32), dtype=torch.uint8)
        ks, vs = torch.rand(1, 2, 1, 64).half(), torch.rand(1, 2, 9, 1).half()
        pos, f = torch.arange(9), torch.rand(32)
        args = (pk, ks, pk, vs, pos, f, 1.0, "int4", torch.float32)
        for a, b in zip(K.dequant_rope(*args, impl="triton"), K.dequant_rope(*args)):
            same(a, b)
        x = torch.randn(2, 9, 64)
        same(K.rerotate(x, pos, f, impl="triton"), K.rerotate(x, pos, f))
        same(K.token_deviation(x, x + 1, impl="triton"), K.token_deviation(x, x + 1))
        a, b = torch.zeros(2, 9, 64), torch.zeros(2, 9, 64)
        K.scatter_rows(a, x[:, :3], pos[:3] + 2, impl="triton")
        K.scatter_rows(b, x[:, :3], pos[:3] + 2)
        same(a, b)
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
