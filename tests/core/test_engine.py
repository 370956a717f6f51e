"""Parity of our layer-by-layer forward, blend and reuse with the Hugging Face forward."""

import pytest
import torch

from chunkcache.assembly import assemble
from chunkcache.chunk_kv import compute_chunks, compute_prefix, new_working_kv
from chunkcache.config import BlendConfig
from chunkcache.engine import Engine
from chunkcache.kv import WorkingKV
from chunkcache.layout import causal_blocks
from chunkcache.recompute import BlendPlan, blend
from chunkcache.model import Generator
from chunkcache.model_files import load_model, model_fingerprint
from chunkcache.repair import Decoder
from chunkcache.request import Request


def _engine(model_dir):
    model, tok = load_model(model_dir)
    return Engine(Generator(model, tok, model_fingerprint(model, model.config.to_dict()))), model


# The README's model families, each as a tiny random config: Llama (conftest's tiny_model_dir),
# Mistral with a sliding window shorter than the test prompts, Qwen2 with q/k/v biases.
TINY = ["llama", "mistral", "qwen2"]


def _tiny_family_dir(family, llama_dir, out):
    import transformers

    torch.manual_seed(0)
    base = transformers.AutoConfig.from_pretrained(llama_dir).to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rope_theta", "bos_token_id", "eos_token_id",
            "tie_word_embeddings")
    common = {k: base[k] for k in keep if k in base}
    common.setdefault("rope_theta", 10000.0)
    if family == "mistral":
        config, cls = transformers.MistralConfig(**common, sliding_window=32), transformers.MistralForCausalLM
    else:
        config, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
    model = cls(config).eval()
    if family == "qwen2":  # HF initialises the biases to zero; random ones make the test see them
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(llama_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def engines(tiny_model_dir, request, tmp_path_factory):
    """name ("real", or a TINY family) -> (Engine, HF model), each built once per module; the
    real default model is converted and loaded only when a (slow) test asks for it."""
    made = {}

    def get(name):
        if name not in made:
            if name == "real":
                path = request.getfixturevalue("default_model_dir")
            elif name == "llama":
                path = tiny_model_dir
            else:
                path = _tiny_family_dir(name, tiny_model_dir, tmp_path_factory.mktemp(f"tiny-{name}"))
            made[name] = _engine(path)
        return made[name]

    return get


@pytest.fixture(scope="module", params=TINY)
def tiny(request, engines):
    return engines(request.param)


@pytest.fixture(scope="module")
def real(engines):
    return engines("real")


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(ids[None]).logits[0].float()


def _split_prompt(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, vocab, (9,), generator=g).tolist()
    chunks = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (23, 17, 31)]
    suffix = torch.randint(3, vocab, (7,), generator=g).tolist()
    return prefix, chunks, suffix


def _plan(ratio, **levers):
    return BlendPlan(BlendConfig(recompute_ratio=ratio, **levers))


def _blend_logits(engine, prefix, chunks, suffix, plan):
    """Reuse/blend the chunks' independently computed caches; logits of the suffix tokens."""
    gen = engine.gen
    pre = compute_prefix(engine, prefix)
    cached = compute_chunks(engine, pre, chunks)
    p, n, s = len(prefix), sum(map(len, chunks)), len(suffix)
    req = Request("blend", tuple(map(tuple, chunks)), tuple(suffix), 1, BlendConfig())
    a = assemble(engine, pre, req, cached, n + s, stacked=True)
    kv, slots, stacked = a.kv, a.slots, a.stacked
    ctx = torch.tensor([t for c in chunks for t in c])
    suf = torch.tensor(suffix)
    if plan is None:
        h, _ = engine.prefill(kv, suf, torch.arange(p + n, p + n + s))
        return gen.logits(h), None, kv
    res = blend(engine, kv, slots, stacked, ctx, suf, torch.arange(p + n, p + n + s), plan)
    return gen.logits(res.hidden), res.recomputed, kv


