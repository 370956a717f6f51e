"""The fused load path: stored payloads dequantized, rotated and written into the working cache
in one call per chunk, against decoding to fp32 first and rotating after (the old path)."""

import pytest
import torch

from chunkcache import ChunkCache
from chunkcache.assembly import assemble
from chunkcache.config import BlendConfig
from chunkcache.chunk_kv import compute_chunks, compute_prefix
from chunkcache.engine import Engine
from chunkcache.model import Generator
from chunkcache.model_files import load_model, model_fingerprint
from chunkcache.prompt import as_passage
from chunkcache.request import Request
from chunkcache.storage import CODECS, CodecSpec, decode_kv, decode_payload, encode_kv

PASSAGES = [
    {"title": "Alder", "text": "Alder trees grow along wet river banks and fix nitrogen in the soil."},
    {"title": "Birch", "text": "Birch bark peels in thin white sheets and burns even when damp."},
    {"title": "Cedar", "text": "Cedar wood resists rot, which is why it is used for shingles."},
]
QUESTION = "Which tree has bark that burns when damp?"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_model(tiny_model_dir)
    return Engine(Generator(model, tok, model_fingerprint(model, model.config.to_dict())))


@pytest.mark.parametrize("ape", [False, True])
@pytest.mark.parametrize("codec", CODECS)
def test_payload_places_what_decode_then_rotate_places(tiny, codec, ape):
    g = torch.Generator().manual_seed(1)
    vocab = tiny.gen.spec.vocab_size
    prefix = torch.randint(3, vocab, (5,), generator=g).tolist()
    chunks = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (13, 9, 20)]
    pre = compute_prefix(tiny, prefix)
    blobs = [encode_kv(c, CodecSpec(codec)) for c in compute_chunks(tiny, pre, chunks)]
    req = Request("ape" if ape else "reuse", tuple(map(tuple, chunks)), (7,), 1, BlendConfig())
    n = sum(map(len, chunks))
    old = assemble(tiny, pre, req, [decode_kv(b) for b in blobs], n + 1, stacked=True)
    new = assemble(tiny, pre, req, [decode_payload(b) for b in blobs], n + 1, stacked=True)
    end = pre.length + n
    torch.testing.assert_close(new.kv.k[:, :, :end], old.kv.k[:, :, :end], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(new.kv.v[:, :, :end], old.kv.v[:, :, :end], rtol=0, atol=0)
    torch.testing.assert_close(new.stacked, old.stacked, rtol=0, atol=0)


def _decoded_path(cc: ChunkCache) -> None:
    """Make `cc` load chunks the old way: the store decodes to fp32, placing rotates after."""
    cc.store.get_payload = cc.store.get


@pytest.mark.parametrize("codec", ["int8", "int4"])
def test_answers_equal_the_decoded_path(tmp_path, tiny_model_dir, codec):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), codec=codec) as cc:
        cc.warm(PASSAGES)
        runs = [("reuse", None, None), ("blend", 0.5, None), ("blend", 0.5, "vattn")]
        fused = []
        for mode, ratio, deviation in runs:
            blend = None if deviation is None else BlendConfig(deviation_of=deviation)
            fused.append(cc.answer(QUESTION, PASSAGES, mode=mode, recompute_ratio=ratio, blend=blend,
                                   max_new_tokens=8, return_logprobs=True))
        assert all(p.hit for a in fused for p in a.passages)
        _decoded_path(cc)
        for (mode, ratio, deviation), ans in zip(runs, fused):
            blend = None if deviation is None else BlendConfig(deviation_of=deviation)
            old = cc.answer(QUESTION, PASSAGES, mode=mode, recompute_ratio=ratio, blend=blend,
                            max_new_tokens=8, return_logprobs=True)
            assert ans.token_ids == old.token_ids, (mode, deviation)
            torch.testing.assert_close(ans.first_logprobs, old.first_logprobs, rtol=1e-5, atol=1e-5)


def test_corrupt_payload_entries_are_recomputed(tmp_path, tiny_model_dir):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), codec="int8", memory_bytes=0) as cc:
        ref = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
        tier = cc.store._tiers.tiers[-1]
        for p in PASSAGES:
            key = cc.chunks.key(cc.prompt.passage_ids(as_passage(p)))
            blob = bytearray(tier.get(key))
            blob[len(blob) // 2] ^= 0xFF
            tier.put(key, bytes(blob))
        ans = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
        assert ans.token_ids == ref.token_ids
        assert [p.hit for p in ans.passages] == [False] * len(PASSAGES)
        assert cc.stats().corrupt == len(PASSAGES)
        again = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
        assert [p.hit for p in again.passages] == [True] * len(PASSAGES)
