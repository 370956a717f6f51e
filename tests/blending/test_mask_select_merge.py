import math

import torch

from chunkcache.blending import (
    adaptive_budget,
    ape_merge,
    attention_lse,
    budget,
    chunk_starts_forced,
    position_mask,
    token_deviation,
)


def test_mask_never_lets_a_token_see_a_later_position():
    gen = torch.Generator().manual_seed(0)
    k_pos = torch.randperm(200, generator=gen)
    q_pos = k_pos[torch.randperm(200, generator=gen)[:37]]
    mask = position_mask(q_pos, k_pos)
    later = k_pos[None, :] > q_pos[:, None]
    assert not (mask & later).any()
    assert (mask | later).all()  # and everything earlier or equal is visible


def test_mid_context_query_does_not_see_keys_after_it():
    # a recomputed token at position 5 against 10 keys: a bottom-right mask would show it all 10
    mask = position_mask(torch.tensor([5]), torch.arange(10))
    assert mask[0].tolist() == [True] * 6 + [False] * 4


def test_segments_and_window():
    k_pos = torch.tensor([0, 1, 2, 2, 3, 3])
    k_seg = torch.tensor([0, 0, 1, 2, 1, 2])
    mask = position_mask(k_pos[2:], k_pos, k_seg[2:], k_seg)
    assert mask.tolist() == [
        [True, True, True, False, False, False],
        [True, True, False, True, False, False],
        [True, True, True, False, True, False],
        [True, True, False, True, False, True],
    ]
    w = position_mask(torch.tensor([10]), torch.arange(11), window=3)
    assert w[0].nonzero().flatten().tolist() == [8, 9, 10]


def test_deviation_and_budget():
    fresh = torch.zeros(2, 5, 4)
    cached = torch.zeros(2, 5, 4)
    cached[:, 3] = 1.0
    dev = token_deviation(fresh, cached)
    assert dev.tolist() == [0, 0, 0, 8, 0]
    assert budget(100, 0.15) == 15 and budget(7, 0.15) == 2 and budget(10, 0.0) == 0 and budget(10, 1.0) == 10


def test_chunk_starts_are_forced_per_chunk():
    assert chunk_starts_forced([3, 1, 4], 2).tolist() == [0, 1, 3, 4, 5]


def test_adaptive_budget_covers_the_share():
    dev = torch.tensor([10.0, 0.0, 80.0, 5.0, 5.0])
    assert adaptive_budget(dev, 0.8, 1.0) == 1
    assert adaptive_budget(dev, 0.9, 1.0) == 2
    assert adaptive_budget(dev, 0.9, 0.2) == 1  # capped by the ratio
    assert adaptive_budget(torch.zeros(4), 0.9, 1.0) == 0


def test_ape_merge_with_t_s_one_is_exact_attention():
    torch.manual_seed(0)
    q = torch.randn(4, 3, 16)
    k = torch.randn(4, 20, 16)
    v = torch.randn(4, 20, 16)
    scale = 1 / math.sqrt(16)
    full, _ = attention_lse(q, k, v, scale)
    o_c, lse_c = attention_lse(q, k[:, :12], v[:, :12], scale)
    o_o, lse_o = attention_lse(q, k[:, 12:], v[:, 12:], scale)
    torch.testing.assert_close(ape_merge(o_c, lse_c, o_o, lse_o, 1.0), full, rtol=1e-5, atol=1e-5)
    ref = torch.softmax(q @ k.transpose(-1, -2) * scale, -1) @ v
    torch.testing.assert_close(full, ref, rtol=1e-5, atol=1e-5)


def test_ape_merge_tempers_the_context_part():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 1, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    o_c, lse_c = attention_lse(q, k[:, :4], v[:, :4], 0.35 / 0.9)
    o_o, lse_o = attention_lse(q, k[:, 4:], v[:, 4:], 0.35)
    merged = ape_merge(o_c, lse_c, o_o, lse_o, 0.81)
    exact, _ = attention_lse(q, k, v, 0.35)
    assert not torch.allclose(merged, exact)
    assert torch.isfinite(merged).all()
