"""The torch references: RoPE against Hugging Face's Llama code, re-rotation composes, and the
int8/int4 decoders against the storage layout. No Triton needed."""

import pytest
import torch
from kernel_factories import (
    KEY_GROUP,
    VALUE_GROUP,
    make_chunk,
    needs_triton,
    positions,
    quantize,
)
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from chunkcache.kernels import dequant_rope, dequantize_reference, rerotate

ROPE_CONFIGS = {
    "default": dict(rope_type="default", rope_theta=10000.0),
    "llama3": dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=1024),
    "yarn": dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                 original_max_position_embeddings=1024),  # attention_scaling != 1
}


def hf_rope(rope: str, d: int) -> LlamaRotaryEmbedding:
    config = LlamaConfig(hidden_size=4 * d, num_attention_heads=4, head_dim=d,
                         max_position_embeddings=4096, rope_parameters=ROPE_CONFIGS[rope])
    return LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("rope", sorted(ROPE_CONFIGS))
@pytest.mark.parametrize("d", [64, 128])
def test_rope_matches_hugging_face(rope, d):
    L, H, T = 2, 3, 37
    emb = hf_rope(rope, d)
    k, _, v, _ = make_chunk("fp32", L, H, T, d)
    pos = positions(T, high=100_000)  # long offsets: angles must stay fp32
    cos, sin = emb(k, pos[None, :])  # [1, T, d] each, HF's own (incl. attention_scaling)
    _, want = apply_rotary_pos_emb(k, k, cos, sin)  # [L, H, T, d] (L plays the batch)

    got_k, got_v = dequant_rope(k, None, v, None, pos, emb.inv_freq, emb.attention_scaling,
                                "fp32", torch.float32, impl="reference")
    torch.testing.assert_close(got_k, want)
    torch.testing.assert_close(got_v, v, rtol=0, atol=0)
    assert got_v.data_ptr() != v.data_ptr() and got_v.is_contiguous()  # a new tensor, always
    if rope == "yarn":
        assert emb.attention_scaling != 1.0  # the case that needs the multiplier


@pytest.mark.parametrize("impl", ["reference", pytest.param("triton", marks=needs_triton)])
def test_rerotate_moves_keys_from_p_to_q(impl):
    """rerotate(rope(x, p), q - p) == rope(x, q), with yarn's attention_scaling applied once."""
    L, H, T, d = 2, 2, 33, 64
    emb = hf_rope("yarn", d)
    k, _, v, _ = make_chunk("fp32", L, H, T, d)
    p, q = positions(T, seed=1), positions(T, seed=2)  # some deltas negative
    args = (emb.inv_freq, emb.attention_scaling, "fp32", torch.float32)
    at_p, _ = dequant_rope(k, None, v, None, p, *args)
    at_q, _ = dequant_rope(k, None, v, None, q, *args)
    moved = rerotate(at_p, q - p, emb.inv_freq, impl=impl)
    # fp32 angles up to 4096 rad carry ~2.4e-4 rad of rounding each (p, q - p, q).
    torch.testing.assert_close(moved, at_q, rtol=0, atol=2e-3)  # measured 5e-4
    # [H, T, d] works too and keeps its shape and dtype
    moved3 = rerotate(at_p[0].to(torch.bfloat16), q - p, emb.inv_freq, impl=impl)
    assert moved3.shape == (H, T, d) and moved3.dtype == torch.bfloat16
    torch.testing.assert_close(moved3.float(), at_q[0], rtol=2e-2, atol=5e-2)


def test_int4_nibble_order():
    """Byte 0x9F holds element 2i = 0xF - 8 = 7 (low nibble) and 2i+1 = 0x9 - 8 = 1 (high)."""
    packed = torch.tensor([[0x9F, 0x08]], dtype=torch.uint8)  # [1, d/2 = 2]
    one = torch.ones(1, 1, dtype=torch.float16)
    assert dequantize_reference(packed, one, "int4").tolist() == [[7, 1, 0, -8]]
    scale = torch.tensor([[0.5]], dtype=torch.float16)
    assert dequantize_reference(packed, scale, "int4").tolist() == [[3.5, 0.5, 0.0, -4.0]]


@pytest.mark.parametrize("codec,qmax", [("int8", 127), ("int4", 7)])
def test_dequantize_inverts_the_spec_encoder(codec, qmax):
    x = torch.randn(2, 3, 19, 64)
    for group in (KEY_GROUP, VALUE_GROUP):
        stored, scale = quantize(x, codec, group)
        assert scale.shape == ((2, 3, 1, 64) if group == KEY_GROUP else (2, 3, 19, 1))
        back = dequantize_reference(stored, scale, codec)
        # rounding error <= half a step; fp16 scales add a relative 2^-11 on top
        bound = scale.float() * (0.5 + qmax * 2**-11) + 1e-6
        assert ((back - x).abs() <= bound).all()


def test_dequant_rope_reference_equals_dequant_then_rope():
    """The fused op equals dequantize, then HF RoPE at positions (int8 keys, yarn)."""
    L, H, T, d = 2, 2, 9, 64
    emb = hf_rope("yarn", d)
    pk, ks, pv, vs = make_chunk("int8", L, H, T, d)
    pos = positions(T)
    k, v = dequant_rope(pk, ks, pv, vs, pos, emb.inv_freq, emb.attention_scaling, "int8",
                        torch.float32, impl="reference")
    cos, sin = emb(k, pos[None, :])
    keys = dequantize_reference(pk, ks, "int8")
    want, _ = apply_rotary_pos_emb(keys, keys, cos, sin)
    torch.testing.assert_close(k, want)
    torch.testing.assert_close(v, dequantize_reference(pv, vs, "int8"))