@pytest.mark.parametrize("which", TINY + [pytest.param("real", marks=pytest.mark.slow)])
def test_forward_matches_hugging_face(which, engines):
    engine, model = engines(which)
    ids = torch.randint(3, engine.gen.spec.vocab_size, (61,), generator=torch.Generator().manual_seed(1))
    ref = _hf_logits(model, ids)
    kv = new_working_kv(engine, compute_prefix(engine, ids[:10].tolist()), 51)
    h, _ = engine.prefill(kv, ids[10:], torch.arange(10, 61))
    torch.testing.assert_close(engine.gen.logits(h), ref[10:], rtol=1e-4, atol=2e-4)


def test_decode_steps_match_hugging_face(tiny):
    engine, model = tiny
    ids = torch.randint(3, engine.gen.spec.vocab_size, (20,), generator=torch.Generator().manual_seed(2))
    ref = _hf_logits(model, ids)
    decoder = Decoder(engine, new_working_kv(engine, compute_prefix(engine, ids[:15].tolist()), 5))
    for i in range(15, 20):
        torch.testing.assert_close(decoder.step(int(ids[i]), i), ref[i], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which,deviation", [(f, d) for f in TINY for d in ("probe", "v", "vattn")]
                         + [pytest.param("real", d, marks=pytest.mark.slow) for d in ("probe", "vattn")])
def test_blend_at_ratio_one_reproduces_full_prefill(which, deviation, engines):
    engine, model = engines(which)
    prefix, chunks, suffix = _split_prompt(engine.gen.spec.vocab_size)
    ids = torch.tensor(prefix + [t for c in chunks for t in c] + suffix)
    ref = _hf_logits(model, ids)[-len(suffix):]
    logits, selected, _ = _blend_logits(engine, prefix, chunks, suffix, _plan(1.0, deviation_of=deviation))
    assert selected.numel() == sum(map(len, chunks))
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=2e-4)


@pytest.mark.slow  # the real default model
def test_reuse_differs_from_full_and_blend_moves_towards_it(real):
    engine, model = real
    prefix, chunks, suffix = _split_prompt(engine.gen.spec.vocab_size, seed=3)
    ids = torch.tensor(prefix + [t for c in chunks for t in c] + suffix)
    ref = torch.log_softmax(_hf_logits(model, ids)[-1], -1)

    def kl(logits):
        lp = torch.log_softmax(logits[-1], -1)
        return float((ref.exp() * (ref - lp)).sum())

    reuse, _, _ = _blend_logits(engine, prefix, chunks, suffix, None)
    half, _, _ = _blend_logits(engine, prefix, chunks, suffix, _plan(0.5))
    half_v, _, _ = _blend_logits(engine, prefix, chunks, suffix, _plan(0.5, deviation_of="v"))
    assert kl(reuse) > 1e-4  # independent chunk caches really are approximate
    assert kl(half) < kl(reuse)
    assert kl(half_v) < kl(reuse)


