"""int8 and int4 chunk KV through ChunkCache.answer, end to end, against an fp16 store.

Measured on the default model (SmolLM2-135M, float32) with these passages, 4 questions,
reuse and blend: first-token KL(fp16 || int8) <= 8e-5 nats, KL(fp16 || int4) <= 1e-2 nats, and
every greedy answer token identical for both codecs. The bounds below leave a 5-10x margin.
"""

import pytest

from chunkcache import ChunkCache
from chunkcache.scores import kl_divergence

pytestmark = pytest.mark.slow  # codec answers are compared on the real default model

PASSAGES = [
    {"title": "Greyhaven", "text": "The Greyhaven lighthouse has been kept by Ada Morrow since 1931. Its lamp burned whale oil until 1950, when it was electrified."},
    {"title": "Harbour", "text": "The harbour of Greyhaven freezes in January; ferries to the mainland leave at seven o'clock from the north pier."},
    {"title": "Mill", "text": "The old mill on the river Tarn grinds barley. It was rebuilt after a fire in 1887 by the Hollis family."},
]
QUESTIONS = ["Who rebuilt the mill?", "What did the lamp burn?"]
MODES = ("reuse", "blend")
# codec -> (largest first-token KL against fp16, answer tokens that must agree with fp16's)
BOUNDS = {"int8": (1e-3, 16), "int4": (5e-2, 4)}


@pytest.fixture(scope="module")
def answers(default_model_dir, tmp_path_factory):
    """(codec, mode, question) -> Answer, every passage loaded from a warmed store of that codec."""
    out = {}
    for codec in ("fp16", *BOUNDS):
        store = tmp_path_factory.mktemp(f"codec-{codec}")
        with ChunkCache(store_dir=str(store), model=str(default_model_dir), codec=codec, persist=False) as cc:
            assert cc.store.codec.tag.startswith(codec)
            assert cc.warm(PASSAGES) == len(PASSAGES)
            for mode in MODES:
                for q in QUESTIONS:
                    out[codec, mode, q] = cc.answer(q, PASSAGES, mode=mode, max_new_tokens=16, return_logprobs=True)
    return out


@pytest.mark.parametrize("codec", list(BOUNDS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("question", QUESTIONS)
def test_quantized_store_answers_like_fp16(answers, codec, mode, question):
    ref, got = answers["fp16", mode, question], answers[codec, mode, question]
    assert all(p.hit for p in got.passages), "every passage must come from the store"
    max_kl, agree = BOUNDS[codec]
    kl = kl_divergence(ref.first_logprobs, got.first_logprobs)
    assert kl <= max_kl, f"{codec} {mode}: first-token KL {kl:.2e} > {max_kl:.0e}"
    assert got.token_ids[:agree] == ref.token_ids[:agree], (ref.text, got.text)
    if codec == "int8":
        assert got.text == ref.text


def test_int4_is_further_from_fp16_than_int8(answers):
    """The comparison sees the codec at all: int4 rounds visibly more than int8."""
    for mode in MODES:
        for q in QUESTIONS:
            ref = answers["fp16", mode, q].first_logprobs
            assert kl_divergence(ref, answers["int4", mode, q].first_logprobs) > kl_divergence(ref, answers["int8", mode, q].first_logprobs)
