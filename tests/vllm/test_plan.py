"""The connector's bookkeeping (no vLLM engine): what it loads, what it saves, and the paged layout."""

import pytest
import torch

from chunkcache.errors import ConfigError
from chunkcache.integrations import vllm_paged as paged
from chunkcache.integrations.vllm_plan import ConnectorSettings, plan_load, plan_save, request_docs, request_params
from chunkcache.kernels import apply_rope_reference, rope_cos_sin
from chunkcache.storage import CodecSpec

PREFIX = (1, 2, 3)
S = ConnectorSettings(store_dir="/nowhere", fingerprint="f", prefix_ids=PREFIX)
DOCS = [(10, 11), (20, 21, 22), (30,)]
PROMPT = list(PREFIX) + [t for d in DOCS for t in d] + [99, 98]


def docs():
    return request_docs(S, PROMPT, request_params(DOCS), "fp32")


def test_request_docs_cuts_the_prompt_and_ignores_foreign_requests():
    d = docs()
    assert d.chunks == tuple(DOCS) and d.starts() == [3, 5, 8] and d.docs_end == 9
    assert request_docs(S, PROMPT, None, "fp32") is None
    assert request_docs(S, [7] + PROMPT[1:], request_params(DOCS), "fp32") is None  # another prefix
    with pytest.raises(ConfigError):
        request_docs(S, PROMPT[:9], request_params(DOCS), "fp32")  # no question after the documents


def test_plan_load_takes_chain_entries_while_exact_then_per_chunk_entries():
    d = docs()
    stored = {d.prefix.key, d.chain[0], d.per_chunk[1], d.per_chunk[2], d.chain[2]}
    plan = plan_load(d, stored.__contains__)
    # chain[2] is no use once doc 1 came re-positioned: the run of exact entries ended there
    assert [(s.kind, s.start, s.end) for s in plan] == [("prefix", 0, 3), ("chain", 3, 5), ("chunk", 5, 8), ("chunk", 8, 9)]
    assert [s.kind for s in plan_load(d, stored.__contains__, recompute_last=2)] == ["prefix", "chain"]
    assert plan_load(d, (stored - {d.per_chunk[1]}).__contains__)[-1].end == 5  # the first gap ends the run
    assert plan_load(d, (stored - {d.prefix.key}).__contains__) == ()


def test_plan_save_keeps_only_exact_chain_entries():
    d = docs()
    nothing = set().__contains__
    cold = plan_save(d, (), nothing)
    assert [(s.kind, s.doc) for s in cold] == [("prefix", -1), ("chain", 0), ("chunk", 0), ("chain", 1), ("chain", 2)]
    loaded = plan_load(d, {d.prefix.key, d.chain[0], d.per_chunk[1]}.__contains__)
    # doc 1 was re-positioned, so doc 2 computed over it is not exact: nothing to store
    assert plan_save(d, loaded, {d.prefix.key, d.chain[0]}.__contains__) == ()
    # documents inside vLLM's own prefix-cache hit may hold re-positioned KV: nothing after them is saved
    assert [s.kind for s in plan_save(d, (), {d.prefix.key}.__contains__, local_end=6)] == []
    assert [(s.kind, s.doc) for s in plan_save(d, (), nothing, local_end=3)][:2] == [("prefix", -1), ("chain", 0)]


def test_settings_digest_matches_the_prompt_builder():
    import hashlib

    assert S.prefix_digest == hashlib.blake2b(repr(list(PREFIX)).encode(), digest_size=16).hexdigest()
    # The connector's defaults are a default ChunkCache's (no zstd), so their keys are the same.
    assert S.codec_tag == "fp16" == CodecSpec().tag
    assert ConnectorSettings(store_dir="/nowhere", fingerprint="f", prefix_ids=PREFIX, zstd_level=3).codec_tag == "fp16+zstd3"
    with pytest.raises(ConfigError):
        ConnectorSettings(store_dir="", fingerprint="f", prefix_ids=PREFIX)


def test_paged_write_read_round_trip_in_the_vec_layout():
    B, H, bs, d = 4, 2, 32, 64
    cache = torch.zeros(B, H, bs, 2 * d)
    k, v = torch.randn(H, 40, d), torch.randn(H, 40, d)
    blocks, offsets = paged.slots([3, 1], bs, 0, 40)
    paged.write(cache, blocks, offsets, k, v)
    back = paged.read(cache, blocks, offsets, d)
    torch.testing.assert_close(back[0], k)
    torch.testing.assert_close(back[1], v)
    keys, values = cache.view(B, H, 2, bs * d).unbind(2)
    assert keys[3, 0, 1 * bs + 5] == k[0, 5, 1]  # keys dimension-major: (token 5, dim 1) at 1 * bs + 5
    assert values[1, 1, 7 * d + 2] == v[1, 32 + 7, 2]  # values token-major, token 39 in block 1 at offset 7
    with pytest.raises(ConfigError):
        paged.slots([3], bs, 0, 40)


def test_unrotate_inverts_rope():
    freqs = 1.0 / (10000.0 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    k = torch.randn(2, 3, 10, 64)
    pos = torch.arange(50, 60)
    cos, sin = rope_cos_sin(pos, freqs, 1.0)
    torch.testing.assert_close(paged.unrotate(apply_rope_reference(k, cos, sin), pos, freqs), k, atol=1e-5, rtol=1e-5)
