"""Scores and budgets of selective recompute: which context tokens, how many, in which layers.

The question probe scores a context token by how much the question attends to it in the deep
layers (each layer's share normalised, then summed). Everything here is a pure function of
tensors on any device; the engine computes the attention, this module turns it into choices.
"""

import math

import torch


def context_attention(probs: torch.Tensor, ctx: slice) -> torch.Tensor:
    """The question's attention share over the context keys, one layer.

    probs: [H, S, Tk] softmax rows of S question tokens over all Tk visible keys; ctx: the
    context's key columns. Returns [N] float32 summing to 1 (uniform if the share is zero).
    """
    share = probs[:, :, ctx].to(torch.float32).mean(dim=(0, 1))  # [N]
    total = share.sum()
    # No host branch on `total` (a device sync in every scoring layer on a GPU).
    uniform = torch.full_like(share, 1.0 / max(1, share.numel()))
    return torch.where(total > 0, share / total.clamp_min(torch.finfo(torch.float32).tiny), uniform)


def probe_layers(n_layers: int, start: float) -> range:
    """Layers whose attention the probe sums: [floor(start * L), L), never empty."""
    first = min(n_layers - 1, max(0, math.floor(start * n_layers)))
    return range(first, n_layers)


def smooth_within(scores: torch.Tensor, lengths: list[int], window: int) -> torch.Tensor:
    """Moving average of `scores` over `window` tokens, never across a passage boundary.

    scores: [N]; lengths: passage lengths summing to N. A token's score becomes the mean over
    its window clipped to its passage, so recomputed tokens come in runs. window <= 1: unchanged.
    """
    if window <= 1 or scores.numel() == 0:
        return scores
    half = window // 2
    out = torch.empty_like(scores, dtype=torch.float32)
    start = 0
    for n in lengths:
        part = scores[start : start + n].to(torch.float32)  # [n]
        csum = torch.cat((part.new_zeros(1), part.cumsum(0)))  # [n+1]
        idx = torch.arange(n, device=scores.device)
        lo, hi = (idx - half).clamp_min(0), (idx + half + 1).clamp_max(n)
        out[start : start + n] = (csum[hi] - csum[lo]) / (hi - lo)
        start += n
    return out


def rank_tokens(scores: torch.Tensor, forced: torch.Tensor | None = None) -> torch.Tensor:
    """Every context index, best first: forced tokens (in index order), then by score descending.

    scores: [N]; forced: [F] int64. Returns [N] int64, a permutation of 0..N-1 (stable on ties).
    """
    key = scores.to(torch.float32).clone()
    if forced is not None and forced.numel():
        key[forced] = math.inf
    return torch.sort(key, descending=True, stable=True).indices


def gradual_budgets(n: int, ratio: float, n_layers: int, start: float) -> list[int]:
    """Per-layer token budgets for `n_layers` layers: linear from start*r*N down to (2-start)*r*N.

    The mean over layers is r*N (less where the first layers would exceed N and are clipped),
    so gradual filtering costs what a fixed ratio costs. start = 1 is the fixed budget.
    Non-increasing by construction; start must be in [1, 2].
    """
    if not 1.0 <= start <= 2.0:
        raise ValueError(f"gradual start must be in [1, 2], got {start}")
    if n_layers <= 0:
        return []
    base = ratio * n
    out = []
    for layer in range(n_layers):
        frac = layer / (n_layers - 1) if n_layers > 1 else 0.5
        factor = start - 2.0 * (start - 1.0) * frac  # start .. 2-start, mean 1
        out.append(min(n, math.ceil(factor * base - 1e-9)) if base > 0 else 0)
    return out


def attention_probs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention that also returns its probabilities (for the few question rows that score).

    q: [H, T, d]; k, v: [Hkv, Tk, d]; mask: [T, Tk] bool.
    Returns out [H, T, d] (q's dtype) and probs [H, T, Tk] float32.
    """
    h, t, d = q.shape
    n_kv = k.shape[0]
    rep = h // n_kv
    # The grouped heads are folded into the rows (see attention.grouped_attention): no K/V copy.
    qf = q.to(torch.float32).reshape(n_kv, rep * t, d)
    scores = torch.matmul(qf, k.to(torch.float32).transpose(-1, -2)) * scale  # [Hkv, rep*T, Tk]
    if mask is not None:
        scores = scores.masked_fill(~mask.repeat(rep, 1)[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, v.to(torch.float32)).view(h, t, d)
    return out.to(q.dtype), probs.view(h, t, -1)
