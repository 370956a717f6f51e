"""The working KV cache of one request: rotated keys and values at absolute positions."""

import torch

from chunkcache.kernels import scatter_rows
from chunkcache.model import ModelSpec


class WorkingKV:
    """Preallocated per-request cache.

    k, v: [layers, kv_heads, capacity, head_dim]; keys are stored rotated at `pos`.
    pos: [capacity] int64 absolute positions; seg: [capacity] int64 segment ids (0 = shared).
    `ape_slots` marks a slot range [start, end) whose keys are attended as APE's context part.
    Every tensor lives on `device`.
    """

    def __init__(self, spec: ModelSpec, capacity: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
        self.spec = spec
        self.capacity = capacity
        shape = (spec.n_layers, spec.n_kv_heads, capacity, spec.head_dim)
        # Uninitialised: a slot is always written (reserve, then write in every layer) before
        # any attention reads it, and zero-filling ~25 MB per request cost tens of ms.
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.pos = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.seg = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.length = 0
        # The shared prefix in slots [0, prefix_len) and its rotated queries [L, H, P, d]: with
        # them a prefill right after the prefix is a causal square that needs no mask.
        self.prefix_len = 0
        self.prefix_q: torch.Tensor | None = None
        self.ape_slots: tuple[int, int] | None = None

    def reserve(self, positions: torch.Tensor, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Claim the next len(positions) slots; returns their indices [T] int64."""
        n = positions.numel()
        if self.length + n > self.capacity:
            raise RuntimeError(f"working KV overflow: {self.length} + {n} > capacity {self.capacity}")
        slots = torch.arange(self.length, self.length + n, device=self.pos.device)
        self.pos[slots] = positions
        self.seg[slots] = 0 if segments is None else segments
        self.length += n
        return slots

    def write(self, layer: int, slots: torch.Tensor, k_rot: torch.Tensor, v: torch.Tensor) -> None:
        """k_rot, v: [Hkv, T, d] at `slots` [T] (the scatter kernel on CUDA, its reference on CPU).

        `slots` come from `reserve` (unique, in range), so the launcher's host-side index check,
        a device sync per layer, is skipped."""
        scatter_rows(self.k[layer], k_rot.to(self.k.dtype), slots, check_index=False)
        scatter_rows(self.v[layer], v.to(self.v.dtype), slots, check_index=False)

    def write_block(self, layer: int, start: int, k_rot: torch.Tensor, v: torch.Tensor) -> None:
        """One layer's k_rot, v: [Hkv, T, d] into the contiguous slots [start, start+T)."""
        t = k_rot.shape[1]
        self.k[layer, :, start : start + t] = k_rot
        self.v[layer, :, start : start + t] = v

    def write_span(self, start: int, k_rot: torch.Tensor, v: torch.Tensor) -> None:
        """Bulk copy of every layer: k_rot, v: [L, Hkv, T, d] into slots [start, start+T)."""
        t = k_rot.shape[2]
        self.k[:, :, start : start + t] = k_rot
        self.v[:, :, start : start + t] = v

    def keys(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Filled part: k, v [Hkv, length, d]."""
        return self.k[layer, :, : self.length], self.v[layer, :, : self.length]
