"""ChunkCache.answer on the real default model: modes, exactness, hits, errors."""

import json
from pathlib import Path

import pytest
import torch

from chunkcache import ChunkCache, ContextTooLongError, InvalidRequestError
from chunkcache.sampling import SamplingParams

pytestmark = pytest.mark.slow  # every answer runs on the real default model

DEMO = Path(__file__).resolve().parents[2] / "chunkcache" / "demo" / "demo_qa.jsonl"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, default_model_dir):
    # Per-chunk blending against full on the same passages: chain entries would make every repeat exact.
    cc = ChunkCache(store_dir=str(tmp_path_factory.mktemp("facade")), model=str(default_model_dir), chain_entries=False)
    yield cc
    cc.close()


@pytest.fixture(scope="module")
def examples():
    return [json.loads(line) for line in DEMO.read_text().splitlines()]


def test_blend_at_ratio_one_equals_full(cache, examples):
    for ex in examples[:3]:
        full = cache.answer(ex["question"], ex["passages"], mode="full", max_new_tokens=12, return_logprobs=True)
        blend = cache.answer(ex["question"], ex["passages"], mode="blend", recompute_ratio=1.0, max_new_tokens=12, return_logprobs=True)
        assert blend.token_ids == full.token_ids
        torch.testing.assert_close(blend.first_logprobs, full.first_logprobs, rtol=1e-3, atol=1e-3)
        assert blend.recomputed_tokens == blend.context_tokens


def test_ratio_zero_equals_reuse(cache, examples):
    ex = examples[1]
    reuse = cache.answer(ex["question"], ex["passages"], mode="reuse", max_new_tokens=8, return_logprobs=True)
    zero = cache.answer(ex["question"], ex["passages"], mode="blend", recompute_ratio=0.0, max_new_tokens=8, return_logprobs=True)
    assert zero.token_ids == reuse.token_ids
    torch.testing.assert_close(zero.first_logprobs, reuse.first_logprobs)
    assert zero.recomputed_tokens == 0


def test_every_mode_answers_and_reports(cache, examples):
    ex = examples[0]
    for mode in ("full", "reuse", "blend", "ape"):
        ans = cache.answer(ex["question"], ex["passages"], mode=mode, max_new_tokens=16)
        assert ans.mode == mode and ans.text
        assert 0 < ans.ttft_s <= ans.total_s
        assert ans.context_tokens == sum(p.tokens for p in ans.passages)
        assert ans.generated_tokens == len(ans.token_ids) <= 16
        if mode == "blend":
            assert 0 < ans.recomputed_tokens < ans.context_tokens


def test_cache_hits_are_reported_per_passage(cache):
    passages = ["A fresh passage about copper kettles.", {"title": "Tin", "text": "Tin is soft and silvery."}]
    first = cache.answer("What is tin like?", passages, mode="reuse", max_new_tokens=4)
    second = cache.answer("Which metal is soft?", list(reversed(passages)), mode="blend", max_new_tokens=4)
    assert [p.hit for p in first.passages] == [False, False]
    assert [p.hit for p in second.passages] == [True, True]
    assert cache.warm(passages) == 0  # already stored: nothing recomputed


def test_streaming_pieces_add_up_to_the_text(cache, examples):
    ex = examples[2]
    pieces = []
    ans = cache.answer(ex["question"], ex["passages"], mode="blend", max_new_tokens=12, on_token=pieces.append)
    assert "".join(pieces).strip() == ans.text


def test_seeded_sampling_is_reproducible(cache, examples):
    ex = examples[3]
    params = SamplingParams(temperature=0.8, top_p=0.9, seed=7)
    a = cache.answer(ex["question"], ex["passages"], mode="blend", max_new_tokens=10, sampling=params)
    b = cache.answer(ex["question"], ex["passages"], mode="blend", max_new_tokens=10, sampling=params)
    assert a.token_ids == b.token_ids


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"question": "  ", "passages": ["x"]}, "question is empty"),
        ({"question": "q", "passages": []}, "non-empty list"),
        ({"question": "q", "passages": "a string"}, "non-empty list"),
        ({"question": "q", "passages": [""]}, "empty text"),
        ({"question": "q", "passages": [{"title": "t"}]}, "'text'"),
        ({"question": "q", "passages": ["x"], "mode": "fast"}, "mode must be one of"),
        ({"question": "q", "passages": ["x"], "recompute_ratio": 1.5}, "recompute_ratio"),
        ({"question": "q", "passages": ["x"], "max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_input_gets_a_clear_error(cache, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        cache.answer(**kwargs)


def test_prompt_longer_than_the_context_names_the_limit(cache):
    long_passage = "word " * 9000
    with pytest.raises(ContextTooLongError, match="8192"):
        cache.answer("q", [long_passage], mode="blend")
