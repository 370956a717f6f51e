"""CacheBlend token selection: which context tokens to recompute.

The deviation of a token is how far its cached K or V at the check layer is from the fresh
value computed with the other chunks in view. High-deviation tokens are the ones whose cached
state missed the cross-chunk attention; recomputing them restores most of it.
"""

import math

import torch

from chunkcache import kernels


def token_deviation(fresh: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
    """Per-token squared deviation summed over heads and dims (fp32 accumulate).

    fresh, cached: [H, T, d]. Returns [T] float32. Runs the fused kernel on CUDA tensors.
    """
    return kernels.token_deviation(fresh, cached)


def budget(num_tokens: int, ratio: float) -> int:
    """Tokens to recompute for `ratio` of `num_tokens`: ceil(r * N), 0 only when r == 0."""
    return min(num_tokens, math.ceil(ratio * num_tokens - 1e-9)) if ratio > 0 else 0


def adaptive_budget(deviation: torch.Tensor, coverage: float, max_ratio: float) -> int:
    """Smallest k whose top-k tokens hold `coverage` of the total deviation, capped at max_ratio.

    deviation: [T]. Lets easy queries (little cross-chunk interaction) recompute less.
    """
    n = deviation.numel()
    if n == 0 or coverage <= 0:
        return 0
    ordered = deviation.sort(descending=True).values
    total = ordered.sum()
    if total <= 0:
        return 0
    share = ordered.cumsum(0) / total  # [T]
    k = int(torch.searchsorted(share, torch.tensor(coverage, dtype=share.dtype, device=share.device)).item()) + 1
    return min(k, budget(n, max_ratio), n)


def chunk_starts_forced(chunk_lengths: list[int], first_k: int) -> torch.Tensor:
    """Indices of the first `first_k` tokens of every chunk in the concatenated context. [F] int64."""
    out, offset = [], 0
    for n in chunk_lengths:
        out.extend(range(offset, offset + min(first_k, n)))
        offset += n
    return torch.tensor(out, dtype=torch.int64)
