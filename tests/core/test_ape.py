"""APE at temperature 1 and scale 1 over one chunk is plain attention: it must equal a full prefill."""

import pytest
import torch

from chunkcache import ChunkCache
from chunkcache.config import BlendConfig

PASSAGE = {"title": "Greyhaven", "text": "The Greyhaven lighthouse has been kept by Ada Morrow since 1931; its lamp burns whale oil."}
QUESTION = "Who keeps the Greyhaven lighthouse?"


@pytest.mark.parametrize("which", ["tiny_model_dir", pytest.param("default_model_dir", marks=pytest.mark.slow)])
def test_ape_with_one_chunk_at_t_1_s_1_equals_full_prefill(which, request, tmp_path):
    model_dir = request.getfixturevalue(which)
    neutral = BlendConfig(ape_temperature=1.0, ape_scale=1.0)
    with ChunkCache(store_dir=str(tmp_path), model=str(model_dir), blend=neutral, persist=False) as cc:
        # APE first: its chunk KV is computed now (a miss), so nothing is rounded by the store codec.
        ape = cc.answer(QUESTION, [PASSAGE], mode="ape", max_new_tokens=6, return_logprobs=True)
        full = cc.answer(QUESTION, [PASSAGE], mode="full", max_new_tokens=6, return_logprobs=True)
    assert ape.passages[0].hit is False
    torch.testing.assert_close(ape.first_logprobs, full.first_logprobs, rtol=1e-4, atol=2e-4)
    assert ape.token_ids == full.token_ids  # the decode steps agree too (greedy)


def test_ape_defaults_are_not_neutral(tiny_model_dir, tmp_path):
    """The check above is not vacuous: with the default T = S = 0.9 the logits move."""
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), persist=False) as cc:
        ape = cc.answer(QUESTION, [PASSAGE], mode="ape", max_new_tokens=1, return_logprobs=True)
        full = cc.answer(QUESTION, [PASSAGE], mode="full", max_new_tokens=1, return_logprobs=True)
    assert (ape.first_logprobs - full.first_logprobs).abs().max() > 1e-3


def test_a_requests_own_ape_knobs_apply(tiny_model_dir, tmp_path):
    """APE's temperature and scale are levers of the request's BlendConfig like every other: a
    cache at the default T = S = 0.9 answers a request that asks for 1 and 1 as a full prefill."""
    neutral = BlendConfig(ape_temperature=1.0, ape_scale=1.0)
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), persist=False) as cc:
        ape = cc.answer(QUESTION, [PASSAGE], mode="ape", max_new_tokens=6, return_logprobs=True, blend=neutral)
        full = cc.answer(QUESTION, [PASSAGE], mode="full", max_new_tokens=6, return_logprobs=True)
    torch.testing.assert_close(ape.first_logprobs, full.first_logprobs, rtol=1e-4, atol=2e-4)
    assert ape.token_ids == full.token_ids
