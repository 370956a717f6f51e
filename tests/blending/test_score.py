"""Scores and budgets of selective recompute: pure functions, checked against brute force."""

import random

import pytest
import torch

from chunkcache.blending import (
    attention_probs,
    context_attention,
    gradual_budgets,
    position_mask,
    probe_layers,
    rank_tokens,
    smooth_within,
)


@pytest.mark.parametrize("seed", range(20))
def test_gradual_budgets_never_grow_and_cost_a_fixed_ratio(seed):
    rng = random.Random(seed)
    n, layers = rng.randint(1, 3000), rng.randint(1, 40)
    ratio, start = rng.uniform(0.0, 0.6), rng.uniform(1.0, 2.0)
    got = gradual_budgets(n, ratio, layers, start)
    assert len(got) == layers
    assert all(a >= b for a, b in zip(got, got[1:])), got
    assert all(0 <= b <= n for b in got)
    # Same compute as a fixed ratio: the mean is r*N up to one token of rounding per layer
    # (less when the first layers are clipped at N).
    assert sum(got) / layers <= ratio * n + 1
    if start * ratio <= 1.0:
        assert sum(got) / layers >= ratio * n - 1e-9


def test_gradual_budgets_start_one_is_the_fixed_budget():
    from chunkcache.blending import budget

    assert gradual_budgets(1000, 0.15, 30, 1.0) == [150] * 30
    rng = random.Random(7)
    for _ in range(200):  # blend relies on this: start 1 must be exactly the fixed ratio's budget
        n, r, layers = rng.randint(0, 3000), rng.choice([0.0, 1.0, rng.random()]), rng.randint(1, 40)
        assert gradual_budgets(n, r, layers, 1.0) == [budget(n, r)] * layers
    assert gradual_budgets(1000, 0.15, 30, 2.0)[0] == 300
    assert gradual_budgets(1000, 0.15, 30, 2.0)[-1] == 0
    with pytest.raises(ValueError, match="gradual start"):
        gradual_budgets(10, 0.1, 3, 2.5)


def test_smooth_within_is_a_clipped_moving_average_per_passage():
    scores = torch.tensor([0.0, 0.0, 9.0, 0.0, 0.0, 3.0, 3.0])
    got = smooth_within(scores, [5, 2], window=3)
    expected = []
    for start, n in ((0, 5), (5, 2)):  # brute force, never across the boundary at 5
        for i in range(n):
            lo, hi = max(0, i - 1), min(n, i + 2)
            expected.append(float(scores[start + lo : start + hi].mean()))
    torch.testing.assert_close(got, torch.tensor(expected))
    assert smooth_within(scores, [7], window=1) is scores


def test_rank_tokens_puts_forced_first_then_scores():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.2])
    order = rank_tokens(scores, torch.tensor([4]))
    assert order.tolist() == [4, 1, 3, 2, 0]
    assert sorted(rank_tokens(torch.rand(50)).tolist()) == list(range(50))


def test_attention_probs_matches_a_loop_and_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(4, 3, 8, generator=g), torch.randn(2, 6, 8, generator=g), torch.randn(2, 6, 8, generator=g)
    mask = position_mask(torch.tensor([3, 4, 5]), torch.arange(6))
    out, probs = attention_probs(q, k, v, 0.3, mask)
    for h in range(4):
        for t in range(3):
            visible = mask[t]
            logits = (k[h // 2, visible] @ q[h, t]) * 0.3
            p = torch.softmax(logits, -1)
            torch.testing.assert_close(probs[h, t, visible], p)
            assert probs[h, t, ~visible].abs().sum() == 0
            torch.testing.assert_close(out[h, t], p @ v[h // 2, visible])


def test_context_attention_normalises_the_context_share():
    probs = torch.zeros(2, 1, 6)
    probs[0, 0] = torch.tensor([0.5, 0.1, 0.3, 0.1, 0.0, 0.0])
    probs[1, 0] = torch.tensor([0.7, 0.3, 0.0, 0.0, 0.0, 0.0])
    share = context_attention(probs, slice(1, 4))
    torch.testing.assert_close(share, torch.tensor([0.4, 0.3, 0.1]) / 0.8)
    torch.testing.assert_close(context_attention(torch.zeros(1, 1, 4), slice(0, 4)), torch.full((4,), 0.25))


def test_probe_layers_are_the_deep_third_and_never_empty():
    assert list(probe_layers(30, 1 / 3)) == list(range(10, 30))
    assert list(probe_layers(2, 0.99)) == [1]
    assert list(probe_layers(30, 0.0)) == list(range(30))
