"""Grouped-query attention without K/V copies, and staircase blocks, against dense SDPA."""

import pytest
import torch
import torch.nn.functional as F

from chunkcache.blending import Stairs, grouped_attention, position_mask, stairs
from chunkcache.blending.score import attention_probs


def dense(q, k, v, scale, mask=None, causal=False):
    """The plain reference: K/V repeated to every query head, one SDPA call with the dense mask."""
    rep = q.shape[0] // k.shape[0]
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    m = None if mask is None else mask[None, None]
    return F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=m, is_causal=causal, scale=scale)[0]


def sorted_positions(g, n, high):
    return torch.randperm(high, generator=g)[:n].sort().values


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4), (8, 2)])
@pytest.mark.parametrize("seed", range(4))
def test_stairs_equal_the_dense_position_mask(heads, kv_heads, seed):
    g = torch.Generator().manual_seed(seed)
    d, n_keys = 16, 300
    k_pos = torch.arange(n_keys)
    t = int(torch.randint(1, 200, (1,), generator=g))
    q_pos = sorted_positions(g, t, n_keys)
    q = torch.randn(heads, t, d, generator=g)
    k, v = torch.randn(kv_heads, n_keys, d, generator=g), torch.randn(kv_heads, n_keys, d, generator=g)
    plan = stairs(q_pos, k_pos, heads // kv_heads, block=int(torch.randint(1, 70, (1,), generator=g)))
    assert isinstance(plan, Stairs)
    # Each block reads keys only up to its last query's position.
    for (a, b, end), _ in zip(plan.blocks, plan.masks):
        assert end == int(q_pos[b - 1]) + 1
    expected = dense(q, k, v, 0.25, position_mask(q_pos, k_pos))
    torch.testing.assert_close(grouped_attention(q, k, v, 0.25, plan), expected, atol=1e-5, rtol=1e-5)


def test_stairs_refuse_unsorted_positions():
    assert stairs(torch.tensor([5, 3]), torch.arange(10), 3) is None
    assert stairs(torch.tensor([3, 5]), torch.tensor([0, 2, 1]), 3) is None


def test_a_block_that_sees_every_key_needs_no_mask():
    plan = stairs(torch.tensor([10, 20, 30, 31]), torch.arange(10), 3, block=2)
    assert plan.masks == (None, None)
    assert [end for _, _, end in plan.blocks] == [10, 10]


@pytest.mark.parametrize("rows", [1, 7, 40])
def test_grouped_attention_dense_mask_no_mask_and_causal(rows):
    g = torch.Generator().manual_seed(rows)
    q = torch.randn(9, rows, 32, generator=g)
    k, v = torch.randn(3, 50, 32, generator=g), torch.randn(3, 50, 32, generator=g)
    torch.testing.assert_close(grouped_attention(q, k, v, 0.2), dense(q, k, v, 0.2), atol=1e-5, rtol=1e-5)
    mask = torch.rand(rows, 50, generator=g) > 0.3
    mask[:, 0] = True
    torch.testing.assert_close(grouped_attention(q, k, v, 0.2, mask), dense(q, k, v, 0.2, mask), atol=1e-5, rtol=1e-5)
    sq = torch.randn(9, 50, 32, generator=g)
    torch.testing.assert_close(grouped_attention(sq, k, v, 0.2, causal=True), dense(sq, k, v, 0.2, causal=True),
                               atol=1e-5, rtol=1e-5)


def test_attention_probs_fold_matches_repeated_heads():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 5, 16, generator=g)
    k, v = torch.randn(2, 40, 16, generator=g), torch.randn(2, 40, 16, generator=g)
    mask = position_mask(torch.arange(35, 40), torch.arange(40))
    out, probs = attention_probs(q, k, v, 0.25, mask)
    kr = k.repeat_interleave(3, 0)
    ref = torch.softmax((q @ kr.transpose(1, 2) * 0.25).masked_fill(~mask[None], float("-inf")), -1)
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, dense(q, k, v, 0.25, mask), atol=1e-5, rtol=1e-5)
