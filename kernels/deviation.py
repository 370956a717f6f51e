"""Per-token deviation between fresh and cached K or V at CacheBlend's check layer:
dev[t] = sum over heads and dims of (fresh - cached)^2, accumulated in fp32."""

from __future__ import annotations

import torch

from .available import Impl, choose_impl
from .checks import FLOAT_DTYPES, check_tensor


def token_deviation_reference(fresh: torch.Tensor, cached: torch.Tensor) -> torch.Tensor:
    """Torch reference of `token_deviation` (same arguments, no checks)."""
    diff = fresh.to(torch.float32) - cached.to(torch.float32)  # [H, T, d]
    return diff.square().sum(dim=(0, 2))  # [T]


def token_deviation(
    fresh: torch.Tensor, cached: torch.Tensor, *, impl: Impl = "auto"
) -> torch.Tensor:
    """fresh, cached: [H, T, d] float (dtypes may differ, e.g. fp32 fresh against fp16
    cached; outer dims may be strided, e.g. `cache[:, a:b]`) -> [T] float32."""
    check_tensor("fresh", fresh, layout="[H, T, d]", shape=(None,) * 3, dtypes=FLOAT_DTYPES)
    check_tensor("cached", cached, layout="[H, T, d]", shape=fresh.shape, dtypes=FLOAT_DTYPES,
                 device=fresh.device)
    if choose_impl(impl, fresh.device) == "reference" or fresh.numel() == 0:
        return token_deviation_reference(fresh, cached)
    from .deviation_triton import launch_token_deviation

    return launch_token_deviation(fresh, cached)
