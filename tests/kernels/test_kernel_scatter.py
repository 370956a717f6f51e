"""scatter_rows: the reference's semantics, and the Triton kernel (interpreted on CPU tensors,
compiled on a CUDA GPU when one exists) against it."""

import pytest
import torch
from kernel_factories import needs_triton

from chunkcache.kernels import scatter_rows

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def inputs(lead, H, N, M, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    cache = torch.randn(*lead, H, N, d, generator=g).to(dtype)
    rows = torch.randn(*lead, H, M, d, generator=g).to(dtype)
    index = torch.randperm(N, generator=g)[:M]  # unique, unsorted
    return cache, rows, index


def test_reference_semantics():
    cache, rows, index = inputs((), 2, 12, 3, 64, torch.float32)
    before = cache.clone()
    scatter_rows(cache, rows, index, impl="reference")
    for m, n in enumerate(index.tolist()):
        assert torch.equal(cache[:, n], rows[:, m])
    untouched = torch.ones(12, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(cache[:, untouched], before[:, untouched])


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M", [1, 7, 129])
@pytest.mark.parametrize("d", [64, 128])
def test_triton_matches_reference(dtype, M, d, device):
    lead = (2,) if M == 7 else ()  # [L, H, N, d] and [H, N, d]
    cache, rows, index = (t.to(device) for t in inputs(lead, 3, 150, M, d, dtype, seed=M))
    want = cache.clone()
    scatter_rows(want, rows, index, impl="reference")
    scatter_rows(cache, rows, index, impl="triton")
    assert torch.equal(cache, want)  # a copy: bit-exact


@needs_triton
@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize("check_index", [True, False])
def test_writes_through_a_view_of_the_assembled_cache(impl, check_index, device):
    """kv[:, 0] of an assembled [L, 2, H, N, d] is a strided view; writes land in kv."""
    L, H, N, M, d = 2, 2, 40, 9, 64
    kv = torch.randn(L, 2, H, N, d, device=device)
    values_before = kv[:, 1].clone()
    _, rows, index = (t.to(device) for t in inputs((L,), H, N, M, d, torch.float32))
    scatter_rows(kv[:, 0], rows, index, impl=impl, check_index=check_index)
    assert torch.equal(kv[:, 0][:, :, index], rows)
    assert torch.equal(kv[:, 1], values_before)
    scatter_rows(kv[1, 1, :, 10:30], rows[1, :, :5], torch.arange(5, device=device), impl=impl,
                 check_index=check_index)  # a slice
    assert torch.equal(kv[1, 1, :, 10:15], rows[1, :, :5])
