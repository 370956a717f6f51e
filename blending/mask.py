"""Attention masks built from absolute positions, never from block alignment.

A query at position p sees exactly the keys at positions <= p (and, with segments, only keys of
its own segment or of the shared segment 0). Public CacheBlend code aligns a short query block
bottom-right against all keys, which lets a recomputed token in the middle of the context see
keys after it; building the mask from positions closes that hole.
"""

import torch

SHARED_SEGMENT = 0


def position_mask(
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    q_seg: torch.Tensor | None = None,
    k_seg: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Boolean mask, True where query i may attend key j.

    q_pos: [Tq] int64; k_pos: [Tk] int64; q_seg/k_seg: [Tq]/[Tk] int64 segment ids where keys of
    segment 0 are visible to every query (the shared prefix); window: sliding-window size
    (Mistral) or None. Returns [Tq, Tk] bool.
    """
    allowed = k_pos[None, :] <= q_pos[:, None]  # [Tq, Tk]
    if window is not None:
        allowed &= k_pos[None, :] > q_pos[:, None] - window
    if q_seg is not None and k_seg is not None:
        same = (k_seg[None, :] == q_seg[:, None]) | (k_seg[None, :] == SHARED_SEGMENT)
        allowed &= same
    return allowed
