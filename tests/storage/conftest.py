"""Factories for storage tests: random KV shaped like the default model's, tiers on tmp_path."""

import pytest
import torch

DEFAULT_SHAPE = dict(layers=30, heads=3, head_dim=64)


def make_kv(tokens: int = 64, layers: int = 30, heads: int = 3, head_dim: int = 64, seed: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """kv: [layers, 2, heads, tokens, head_dim] with key outlier channels (as real pre-RoPE keys
    have) and per-token value magnitudes, so per-channel / per-token grouping is exercised."""
    g = torch.Generator().manual_seed(seed)
    channel = torch.exp(torch.randn(layers, heads, 1, head_dim, generator=g))  # [L, H, 1, d]
    k = torch.randn(layers, heads, tokens, head_dim, generator=g) * channel + channel
    token = torch.exp(0.5 * torch.randn(layers, heads, tokens, 1, generator=g))  # [L, H, T, 1]
    v = torch.randn(layers, heads, tokens, head_dim, generator=g) * token
    return torch.stack([k, v], dim=1).to(dtype)  # [L, 2, H, T, d]


@pytest.fixture
def kv_factory():
    return make_kv


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the storage tests (each test uses its own key prefix)."""
    from redis_support import RedisServer

    with RedisServer() as server:
        yield server
