"""Attention masks built from absolute positions, never from block alignment.

A query at position p sees exactly the keys at positions <= p (and, with segments, only keys of
its own segment or of the shared segment 0). Public CacheBlend code aligns a short query block
bottom-right against all keys, which lets a recomputed token in the middle of the context see
keys after it; building the mask from positions closes that hole.
"""

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Stairs:
    """The position mask of queries and keys that are both sorted by position, in blocks.

    With keys in slot order sorted by position, the keys a query at position p sees are a
    prefix of the slots: [0, searchsorted(k_pos, p, right)). A block of consecutive queries
    therefore needs only the keys up to its last query's end, and a mask only over those.
    Attention then costs about half the dense rectangle (the part under the staircase).

    blocks: (query start, query end, key end) per block; masks: per block [rep*(b-a), end] bool,
    the block's rows tiled once per query head sharing a KV head (see `grouped_attention`), or
    None when the block sees every key before `end`.
    """

    blocks: tuple[tuple[int, int, int], ...]
    masks: tuple[torch.Tensor | None, ...]


def stairs(q_pos: torch.Tensor, k_pos: torch.Tensor, rep: int, block: int = 64) -> Stairs | None:
    """Stairs of q_pos [Tq] over k_pos [Tk] (int64), or None when either is not sorted ascending
    (then use `position_mask`). rep: query heads per KV head. One host sync per call."""
    if q_pos.numel() == 0 or k_pos.numel() == 0:
        return None
    if bool((q_pos[1:] < q_pos[:-1]).any()) or bool((k_pos[1:] < k_pos[:-1]).any()):
        return None
    t = q_pos.numel()
    starts = list(range(0, t, block))
    lasts = torch.tensor([min(t, a + block) - 1 for a in starts], device=q_pos.device)
    ends = torch.searchsorted(k_pos, q_pos[lasts], right=True).tolist()
    firsts = torch.searchsorted(k_pos, q_pos[torch.tensor(starts, device=q_pos.device)], right=True).tolist()
    blocks, masks = [], []
    for a, end, first in zip(starts, ends, firsts):
        b = min(t, a + block)
        blocks.append((a, b, end))
        # Every query of the block sees keys [0, first); only a later key can be hidden from some.
        masks.append(None if first == end else position_mask(q_pos[a:b], k_pos[:end]).repeat(rep, 1))
    return Stairs(tuple(blocks), tuple(masks))
