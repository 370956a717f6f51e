"""token_deviation: the reference against a float64 computation, Triton (interpreted on CPU
tensors, compiled on a CUDA GPU when one exists) against the reference."""

import pytest
import torch
from kernel_factories import needs_triton

from chunkcache.kernels import token_deviation


def pair(H, T, d, dtypes, seed=0):
    g = torch.Generator().manual_seed(seed)
    fresh = torch.randn(H, T, d, generator=g)
    cached = fresh + 0.1 * torch.randn(H, T, d, generator=g)
    return fresh.to(dtypes[0]), cached.to(dtypes[1])


def test_reference_against_float64():
    fresh, cached = pair(3, 17, 64, (torch.float32, torch.float16))
    want = torch.stack([
        sum(((fresh[h, t].double() - cached[h, t].double()) ** 2).sum() for h in range(3))
        for t in range(17)
    ])
    got = token_deviation(fresh, cached, impl="reference")
    assert got.dtype == torch.float32 and got.shape == (17,)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


@needs_triton
@pytest.mark.parametrize("T", [1, 7, 129])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize(
    "H,dtypes",
    [(1, (torch.float32, torch.float32)), (3, (torch.float32, torch.float16)),
     (4, (torch.bfloat16, torch.bfloat16))],
)
def test_triton_matches_reference(T, d, H, dtypes, device):
    fresh, cached = (t.to(device) for t in pair(H, T, d, dtypes, seed=T))
    got = token_deviation(fresh, cached, impl="triton")
    assert got.dtype == torch.float32 and got.shape == (T,)
    # both accumulate in fp32, in a different order
    torch.testing.assert_close(got, token_deviation(fresh, cached, impl="reference"),
                               rtol=1e-5, atol=1e-6)


@needs_triton
def test_triton_on_a_slice_of_the_assembled_cache(device):
    """cache[:, a:b] of [H, N, d] has a head stride of N*d, not (b-a)*d."""
    cache = torch.randn(3, 50, 64, device=device)
    fresh = torch.randn(3, 20, 64, device=device)
    got = token_deviation(fresh, cache[:, 10:30], impl="triton")
    want = token_deviation(fresh, cache[:, 10:30].contiguous(), impl="reference")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
