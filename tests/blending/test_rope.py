import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from chunkcache.blending import apply_rope
from chunkcache.kernels import rerotate, rope_cos_sin


def _hf_rope(theta=10000.0, d=64, scaling=None):
    cfg = LlamaConfig(hidden_size=d * 4, num_attention_heads=4, head_dim=d, max_position_embeddings=8192, rope_theta=theta)
    if scaling:
        cfg.rope_parameters = {"rope_theta": theta, **scaling}
    return LlamaRotaryEmbedding(cfg)


def _cos_sin(rot, pos):
    """cos, sin [T, d] as `Generator.rope` takes them: from the model's rotary module."""
    cos, sin = rot(torch.empty(0), pos[None])
    return cos[0], sin[0]


def test_kernel_cos_sin_are_one_half_of_hugging_face_tables():
    rot = _hf_rope(theta=1e5)
    pos = torch.tensor([0, 1, 7, 100, 4000, 8191])
    cos_ref, sin_ref = _cos_sin(rot, pos)
    cos, sin = rope_cos_sin(pos, rot.inv_freq, rot.attention_scaling)  # [T, d/2]: HF repeats it over both halves
    torch.testing.assert_close(torch.cat((cos, cos), -1), cos_ref)
    torch.testing.assert_close(torch.cat((sin, sin), -1), sin_ref)


def test_apply_rope_matches_hugging_face():
    rot = _hf_rope()
    pos = torch.arange(5, 37)
    x = torch.randn(1, 3, 32, 64)
    cos, sin = rot(x, pos[None])
    ref, _ = apply_rotary_pos_emb(x, x, cos, sin)
    torch.testing.assert_close(apply_rope(x, *_cos_sin(rot, pos)), ref, rtol=1e-5, atol=1e-5)


def test_rerotation_from_p_to_q_equals_rope_at_q():
    rot = _hf_rope(theta=1e5)
    k_pre = torch.randn(3, 50, 64)
    p = torch.arange(30, 80)
    q = torch.arange(1000, 1050)
    at_p = apply_rope(k_pre, *_cos_sin(rot, p))
    at_q = apply_rope(k_pre, *_cos_sin(rot, q))
    moved = rerotate(at_p, q - p, rot.inv_freq)
    torch.testing.assert_close(moved, at_q, rtol=1e-4, atol=1e-4)
    # backwards as well (negative deltas)
    torch.testing.assert_close(rerotate(at_q, p - q, rot.inv_freq), at_p, rtol=1e-4, atol=1e-4)


def test_rope_scaling_variants_use_the_models_frequencies():
    rot = _hf_rope(scaling={"rope_type": "linear", "factor": 4.0})
    pos = torch.arange(0, 16)
    cos_ref, _ = _cos_sin(rot, pos)
    cos, _ = rope_cos_sin(pos, rot.inv_freq, rot.attention_scaling)
    torch.testing.assert_close(torch.cat((cos, cos), -1), cos_ref)
    plain = _hf_rope()
    assert not torch.allclose(rot.inv_freq, plain.inv_freq)


def test_bf16_keys_rotate_with_fp32_angles():
    rot = _hf_rope(theta=1e5)
    k = torch.randn(2, 4, 64)
    pos = torch.tensor([60000, 60001, 60002, 60003])
    exact = apply_rope(k, *_cos_sin(rot, pos))
    low = apply_rope(k.to(torch.bfloat16), *_cos_sin(rot, pos)).float()
    # one bf16 rounding of the inputs and outputs, not an angle error
    assert (low - exact).abs().max() < 0.05
