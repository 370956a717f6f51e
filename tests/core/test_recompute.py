"""Selective recompute's levers on a tiny random Llama: probe scores against Hugging Face's own
attention, gradual budgets, growth, repair while decoding, the oracle, teacher forcing."""

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM

from chunkcache.assembly import assemble
from chunkcache.blending import gradual_budgets
from chunkcache.chunk_kv import compute_chunks, compute_prefix, new_working_kv
from chunkcache.config import BlendConfig
from chunkcache.engine import Engine
from chunkcache.model import Generator
from chunkcache.model_files import load_model, model_fingerprint
from chunkcache.prompt_phase import start
from chunkcache.recompute import BlendPlan, blend, oracle_scores, probe
from chunkcache.repair import Decoder, RepairPlan
from chunkcache.request import Request
from chunkcache.sampling import Sampler, SamplingParams
from chunkcache.stream import decode_alone


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    return Engine(Generator(model, tok, model_fingerprint(model, model.config.to_dict()))), model


@pytest.fixture(scope="module")
def eager(tiny_model_dir):
    return LlamaForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager").eval()


def _prompt(vocab, seed, sizes=(23, 17, 31)):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, vocab, (9,), generator=g).tolist()
    chunks = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in sizes]
    suffix = torch.randint(3, vocab, (7,), generator=g).tolist()
    return prefix, chunks, suffix


def _assembled(engine, prefix, chunks, suffix, extra=0):
    pre = compute_prefix(engine, prefix)
    cached = compute_chunks(engine, pre, chunks)
    n, s = sum(map(len, chunks)), len(suffix)
    req = Request("blend", tuple(map(tuple, chunks)), tuple(suffix), 1, BlendConfig())
    a = assemble(engine, pre, req, cached, n + s + extra, stacked=True)
    return pre, cached, a.kv, a.slots, a.stacked


def _plan(ratio, chunk_lengths=(), **levers):
    return BlendPlan(BlendConfig(recompute_ratio=ratio, **levers), chunk_lengths)


def _full_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)[None]).logits[0].float()


@pytest.mark.parametrize("start", [0.0, 0.5])
def test_probe_scores_equal_brute_force_over_hugging_face_attention(tiny, eager, start):
    engine, _ = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=11)
    p, n, s = len(prefix), sum(map(len, chunks)), len(suffix)
    _, _, kv, slots, _ = _assembled(engine, prefix, chunks, suffix)
    # Brute force: Hugging Face's eager forward of the suffix over the same re-positioned cache.
    past = DynamicCache()
    for layer in range(engine.gen.spec.n_layers):
        past.update(kv.k[layer, :, : p + n][None].clone(), kv.v[layer, :, : p + n][None].clone(), layer)
    with torch.no_grad():
        out = eager(torch.tensor(suffix)[None], past_key_values=past, position_ids=torch.arange(p + n, p + n + s)[None],
                    output_attentions=True, use_cache=True)
    expected = torch.zeros(n)
    n_layers = engine.gen.spec.n_layers
    for layer in range(n_layers):
        if layer < int(start * n_layers):
            continue
        share = out.attentions[layer][0, :, :, p : p + n].mean(dim=(0, 1))  # [N]
        expected += share / share.sum()
    _, got = probe(engine, kv, slots, torch.tensor(suffix), torch.arange(p + n, p + n + s), start)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_gradual_filtering_ends_at_the_last_budget_and_the_set_only_shrinks(tiny):
    engine, model = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=12)
    n, s = sum(map(len, chunks)), len(suffix)
    _, _, kv, slots, stacked = _assembled(engine, prefix, chunks, suffix)
    plan = _plan(0.3, gradual_start=1.5)
    res = blend(engine, kv, slots, stacked, torch.tensor([t for c in chunks for t in c]), torch.tensor(suffix),
                torch.arange(len(prefix) + n, len(prefix) + n + s), plan)
    assert res.recomputed.numel() == gradual_budgets(n, 0.3, engine.gen.spec.n_layers, 1.5)[-1] > 0
    assert sorted(res.queue.tolist()) == list(range(n))
    # recomputed tokens are refreshed last
    assert set(res.queue[-res.recomputed.numel():].tolist()) == set(res.recomputed.tolist())


