"""In-place scatter of recomputed K or V rows into the assembled cache (CacheBlend step 3:
fresh K/V of the selected tokens overwrite the cached K/V at their positions)."""

from __future__ import annotations

import torch

from .available import Impl, choose_impl
from .checks import FLOAT_DTYPES, check_tensor, check_writable
from .errors import KernelInputError


def scatter_rows_reference(cache: torch.Tensor, rows: torch.Tensor, index: torch.Tensor) -> None:
    """Torch reference of `scatter_rows` (same arguments, no checks)."""
    cache[..., index, :] = rows


def scatter_rows(
    cache: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, *, impl: Impl = "auto",
    check_index: bool = True,
) -> None:
    """cache[..., index[m], :] = rows[..., m, :], in place.

    cache: [H, N, d] with rows [H, M, d], or [L, H, N, d] with rows [L, H, M, d]; same dtype
        and device. Outer dims may be strided (e.g. `kv[:, 0]` of an assembled
        `[L, 2, H, N, d]`), the last dim must have stride 1.
    index: [M] int64 token indices, unique, each in [0, N).
    The bounds and uniqueness check reads index on the host (one sync on CUDA): a bad index
    would otherwise write outside the cache or race. check_index=False skips it, for callers
    whose index is unique and in range by construction (no host sync).
    """
    if not isinstance(cache, torch.Tensor) or cache.dim() not in (3, 4):
        got = tuple(cache.shape) if isinstance(cache, torch.Tensor) else type(cache).__name__
        raise KernelInputError(f"cache: expected [H, N, d] or [L, H, N, d], got {got}")
    layout = "[H, N, d]" if cache.dim() == 3 else "[L, H, N, d]"
    check_tensor("cache", cache, layout=layout, shape=(None,) * cache.dim(), dtypes=FLOAT_DTYPES)
    check_writable("cache", cache)
    *lead, N, d = cache.shape
    dev = cache.device
    check_tensor("rows", rows, layout=layout.replace("N", "M"), shape=(*lead, None, d),
                 dtypes=(cache.dtype,), device=dev)
    M = rows.shape[-2]
    check_tensor("index", index, layout="[M]", shape=(M,), dtypes=(torch.int64,), device=dev)
    if M == 0:
        return
    if check_index:
        _check_index(index, N)

    if choose_impl(impl, dev) == "reference":
        scatter_rows_reference(cache, rows, index)
        return
    from .scatter_triton import launch_scatter_rows

    launch_scatter_rows(cache, rows, index)


def _check_index(index: torch.Tensor, N: int) -> None:
    M = index.numel()
    ordered = index.sort().values  # [M]; min, max and duplicates in one host read
    dup = (ordered[1:] == ordered[:-1]).sum()
    lo, hi, dups = torch.stack((ordered[0], ordered[-1], dup)).tolist()
    if lo < 0 or hi >= N:
        raise KernelInputError(f"index: values in [{lo}, {hi}], the cache has N={N} tokens")
    if dups:
        raise KernelInputError(f"index: {dups} duplicate token indices among M={M}")
