"""A layer-by-layer view of a Hugging Face Llama-family model, built from its own modules.

Nothing is patched: we call the model's norms, projections, MLPs and rotary module ourselves so
that the engine decides which tokens run through which layer against which keys.
"""

from dataclasses import dataclass

import torch

from chunkcache.blending.attention import grouped_attention
from chunkcache.blending.mask import Stairs


@dataclass(frozen=True)
class ModelSpec:
    """Shapes and limits of the generator, read once from its config."""

    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int
    sliding_window: int | None
    scaling: float
    eos_token_ids: tuple[int, ...]


def _eos_ids(model, tokenizer) -> tuple[int, ...]:
    ids = set()
    for source in (model.generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    return tuple(sorted(int(i) for i in ids))


class Generator:
    """The model's modules, and the per-layer steps of a forward pass.

    `device` and `dtype` are the model's: every tensor of a request lives there (RoPE angles
    and logits stay float32). Hidden states are [T, D] (one sequence, no batch axis); queries
    [H, T, d]; keys and values [Hkv, T, d]. Keys come out of `qkv` BEFORE RoPE, so callers may
    cache them position-free.
    """

    def __init__(self, model, tokenizer, fingerprint: str):
        self.model = model
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        cfg = model.config
        core = model.model
        self.layers = core.layers
        self.embed_tokens = core.embed_tokens
        self.norm = core.norm
        self.lm_head = model.lm_head
        self.rotary = core.rotary_emb
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.spec = ModelSpec(
            model_type=cfg.model_type,
            n_layers=cfg.num_hidden_layers,
            n_heads=cfg.num_attention_heads,
            n_kv_heads=cfg.num_key_value_heads,
            head_dim=head_dim,
            hidden_size=cfg.hidden_size,
            vocab_size=cfg.vocab_size,
            max_positions=cfg.max_position_embeddings,
            sliding_window=window,
            scaling=float(self.layers[0].self_attn.scaling),
            eos_token_ids=_eos_ids(model, tokenizer),
        )
        first = next(model.parameters())
        self.dtype = first.dtype
        self.device = first.device

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin: [T, d] float32 from the model's own rotary module (rope_scaling included)."""
        probe = torch.empty(0, dtype=torch.float32, device=self.device)
        cos, sin = self.rotary(probe, positions.to(self.device, torch.int64)[None, :])
        return cos[0].to(torch.float32), sin[0].to(torch.float32)

    def rope_frequencies(self, positions: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(inv_freq [d/2] float32, attention_scaling) the model uses for `positions`.

        Runs the rotary module first so dynamic scaling has updated its frequencies.
        """
        self.rope(positions[-1:])
        return self.rotary.inv_freq.to(torch.float32), float(self.rotary.attention_scaling)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [T] int64 -> [T, D]."""
        return self.embed_tokens(ids)

    def qkv(self, layer: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pre-attention norm and projections. h: [T, D] -> q [H, T, d], k [Hkv, T, d] (pre-RoPE), v [Hkv, T, d]."""
        attn = self.layers[layer].self_attn
        x = self.layers[layer].input_layernorm(h)
        t, d = h.shape[0], self.spec.head_dim
        q = attn.q_proj(x).view(t, self.spec.n_heads, d).transpose(0, 1)  # [H, T, d]
        k = attn.k_proj(x).view(t, self.spec.n_kv_heads, d).transpose(0, 1)  # [Hkv, T, d]
        v = attn.v_proj(x).view(t, self.spec.n_kv_heads, d).transpose(0, 1)  # [Hkv, T, d]
        return q, k, v

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | Stairs | None,
                  causal: bool = False) -> torch.Tensor:
        """Scaled dot-product attention with GQA. q: [H, Tq, d]; k, v: [Hkv, Tk, d]; mask: [Tq, Tk] bool,
        `Stairs` (position-sorted queries and keys), or None with `causal` for a square block
        (query i sees keys 0..i, SDPA's maskless path). Returns [H, Tq, d]. See `grouped_attention`.
        """
        return grouped_attention(q, k, v, self.spec.scaling, mask, causal)

    def finish(self, layer: int, h: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """Output projection, residual, MLP. h: [T, D]; attn_out: [H, T, d] -> [T, D]."""
        block = self.layers[layer]
        t = h.shape[0]
        h = h + block.self_attn.o_proj(attn_out.transpose(0, 1).reshape(t, -1))
        return h + block.mlp(block.post_attention_layernorm(h))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h: [T, D] -> [T, V] float32."""
        return self.lm_head(self.norm(h)).to(torch.float32)
