"""The fidelity levers through ChunkCache.answer on the real default model (SmolLM2-135M)."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from chunkcache import ChunkCache
from chunkcache.scores import kl_divergence

pytestmark = pytest.mark.slow  # fidelity is measured on the real default model

QA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "qa" / "2wikimqa.jsonl"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, default_model_dir):
    cc = ChunkCache(store_dir=str(tmp_path_factory.mktemp("levers")), model=str(default_model_dir), persist=False,
                    chain_entries=False)  # the levers of per-chunk blending, compared with full on the same passages
    yield cc
    cc.close()


@pytest.fixture(scope="module")
def examples():
    if not QA.is_file():
        pytest.skip(f"the shared QA data is not beside the repository ({QA})")
    return [json.loads(line) for line in QA.read_text().splitlines()[:4]]


def _kl(cache, ex, full, **kwargs):
    ans = cache.answer(ex["question"], ex["passages"], max_new_tokens=1, return_logprobs=True, **kwargs)
    return kl_divergence(full.first_logprobs, ans.first_logprobs), ans


def test_probe_selection_moves_the_first_token_towards_full_prefill(cache, examples):
    """Mean first-token KL over real 2WikiMQA examples: probe at r=0.3 well below reuse."""
    probe_kl, reuse_kl = [], []
    for ex in examples:
        full = cache.answer(ex["question"], ex["passages"], mode="full", max_new_tokens=1, return_logprobs=True)
        kl, ans = _kl(cache, ex, full, mode="blend", recompute_ratio=0.3)
        assert ans.recomputed_tokens == -(-ans.context_tokens * 3 // 10)
        probe_kl.append(kl)
        reuse_kl.append(_kl(cache, ex, full, mode="reuse")[0])
    assert sum(probe_kl) < 0.7 * sum(reuse_kl), (probe_kl, reuse_kl)


@pytest.mark.parametrize("deviation", ["probe", "vattn"])
def test_ratio_one_is_exact_and_teacher_agreement_is_one(cache, examples, deviation):
    ex = examples[0]
    full = cache.answer(ex["question"], ex["passages"], mode="full", max_new_tokens=8, return_logprobs=True)
    blend = replace(cache.config.blend, deviation_of=deviation)
    ans = cache.answer(ex["question"], ex["passages"], mode="blend", recompute_ratio=1.0, max_new_tokens=8,
                       return_logprobs=True, blend=blend, teacher_ids=full.token_ids)
    assert ans.token_ids == full.token_ids
    assert ans.teacher_agreement == 1.0
    torch.testing.assert_close(ans.first_logprobs, full.first_logprobs, rtol=1e-3, atol=1e-3)


def test_repair_while_decoding_keeps_the_first_token_and_counts_its_work(cache, examples):
    ex = examples[1]
    blend = replace(cache.config.blend, repair_ratio=0.2, repair_steps=4)
    plain = cache.answer(ex["question"], ex["passages"], mode="blend", max_new_tokens=6, return_logprobs=True,
                         blend=replace(cache.config.blend, repair_ratio=0.0))
    repaired = cache.answer(ex["question"], ex["passages"], mode="blend", max_new_tokens=6, return_logprobs=True, blend=blend)
    assert repaired.token_ids[0] == plain.token_ids[0]  # repair never touches the first token
    torch.testing.assert_close(repaired.first_logprobs, plain.first_logprobs)
    steps = min(4, repaired.generated_tokens - 1)
    total = math.ceil(0.2 * repaired.context_tokens)  # the budget: a share of the blended context, in equal parts
    assert repaired.repaired_tokens == min(-(-total // 4) * steps, total)
    assert plain.repaired_tokens == 0


def test_oracle_is_a_diagnostic_selection(cache, examples):
    ex = examples[2]
    full = cache.answer(ex["question"], ex["passages"], mode="full", max_new_tokens=1, return_logprobs=True)
    oracle_kl, ans = _kl(cache, ex, full, mode="blend", recompute_ratio=0.3, blend=replace(cache.config.blend, deviation_of="oracle"))
    assert ans.recomputed_tokens == -(-ans.context_tokens * 3 // 10)
    assert oracle_kl < _kl(cache, ex, full, mode="reuse")[0]
