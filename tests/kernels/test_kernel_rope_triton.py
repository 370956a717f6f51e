"""The Triton dequant+RoPE kernel against its torch reference: interpreted on CPU tensors, and
compiled on a CUDA GPU when one exists (the `device` fixture, conftest.py)."""

import pytest
import torch
from kernel_factories import TOL, llama_inv_freq, make_chunk, needs_triton, positions

from chunkcache.kernels import dequant_rope, rerotate

pytestmark = needs_triton

OUT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def on(device, *tensors):
    return tuple(None if t is None else t.to(device) for t in tensors)


def both(pk, ks, pv, vs, pos, inv_freq, scaling, codec, out_dtype, device):
    pk, ks, pv, vs, pos, inv_freq = on(device, pk, ks, pv, vs, pos, inv_freq)
    args = (pk, ks, pv, vs, pos, inv_freq, scaling, codec, out_dtype)
    return dequant_rope(*args, impl="triton"), dequant_rope(*args, impl="reference")


def assert_same(got, want, out_dtype):
    for g, w in zip(got, want):
        assert g.dtype == out_dtype and g.is_contiguous()
        torch.testing.assert_close(g, w, **TOL[out_dtype])


@pytest.mark.parametrize("codec", ["int8", "int4", "fp16", "bf16"])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_codecs_and_output_dtypes(codec, out_dtype, device):
    L, H, T, d = 2, 3, 70, 64  # 70 tokens: a full block and a ragged one
    pk, ks, pv, vs = make_chunk(codec, L, H, T, d)
    pos = positions(T, high=32_000)
    assert_same(*both(pk, ks, pv, vs, pos, llama_inv_freq(d), 1.1, codec, out_dtype, device), out_dtype)


@pytest.mark.parametrize("T", [1, 7, 129])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("codec", ["int4", "int8"])
def test_ragged_token_counts_and_head_dims(T, d, codec, device):
    L, H = 3, 2
    pk, ks, pv, vs = make_chunk(codec, L, H, T, d, seed=T)
    pos = positions(T, start=500, seed=T)
    out = both(pk, ks, pv, vs, pos, llama_inv_freq(d, 500000.0), 1.0, codec, torch.float32, device)
    assert out[0][0].shape == (L, H, T, d)
    assert_same(*out, torch.float32)


def test_head_dim_not_a_power_of_two(device):
    L, H, T, d = 1, 2, 9, 80  # half = 40, padded to a 64-wide tile
    pk, ks, pv, vs = make_chunk("int4", L, H, T, d)
    assert_same(*both(pk, ks, pv, vs, positions(T), llama_inv_freq(d), 1.0, "int4",
                      torch.float16, device), torch.float16)


def test_layer_views_of_a_stored_kv_tensor_need_no_copy(device):
    """kv[:, 0] and kv[:, 1] of a stored [L, 2, H, T, d] have a strided layer dim."""
    L, H, T, d = 2, 2, 11, 64
    pk, ks, pv, vs, pos, f = on(device, *make_chunk("int4", L, H, T, d), positions(T), llama_inv_freq(d))
    kv = torch.stack((pk, pv), dim=1)  # [L, 2, H, T, d/2]
    assert not kv[:, 0].is_contiguous()
    want = dequant_rope(pk, ks, pv, vs, pos, f, 1.0, "int4", torch.float32, impl="reference")
    for impl in ("triton", "reference"):
        got = dequant_rope(kv[:, 0], ks, kv[:, 1], vs, pos, f, 1.0, "int4", torch.float32,
                           impl=impl)
        assert_same(got, want, torch.float32)


@pytest.mark.parametrize("dtype", OUT_DTYPES)
@pytest.mark.parametrize("T", [1, 129])
def test_rerotate(dtype, T, device):
    H, d = 3, 128
    k, delta, f = on(device, torch.randn(2, H, T, d).to(dtype), positions(T, seed=3) - 2048, llama_inv_freq(d))
    got = rerotate(k, delta, f, impl="triton")
    assert got.dtype == dtype and got.shape == k.shape
    torch.testing.assert_close(got, rerotate(k, delta, f, impl="reference"), **TOL[dtype])


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize("codec", ["int8", "int4", "fp16", "fp32"])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_out_writes_into_slots_of_a_working_cache(impl, codec, out_dtype, device):
    """out= views [L, H, T, d] of a [L, H, capacity, d] cache: written in place, nothing else touched."""
    L, H, T, d, cap, at = 2, 3, 21, 64, 40, 9
    pk, ks, pv, vs, pos, f = on(device, *make_chunk(codec, L, H, T, d), positions(T), llama_inv_freq(d))
    want = dequant_rope(pk, ks, pv, vs, pos, f, 1.0, codec, out_dtype, impl="reference")
    k_cache = torch.full((L, H, cap, d), 7.0, dtype=out_dtype, device=device)
    v_cache = torch.full((L, H, cap, d), 7.0, dtype=out_dtype, device=device)
    out = (k_cache[:, :, at : at + T], v_cache[:, :, at : at + T])
    got = dequant_rope(pk, ks, pv, vs, pos, f, 1.0, codec, out_dtype, impl=impl, out=out)
    assert got[0].data_ptr() == out[0].data_ptr()
    torch.testing.assert_close(k_cache[:, :, at : at + T], want[0], **TOL[out_dtype])
    torch.testing.assert_close(v_cache[:, :, at : at + T], want[1], **TOL[out_dtype])
    for cache in (k_cache, v_cache):
        assert (cache[:, :, :at] == 7).all() and (cache[:, :, at + T :] == 7).all()
