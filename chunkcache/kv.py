"""KV caches of the query path: the shared prefix's, computed once, and each request's working cache."""

from dataclasses import dataclass

import torch

from chunkcache.kernels import scatter_rows
from chunkcache.model import ModelSpec


@dataclass(frozen=True)
class PrefixKV:
    """The shared prefix's cache, computed once. k (rotated), v: [L, Hkv, P, d]; ids: its tokens;
    q: its rotated queries [L, H, P, d] (so later prefills attend as a causal square, maskless)."""

    ids: tuple[int, ...]
    k: torch.Tensor
    v: torch.Tensor
    q: torch.Tensor

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ParallelSpan:
    """APE's contexts in a working cache: slots [start, end), every chunk at the same positions
    after the prefix, attended apart from the other slots with `temperature` on their logits and
    `scale` on their weight (`BlendConfig.ape_temperature`, `ape_scale`; see `layout.Parallel`)."""

    start: int
    end: int
    temperature: float
    scale: float


class WorkingKV:
    """Preallocated per-request cache.

    k, v: [layers, kv_heads, capacity, head_dim]; keys are stored rotated at `pos`.
    pos: [capacity] int64 absolute positions; seg: [capacity] int64 segment ids (0 = shared).
    Every tensor lives on `device`. Fixed at construction, read by the attention layout
    (`layout.py`), never set by anyone else:
      prefix    the shared prefix, written into slots [0, P) here (None: no shared prefix, as
                while the prefix itself is computed); its queries let a prefill right after it
                run as causal squares without a mask;
      parallel  APE's span (None: every slot is attended by position, the usual causal cache).
    """

    def __init__(self, spec: ModelSpec, capacity: int, dtype: torch.dtype, device: torch.device | str = "cpu",
                 prefix: PrefixKV | None = None, parallel: ParallelSpan | None = None):
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
        self.prefix = prefix
        self.parallel = parallel
        if prefix is not None:
            self.reserve(torch.arange(prefix.length, device=self.pos.device))
            self.write_span(0, prefix.k, prefix.v)

    @staticmethod
    def slot_bytes(spec: ModelSpec, dtype: torch.dtype) -> int:
        """Bytes one slot of a working cache holds: its K and V in every layer and head, its
        position and segment id (what the scheduler's admission counts memory in)."""
        return 2 * spec.n_layers * spec.n_kv_heads * spec.head_dim * dtype.itemsize + 2 * torch.int64.itemsize

    @property
    def prefix_len(self) -> int:
        """Slots [0, prefix_len) hold the shared prefix."""
        return 0 if self.prefix is None else self.prefix.length

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
