"""Pure tensor functions of chunk blending: positions, masks, selection, attention merge. No I/O."""

from chunkcache.blending.attention import grouped_attention
from chunkcache.blending.mask import Stairs, position_mask, stairs
from chunkcache.blending.merge import ape_merge, attention_lse
from chunkcache.blending.score import (
    attention_probs,
    context_attention,
    gradual_budgets,
    probe_layers,
    rank_tokens,
    smooth_within,
)
from chunkcache.blending.rope import apply_rope, rotate_half
from chunkcache.blending.select import (
    adaptive_budget,
    budget,
    chunk_starts_forced,
    token_deviation,
)

__all__ = [
    "Stairs",
    "grouped_attention",
    "stairs",
    "attention_probs",
    "context_attention",
    "gradual_budgets",
    "probe_layers",
    "rank_tokens",
    "smooth_within",
    "adaptive_budget",
    "ape_merge",
    "apply_rope",
    "attention_lse",
    "budget",
    "chunk_starts_forced",
    "position_mask",
    "rotate_half",
    "token_deviation",
]