def test_span_smoothing_recomputes_runs(tiny):
    engine, _ = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=13, sizes=(60, 60))
    n, s = sum(map(len, chunks)), len(suffix)

    def runs(window):
        _, _, kv, slots, stacked = _assembled(engine, prefix, chunks, suffix)
        res = blend(engine, kv, slots, stacked, torch.tensor([t for c in chunks for t in c]), torch.tensor(suffix),
                    torch.arange(len(prefix) + n, len(prefix) + n + s),
                    _plan(0.2, (60, 60), span_window=window))
        idx = res.recomputed.tolist()
        return 1 + sum(b != a + 1 for a, b in zip(idx, idx[1:]))

    assert runs(9) < runs(0)


@pytest.mark.parametrize("ratio", [0.05, 0.3])
def test_sink_tokens_are_recomputed_and_count_against_the_budget(tiny, ratio):
    """Every chunk's first tokens are recomputed whatever their scores; the budget's rest goes to
    the best scored ones, and the sinks alone may exceed it."""
    engine, _ = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=19)
    p, n, s = len(prefix), sum(map(len, chunks)), len(suffix)
    _, _, kv, slots, stacked = _assembled(engine, prefix, chunks, suffix)
    plan = BlendPlan.from_config(BlendConfig(recompute_ratio=ratio, sink_tokens=3), chunks)
    res = blend(engine, kv, slots, stacked, torch.tensor([t for c in chunks for t in c]), torch.tensor(suffix),
                torch.arange(p + n, p + n + s), plan)
    sinks = set(plan.forced.tolist())
    assert len(sinks) == 9 and sinks <= set(res.recomputed.tolist())
    assert res.recomputed.numel() == max(-(-n * int(ratio * 100) // 100), len(sinks))


def test_repair_at_full_budget_reproduces_full_prefill(tiny):
    """After one repair step that refreshes every context token, each decode step's logits equal
    the full prefill's for the same tokens."""
    engine, model = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=14)
    p, n, s = len(prefix), sum(map(len, chunks)), len(suffix)
    _, _, kv, slots, stacked = _assembled(engine, prefix, chunks, suffix, extra=6)
    ctx = torch.tensor([t for c in chunks for t in c])
    res = blend(engine, kv, slots, stacked, ctx, torch.tensor(suffix), torch.arange(p + n, p + n + s), _plan(0.1))
    answer = torch.randint(3, engine.gen.spec.vocab_size, (5,), generator=torch.Generator().manual_seed(3)).tolist()
    ref = _full_logits(model, prefix + ctx.tolist() + suffix + answer)
    repair = RepairPlan(slots, ctx, res.queue, torch.arange(kv.length - s, kv.length), tuple(suffix), per_step=n, steps=1)
    decoder = Decoder(engine, kv, repair)
    for i in range(1, 5):
        got = decoder.step(answer[i - 1], p + n + s + i - 1)
        torch.testing.assert_close(got, ref[p + n + s + i - 1], rtol=1e-4, atol=2e-4)
    assert decoder.repaired == n and decoder.steps_taken == 4


def _generate(engine, prefix, chunks, suffix, mode, teacher=None, max_new=6, **levers):
    """One request alone through the prompt phase and the decode stream (levers: BlendConfig's)."""
    pre = compute_prefix(engine, prefix)
    cached = None if mode == "full" else compute_chunks(engine, pre, chunks)
    req = Request(mode, tuple(map(tuple, chunks)), tuple(suffix), max_new, BlendConfig(**levers))
    return decode_alone(engine, start(engine, pre, req, cached, Sampler(SamplingParams()), 0.0), teacher)


def test_repair_in_generate_at_full_budget_matches_full_after_the_first_token(tiny):
    engine, _ = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=15)
    n = sum(map(len, chunks))
    full = _generate(engine, prefix, chunks, suffix, "full", max_new=8)
    repaired = _generate(engine, prefix, chunks, suffix, "blend", teacher=full.token_ids, max_new=8,
                         recompute_ratio=0.1, repair_ratio=1.0, repair_steps=1)
    assert repaired.repaired == n
    assert repaired.teacher_agreement is not None
    # teacher-forced: every position after the first is predicted exactly as full prefill does
    plain = _generate(engine, prefix, chunks, suffix, "blend", teacher=full.token_ids, max_new=8, recompute_ratio=0.1)
    first_ok = float(int(repaired.first_logits.argmax()) == full.token_ids[0])
    assert repaired.teacher_agreement == pytest.approx((first_ok + len(full.token_ids) - 1) / len(full.token_ids))
    assert plain.repaired == 0


