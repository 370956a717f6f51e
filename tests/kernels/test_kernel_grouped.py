"""Fused dequantize + RoPE of the grouped codecs (kvq*, ans*): the torch reference against an
independent decode written from the layout (quant.py), and the Triton kernel against the
reference, interpreted on CPU tensors and compiled on a CUDA GPU when one exists."""

import pytest
import torch
from kernel_factories import TOL, llama_inv_freq, needs_triton, positions

from chunkcache.kernels import GROUPED_CODECS, KernelInputError, apply_rope_reference, dequant_rope, rope_cos_sin


def make_grouped(L, H, T, d, groups, levels=16, seed=0):
    """Codes and fp16 scales in the grouped layout: (codes_k, k_scale [L,H,2,d], codes_v, v_scale [L,H,T,2G])."""
    g = torch.Generator().manual_seed(seed)
    ck = torch.randint(0, levels, (L, H, T, d), generator=g).to(torch.uint8)
    cv = torch.randint(0, levels, (L, H, T, d), generator=g).to(torch.uint8)
    k_scale = torch.stack([torch.rand(L, H, d, generator=g) * 0.2, torch.randn(L, H, d, generator=g) - 1.5], dim=2).half()
    v_scale = torch.cat([torch.rand(L, H, T, groups, generator=g) * 0.2, torch.randn(L, H, T, groups, generator=g)], dim=-1).half()
    return ck, k_scale, cv, v_scale


def decode_by_hand(ck, k_scale, cv, v_scale):
    """x = code * step + offset, channel by channel and group by group (no broadcasting tricks)."""
    L, H, T, d = ck.shape
    G = v_scale.shape[-1] // 2
    k = torch.empty(L, H, T, d)
    v = torch.empty(L, H, T, d)
    for c in range(d):
        k[..., c] = ck[..., c].float() * k_scale[:, :, 0, c, None].float() + k_scale[:, :, 1, c, None].float()
        gi = c // (d // G)
        v[..., c] = cv[..., c].float() * v_scale[..., gi].float() + v_scale[..., G + gi].float()
    return k, v


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_reference_equals_decode_then_rotate(groups):
    L, H, T, d = 2, 3, 11, 64
    ck, ks, cv, vs = make_grouped(L, H, T, d, groups)
    pos, inv_freq = positions(T, high=9000), llama_inv_freq(d)
    k_rot, v = dequant_rope(ck, ks, cv, vs, pos, inv_freq, 1.0, "kvq4", torch.float32, impl="reference")
    k_want, v_want = decode_by_hand(ck, ks, cv, vs)
    cos, sin = rope_cos_sin(pos, inv_freq, 1.0)
    torch.testing.assert_close(v, v_want, rtol=0, atol=1e-6)
    torch.testing.assert_close(k_rot, apply_rope_reference(k_want, cos, sin), rtol=1e-6, atol=1e-5)


def test_reference_writes_into_strided_cache_slots():
    L, H, T, d = 2, 2, 9, 32
    ck, ks, cv, vs = make_grouped(L, H, T, d, 2)
    pos, inv_freq = positions(T), llama_inv_freq(d)
    cache_k, cache_v = torch.zeros(L, H, 40, d), torch.zeros(L, H, 40, d)
    out = (cache_k[:, :, 5 : 5 + T], cache_v[:, :, 5 : 5 + T])
    dequant_rope(ck, ks, cv, vs, pos, inv_freq, 1.0, "ans16", torch.float32, impl="reference", out=out)
    want = dequant_rope(ck, ks, cv, vs, pos, inv_freq, 1.0, "ans16", torch.float32, impl="reference")
    torch.testing.assert_close(cache_k[:, :, 5 : 5 + T], want[0], rtol=0, atol=0)
    torch.testing.assert_close(cache_v[:, :, 5 : 5 + T], want[1], rtol=0, atol=0)
    assert cache_k[:, :, :5].abs().sum() == 0 and cache_v[:, :, 5 + T :].abs().sum() == 0


def test_launcher_checks_the_grouped_scales():
    L, H, T, d = 1, 2, 4, 16
    ck, ks, cv, vs = make_grouped(L, H, T, d, 2)
    pos, inv_freq = positions(T), llama_inv_freq(d)
    with pytest.raises(KernelInputError, match=r"k_scale: expected shape \[L, H, 2, d\]"):
        dequant_rope(ck, ks[:, :, :1], cv, vs, pos, inv_freq, 1.0, "kvq3", torch.float32)
    with pytest.raises(KernelInputError, match="v_scale: last dim 6 is not 2G"):
        dequant_rope(ck, ks, cv, torch.zeros(L, H, T, 6, dtype=torch.float16), pos, inv_freq, 1.0, "kvq3", torch.float32)
    with pytest.raises(KernelInputError, match="dtype torch.int8"):
        dequant_rope(ck.to(torch.int8), ks, cv, vs, pos, inv_freq, 1.0, "kvq3", torch.float32)


@needs_triton
@pytest.mark.parametrize("codec", GROUPED_CODECS)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_the_reference(codec, out_dtype, device):
    L, H, T, d = 2, 3, 70, 64  # a full block of tokens and a ragged one
    ck, ks, cv, vs = (t.to(device) for t in make_grouped(L, H, T, d, 1, seed=len(codec)))
    pos, inv_freq = positions(T, high=32_000).to(device), llama_inv_freq(d).to(device)
    args = (ck, ks, cv, vs, pos, inv_freq, 1.1, codec, out_dtype)
    got, want = dequant_rope(*args, impl="triton"), dequant_rope(*args, impl="reference")
    for g, w in zip(got, want):
        assert g.dtype == out_dtype and g.is_contiguous()
        torch.testing.assert_close(g, w, **TOL[out_dtype])


@needs_triton
@pytest.mark.parametrize("groups,d,T", [(2, 64, 1), (4, 32, 9), (1, 80, 5)])
def test_triton_value_groups_head_dims_and_strided_outputs(groups, d, T, device):
    L, H = 2, 2
    ck, ks, cv, vs = (t.to(device) for t in make_grouped(L, H, T, d, groups, levels=8, seed=T))
    pos, inv_freq = positions(T, start=100, seed=T).to(device), llama_inv_freq(d, 500000.0).to(device)
    cache_k, cache_v = (torch.zeros(L, H, T + 6, d, device=device) for _ in range(2))
    out = (cache_k[:, :, 3 : 3 + T], cache_v[:, :, 3 : 3 + T])
    dequant_rope(ck, ks, cv, vs, pos, inv_freq, 1.0, "kvq3", torch.float32, impl="triton", out=out)
    want = dequant_rope(ck, ks, cv, vs, pos, inv_freq, 1.0, "kvq3", torch.float32, impl="reference")
    torch.testing.assert_close(out[0], want[0], **TOL[torch.float32])
    torch.testing.assert_close(out[1], want[1], **TOL[torch.float32])
    assert cache_k[:, :, :3].abs().sum() == 0 and cache_v[:, :, 3 + T :].abs().sum() == 0
