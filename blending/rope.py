"""Rotary position embeddings as pure functions (Llama "rotate_half" convention).

`cos`/`sin` [T, d] come from the model's own rotary module (`Generator.rope`, so every
`rope_scaling` variant the model supports is honoured), its angles in fp32: angles from bf16
positions are wrong at long offsets. Placing stored pre-RoPE keys (fused with dequantization) and
moving already-rotated keys by a delta are `chunkcache.kernels.dequant_rope` and `rerotate`, whose
angle table from `inv_freq` is `chunkcache.kernels.rope_cos_sin`.
"""

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` ([..., T, d]) by the angles of cos/sin ([T, d]); computed in fp32.

    For pre-RoPE keys this places them at the positions cos/sin were built for.
    """
    xf = x.to(torch.float32)
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)