def test_teacher_agreement_of_full_against_itself_is_one_and_answer_unchanged(tiny):
    engine, _ = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=16)
    full = _generate(engine, prefix, chunks, suffix, "full", max_new=8)
    again = _generate(engine, prefix, chunks, suffix, "full", teacher=full.token_ids, max_new=8)
    assert again.teacher_agreement == 1.0
    assert again.token_ids == full.token_ids
    reuse = _generate(engine, prefix, chunks, suffix, "reuse", teacher=full.token_ids, max_new=8)
    alone = _generate(engine, prefix, chunks, suffix, "reuse", max_new=8)
    assert reuse.token_ids == alone.token_ids and 0.0 <= reuse.teacher_agreement <= 1.0


def test_growth_stops_at_its_ceiling_or_when_the_first_token_settles(tiny):
    engine, _ = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=17)
    n = sum(map(len, chunks))
    base = _generate(engine, prefix, chunks, suffix, "blend", recompute_ratio=0.1)
    capped = _generate(engine, prefix, chunks, suffix, "blend", recompute_ratio=0.1, grow_tolerance=1e-12, grow_step=0.1, grow_max_ratio=0.5)
    assert capped.recomputed == -(-n * 5 // 10)
    settled = _generate(engine, prefix, chunks, suffix, "blend", recompute_ratio=0.1, grow_tolerance=1e6, grow_step=0.1, grow_max_ratio=0.5)
    assert settled.recomputed == base.recomputed + -(-n // 10)  # one growth step, then it stops


def test_oracle_selection_runs_and_is_exact_at_ratio_one(tiny):
    engine, model = tiny
    prefix, chunks, suffix = _prompt(engine.gen.spec.vocab_size, seed=18)
    p, n, s = len(prefix), sum(map(len, chunks)), len(suffix)
    pre, _, kv, slots, stacked = _assembled(engine, prefix, chunks, suffix)
    ctx = torch.tensor([t for c in chunks for t in c])
    scores = oracle_scores(engine, new_working_kv(engine, pre, n + s), ctx, torch.tensor(suffix), stacked)
    assert scores.shape == (n,) and torch.isfinite(scores).all() and scores.sum() > 0
    res = blend(engine, kv, slots, stacked, ctx, torch.tensor(suffix), torch.arange(p + n, p + n + s),
                BlendPlan(BlendConfig(recompute_ratio=1.0, deviation_of="oracle"), oracle_scores=scores))
    ref = _full_logits(model, prefix + ctx.tolist() + suffix)[-s:]
    torch.testing.assert_close(engine.gen.logits(res.hidden), ref, rtol=1e-4, atol=2e-4)
    with pytest.raises(ValueError, match="oracle_scores"):
        _, _, kv, slots, stacked = _assembled(engine, prefix, chunks, suffix)
        blend(engine, kv, slots, stacked, ctx, torch.tensor(suffix), torch.arange(p + n, p + n + s), _plan(0.5, deviation_of="oracle"))


def test_plan_carries_its_config_and_derives_the_rest_from_the_chunks():
    cfg = BlendConfig(recompute_ratio=0.2, deviation_of="vattn", check_layer=3, sink_tokens=2, adaptive_coverage=0.4)
    plan = BlendPlan.from_config(cfg, [[1, 2, 3], [4, 5]])
    assert plan.config is cfg and plan.ratio == 0.2
    assert plan.chunk_lengths == (3, 2) and plan.forced.tolist() == [0, 1, 3, 4]
    assert BlendPlan.from_config(BlendConfig(sink_tokens=0), [[1]]).forced is None
    assert BlendPlan.from_config(BlendConfig(recompute_ratio=0.0), [[1, 2]]).recomputes_nothing
    for lever in ({"sink_tokens": 1}, {"adaptive_coverage": 0.5}, {"recompute_ratio": 0.1}):
        assert not BlendPlan.from_config(BlendConfig(**{"recompute_ratio": 0.0, **lever}), [[1, 2]]).recomputes_nothing, lever
