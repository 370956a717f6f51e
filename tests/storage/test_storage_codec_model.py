"""On the real default model: blend answers over the compact codecs stay close to the same
answers over an fp16 store (first-token KL per example, bounds measured with margin)."""

import pytest

from chunkcache.cli import DEMO_QA
from chunkcache.evaluation import load_examples
from chunkcache.scores import kl_divergence

pytestmark = pytest.mark.slow

# Measured on the six demo questions: ans20v10 (4x smaller than fp16) KL 0.0007-0.0051 against the
# fp16 store, st4 (4.1x) 0.0004-0.0045, st6 (6.5x) 0.0045-0.044; the bounds leave about 3x of
# margin. The 100-example bench (README, storage) measures more.
KL_BOUND = {"ans20v10": 0.015, "st4": 0.015, "st6": 0.13}


def _first_logprobs(model_dir, root, codec, examples):
    from chunkcache import ChunkCache

    with ChunkCache(store_dir=str(root / codec), model=str(model_dir), codec=codec, memory_bytes=0,
                    chain_entries=False) as cc:
        cc.warm([p for ex in examples for p in ex.passages])
        out = [cc.answer(ex.question, list(ex.passages), mode="blend", max_new_tokens=1, return_logprobs=True,
                         chain=False) for ex in examples]
        assert cc.stats().misses == 0 and all(a.cache_hits == len(a.passages) for a in out)
    return [a.first_logprobs for a in out]


def test_blend_over_compact_codecs_stays_close_to_fp16(tmp_path, default_model_dir):
    examples = load_examples(DEMO_QA)
    base = _first_logprobs(default_model_dir, tmp_path, "fp16", examples)
    for codec, bound in KL_BOUND.items():
        got = _first_logprobs(default_model_dir, tmp_path, codec, examples)
        kl = [kl_divergence(b, g) for b, g in zip(base, got)]
        assert max(kl) < bound, f"{codec}: first-token KL against the fp16 store {[round(x, 6) for x in kl]}"
