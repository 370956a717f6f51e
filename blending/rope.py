"""Rotary position embeddings as pure functions (Llama "rotate_half" convention).

Angles are always computed in fp32 from int64/fp32 positions: angles from bf16 positions are
wrong at long offsets. `cos`/`sin` come from the model's own rotary module (so every
`rope_scaling` variant the model supports is honoured) or from `rope_cos_sin` below.
Moving already-rotated keys by a delta is `chunkcache.kernels.rerotate`.
"""

import torch


def rope_cos_sin(
    inv_freq: torch.Tensor, positions: torch.Tensor, attention_scaling: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for `positions`.

    inv_freq: [d/2] float32; positions: [T] int64 (may be negative: a delta).
    Returns cos, sin: [T, d] float32, each half duplicated as Hugging Face does.
    """
    angles = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]  # [T, d/2]
    emb = torch.cat((angles, angles), dim=-1)  # [T, d]
    return emb.cos() * attention_scaling, emb.sin() * attention_scaling


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` ([..., T, d]) by the angles of cos/sin ([T, d]); computed in fp32.

    For pre-RoPE keys this places them at the positions cos/sin were built for.
    """
    xf = x.to(torch.float32)
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