@pytest.mark.parametrize("ratio", [0.0, 0.3])
def test_check_layer_past_the_last_layer_is_a_full_prefill(tiny, ratio):
    # Deviation selection runs layers 0..check_layer on every token: with the check layer past
    # the last layer nothing is ever narrowed, whatever the ratio, so blend is a full prefill.
    engine, model = tiny
    prefix, chunks, suffix = _split_prompt(engine.gen.spec.vocab_size, seed=4)
    ids = torch.tensor(prefix + [t for c in chunks for t in c] + suffix)
    ref = _hf_logits(model, ids)[-len(suffix):]
    logits, _, _ = _blend_logits(engine, prefix, chunks, suffix, _plan(ratio, deviation_of="v", check_layer=99))
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("deviation", ["probe", "v"])
def test_blend_at_ratio_zero_recomputes_no_context_token(tiny, deviation):
    # Ratio 0 with a check layer inside the model: no context token is recomputed, so the
    # question's logits are those of plain reuse (probe) or differ from them only through the
    # first check_layer + 1 layers having run every token (v).
    engine, _ = tiny
    prefix, chunks, suffix = _split_prompt(engine.gen.spec.vocab_size, seed=4)
    reuse, _, _ = _blend_logits(engine, prefix, chunks, suffix, None)
    logits, selected, _ = _blend_logits(engine, prefix, chunks, suffix, _plan(0.0, deviation_of=deviation, check_layer=0))
    assert selected.numel() == 0
    if deviation == "probe":
        torch.testing.assert_close(logits, reuse, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("deviation", ["probe", "v"])
def test_query_tokens_always_recomputed(tiny, deviation):
    engine, _ = tiny
    prefix, chunks, suffix = _split_prompt(engine.gen.spec.vocab_size, seed=5)
    logits, selected, kv = _blend_logits(engine, prefix, chunks, suffix, _plan(0.05, deviation_of=deviation, check_layer=0))
    n, s = sum(map(len, chunks)), len(suffix)
    assert logits.shape[0] == s and torch.isfinite(logits).all()
    assert selected.numel() == -(-n * 5 // 100)
    suffix_slots = torch.arange(kv.length - s, kv.length)
    for layer in range(engine.gen.spec.n_layers):
        assert kv.k[layer, :, suffix_slots].abs().sum(-1).gt(0).all(), "every suffix token's K was written"


def test_selection_uses_position_exact_masks(tiny):
    """A recomputed context token's output equals the full prefill's when everything before it is exact."""
    engine, model = tiny
    prefix, chunks, suffix = _split_prompt(engine.gen.spec.vocab_size, seed=6)
    # one chunk: its cache is exact, so any selected token recomputes to the full-prefill value
    single = [chunks[0]]
    ids = torch.tensor(prefix + single[0] + suffix)
    ref = _hf_logits(model, ids)[-len(suffix):]
    for plan in (_plan(0.3, deviation_of="v", check_layer=0), _plan(0.3)):
        logits, _, _ = _blend_logits(engine, prefix, single, suffix, plan)
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=2e-4)


def test_packed_chunk_warmup_equals_one_by_one(tiny):
    engine, _ = tiny
    prefix, chunks, _ = _split_prompt(engine.gen.spec.vocab_size, seed=7)
    pre = compute_prefix(engine, prefix)
    packed = compute_chunks(engine, pre, chunks)
    for chunk, got in zip(chunks, packed):
        alone = compute_chunks(engine, pre, [chunk])[0]
        assert got.shape == (engine.gen.spec.n_layers, 2, engine.gen.spec.n_kv_heads, len(chunk), engine.gen.spec.head_dim)
        torch.testing.assert_close(got, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_maskless_causal_prefill_equals_the_position_masked_one(tiny, packed):
    """Prefills right after the prefix run as causal squares (prefix queries prepended, no mask);
    without the prefix's queries the same prefill takes the dense position mask. Both agree."""
    engine, _ = tiny
    prefix, chunks, _ = _split_prompt(engine.gen.spec.vocab_size, seed=8)
    pre = compute_prefix(engine, prefix)
    assert pre.q is not None and pre.q.shape[2] == len(prefix)
    if packed:
        ids = torch.tensor([t for c in chunks for t in c])
        pos = torch.cat([torch.arange(len(prefix), len(prefix) + len(c)) for c in chunks])
        seg = torch.cat([torch.full((len(c),), i + 1) for i, c in enumerate(chunks)])
    else:
        ids = torch.tensor(chunks[0] + chunks[1])
        pos, seg = torch.arange(len(prefix), len(prefix) + ids.numel()), None
    fast = new_working_kv(engine, pre, ids.numel())
    # A sliding window (Mistral) needs the position mask, so only windowless models go maskless.
    spec = engine.gen.spec
    assert (causal_blocks(spec, fast, pos, seg) is not None) == (spec.sliding_window is None)
    # The same prefix written as plain slots, not as the cache's shared prefix: no causal squares.
    slow = WorkingKV(spec, pre.length + ids.numel(), engine.gen.dtype)
    slow.reserve(torch.arange(pre.length))
    slow.write_span(0, pre.k, pre.v)
    assert causal_blocks(spec, slow, pos, seg) is None
    h_fast, kv_fast = engine.prefill(fast, ids, pos, seg, collect=True)
    h_slow, kv_slow = engine.prefill(slow, ids, pos, seg, collect=True)
    torch.testing.assert_close(h_fast, h_slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kv_fast, kv_slow, rtol=1e-5, atol=1e-5)
