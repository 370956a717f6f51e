"""Tensor moves between chunkcache's KV layout and vLLM-CPU's paged KV cache (no vLLM import).

vLLM-CPU's per-layer cache is [num_blocks, Hkv, block_size, 2 * d]: in each block and head, the
keys, then the values (vllm/v1/attention/backends/cpu_attn.py, `forward`), see `kv_views`. Keys
are stored after RoPE, as in chunkcache's chain entries; per-chunk entries keep keys before RoPE and are
rotated to their place on the way in (`chunkcache.kernels.dequant_rope`).
"""

import torch

from chunkcache.errors import ConfigError


def slots(block_ids: list[int], block_size: int, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block index and offset of prompt tokens [start, end) of a request holding `block_ids`."""
    pos = torch.arange(start, end)
    table = torch.as_tensor(block_ids, dtype=torch.int64)
    if end > len(block_ids) * block_size:
        raise ConfigError(f"tokens up to {end} need {-(-end // block_size)} blocks of {block_size}; the request holds {len(block_ids)}")
    return table[pos // block_size], pos % block_size  # [T], [T]


def kv_views(cache: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's paged cache [B, H, bs, 2d] -> (keys [B, H, d, bs], values [B, H, bs, d]), views.

    The "vec" kernels keep each block's keys transposed (dimension-major: element (token t, dim j)
    at j * bs + t) and its values token-major, keys first (measured against Hugging Face's cache).
    """
    if cache.dim() != 4 or cache.shape[-1] != 2 * head_dim:
        raise ConfigError(f"expected vLLM-CPU's paged KV layout [blocks, kv_heads, block_size, 2*{head_dim}], got {tuple(cache.shape)}")
    B, H, bs, _ = cache.shape
    halves = cache.view(B, H, 2, bs * head_dim)
    return halves[:, :, 0].view(B, H, head_dim, bs), halves[:, :, 1].view(B, H, bs, head_dim)


def write(cache: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """k, v: [H, T, d] (one layer, rotated keys) into token slots (blocks[T], offsets[T])."""
    keys, values = kv_views(cache, k.shape[-1])
    keys[blocks, :, :, offsets] = k.transpose(0, 1).to(cache.dtype)  # [T, H, d]
    values[blocks, :, offsets] = v.transpose(0, 1).to(cache.dtype)


def read(cache: torch.Tensor, blocks: torch.Tensor, offsets: torch.Tensor, head_dim: int) -> torch.Tensor:
    """-> [2, H, T, d] (rotated keys, values) of one layer's token slots."""
    keys, values = kv_views(cache, head_dim)
    return torch.stack((keys[blocks, :, :, offsets], values[blocks, :, offsets])).transpose(1, 2)  # [2, H, T, d]


def check_layout(dtype: torch.dtype, head_dim: int) -> None:
    """The layout above is that of vLLM-CPU's "vec" attention kernels; refuse the others
    (AMX for bf16, "vec16" for head sizes not a multiple of 32; cpu_attn.py `_get_attn_isa`)."""
    amx = dtype == torch.bfloat16 and torch.cpu._is_amx_tile_supported()
    if amx or head_dim % 32:
        raise ConfigError(f"the chunkcache connector writes vLLM-CPU's 'vec' KV layout; this engine ({dtype}, head size "
                          f"{head_dim}{', AMX' if amx else ''}) uses another. Run float32, or bfloat16 without AMX.")


def inv_freq(hf_config) -> torch.Tensor:
    """[d/2] float32 inverse frequencies of plain RoPE ("default" rope type), from the model config."""
    rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ConfigError(f"the chunkcache connector re-positions keys with plain RoPE; this model uses rope_type {kind!r}")
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    d = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
    return 1.0 / (float(theta) ** (torch.arange(0, d, 2, dtype=torch.float32) / d))


def unrotate(k: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Keys rotated at `positions` ([..., T, d]) -> keys before RoPE (rotation by -positions), fp32."""
    from chunkcache.kernels import apply_rope_reference, rope_cos_sin

    cos, sin = rope_cos_sin(-positions, freqs, 1.0)
    return apply_rope_reference(k, cos, sin)
