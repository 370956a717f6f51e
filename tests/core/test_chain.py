"""Chain entries (exact in-context KV of repeated contexts), prefix mode, idle refinement, warm_exact."""

import time

import lmdb
import pytest
import torch

from chunkcache import ChunkCache
from chunkcache.chain import prompt_links
from chunkcache.chunk_kv import new_working_kv
from chunkcache.config import RefineConfig
from chunkcache.errors import InvalidRequestError
from chunkcache.prompt import as_passage
from chunkcache.storage import chain_keys, chunk_key
from chunkcache.storage.lmdb_tier import DATA_DB

A = {"title": "Ferry", "text": "The ferry to Orlen leaves at seven and returns at noon."}
B = {"title": "Mill", "text": "The old mill by the river grinds barley for three villages."}
C = {"title": "Bell", "text": "The chapel bell was cast in 1802 from melted cannons."}
D = {"title": "Road", "text": "The north road floods every spring when the snow melts."}
Q = "When does the ferry leave?"


@pytest.fixture
def cc(tiny_model_dir, tmp_path):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cache:
        yield cache


def test_chain_keys_name_a_chunk_behind_every_chunk_before_it():
    k = chain_keys("m", "p", [[1, 2], [3], [4]], "fp32")
    assert len(k) == 3 and len(set(k)) == 3
    assert chain_keys("m", "p", [[1, 2], [3]], "fp32") == k[:2]  # a leading run shares its keys
    assert chain_keys("m", "p", [[3], [1, 2]], "fp32")[1] != k[0]  # order matters
    assert chain_keys("m", "p", [[1, 2], [3]], "fp32")[1] != chain_keys("m", "p", [[1], [2, 3]], "fp32")[1]  # boundaries matter
    assert k[0] != chunk_key("m", "p", [1, 2], "fp32")  # never a per-chunk key
    assert chain_keys("m", "p", [[1, 2]], "fp16")[0] != k[0]


@pytest.mark.parametrize("mode", ["reuse", "blend", "prefix"])
def test_an_exact_repeat_gives_full_prefills_tokens(cc, mode):
    full = cc.answer(Q, [A, B, C], mode="full", max_new_tokens=8, return_logprobs=True)
    again = cc.answer(Q, [A, B, C], mode=mode, max_new_tokens=8, return_logprobs=True)
    assert again.token_ids == full.token_ids
    torch.testing.assert_close(again.first_logprobs, full.first_logprobs, atol=1e-4, rtol=0)
    assert [p.cache for p in again.passages] == ["exact"] * 3 and again.recomputed_tokens == 0


def test_a_shared_leading_run_is_exact_and_only_the_rest_is_blended(cc):
    cc.answer(Q, [A, B, C], mode="full", max_new_tokens=2)
    ans = cc.answer(Q, [A, B, D], mode="blend", recompute_ratio=0.5, max_new_tokens=2)
    assert [p.cache for p in ans.passages] == ["exact", "exact", "miss"]
    d_tokens = ans.passages[2].tokens
    assert 0 < ans.recomputed_tokens <= -(-d_tokens // 2) + 1  # the ratio applies to D's tokens only
    # prefix mode prefills D behind the exact run: the tokens of a full prefill of [A, B, D]
    prefix = cc.answer(Q, [A, B, D], mode="prefix", max_new_tokens=6)
    full = cc.answer(Q, [A, B, D], mode="full", max_new_tokens=6, chain=False)
    assert prefix.token_ids == full.token_ids and prefix.recomputed_tokens == d_tokens
    assert [p.cache for p in cc.answer(Q, [A, B, D], mode="reuse", max_new_tokens=1).passages] == ["exact"] * 3


def test_without_chain_entries_nothing_is_exact(cc):
    cc.answer(Q, [A, B], mode="full", max_new_tokens=1, chain=False)
    assert [p.cache for p in cc.answer(Q, [A, B], mode="reuse", max_new_tokens=1).passages] == ["miss", "miss"]
    cc.answer(Q, [A, B], mode="full", max_new_tokens=1)
    assert [p.cache for p in cc.answer(Q, [A, B], mode="reuse", max_new_tokens=1, chain=False).passages] == ["hit", "hit"]


def test_prefix_mode_needs_chain_entries(tiny_model_dir, tmp_path):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), chain_entries=False) as cache:
        with pytest.raises(InvalidRequestError, match="chain entries"):
            cache.answer(Q, [A], mode="prefix", max_new_tokens=1)


def test_a_corrupt_chain_entry_ends_the_run_and_is_recomputed(tiny_model_dir, tmp_path):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), memory_bytes=0) as cache:
        full = cache.answer(Q, [A, B, C], mode="full", max_new_tokens=6)
        ids = [cache.prompt.passage_ids(cache_p) for cache_p in map(__import__("chunkcache.prompt", fromlist=["as_passage"]).as_passage, [A, B, C])]
        key = cache.chains.keys(ids)[1]
    env = lmdb.open(str(tmp_path / "kv"), max_dbs=8, subdir=True)
    with env.begin(write=True, db=env.open_db(DATA_DB)) as txn:
        blob = bytearray(txn.get(key))
        blob[len(blob) // 2] ^= 0xFF
        txn.put(key, bytes(blob))
    env.close()
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), memory_bytes=0) as cache:
        ans = cache.answer(Q, [A, B, C], mode="prefix", max_new_tokens=6)
        assert [p.cache for p in ans.passages] == ["exact", "miss", "miss"] and cache.stats().corrupt == 1
        assert ans.token_ids == full.token_ids  # B and C prefilled behind A: exact, and stored again
        assert [p.cache for p in cache.answer(Q, [A, B, C], mode="reuse", max_new_tokens=1).passages] == ["exact"] * 3


def test_warm_exact_makes_the_first_answer_exact(cc):
    assert cc.warm_exact([[A, B], [A, C]]) == 2
    assert cc.warm_exact([[A, B]]) == 0  # stored already
    full = cc.answer(Q, [A, C], mode="full", max_new_tokens=6, chain=False)
    ans = cc.answer(Q, [A, C], mode="blend", max_new_tokens=6)
    assert [p.cache for p in ans.passages] == ["exact", "exact"] and ans.token_ids == full.token_ids


def test_idle_refinement_makes_a_blended_contexts_next_answer_exact(tiny_model_dir, tmp_path):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), refine=RefineConfig(enabled=True, idle_s=0.0)) as cache:
        first = cache.answer(Q, [C, D], mode="blend", max_new_tokens=6)
        assert [p.cache for p in first.passages] == ["miss", "miss"]
        deadline = time.monotonic() + 60
        while cache.refiner.stats().refined < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = cache.refiner.stats()
        assert stats.refined == 1 and stats.bytes > 0 and stats.layers > 0 and stats.pending == 0
        again = cache.answer(Q, [C, D], mode="blend", max_new_tokens=6)
        full = cache.answer(Q, [C, D], mode="full", max_new_tokens=6, chain=False)
        assert [p.cache for p in again.passages] == ["exact", "exact"] and again.token_ids == full.token_ids


def test_refinement_gives_way_to_requests(tiny_model_dir, tmp_path):
    busy = {"on": True}
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cache:
        from chunkcache.refiner import Refiner

        refiner = Refiner(cache.engine, cache.prefix, cache.chains, cache._lock, lambda: busy["on"],
                          RefineConfig(enabled=True, idle_s=0.0))
        ids = tuple(tuple(cache.prompt.passage_ids(__import__("chunkcache.prompt", fromlist=["as_passage"]).as_passage(p))) for p in (A, B))
        refiner.note(ids)
        time.sleep(0.5)
        assert refiner.stats().layers == 0 and refiner.stats().refined == 0  # a request is in progress: it waits
        busy["on"] = False
        deadline = time.monotonic() + 60
        while refiner.stats().refined < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert refiner.stats().refined == 1 and cache.chains.stored_run(ids) == 2
        refiner.close()


@pytest.mark.parametrize("eviction, kept", [("lfu", True), ("lru", False)])
def test_a_disk_budget_under_lfu_keeps_the_most_reused_context(tiny_model_dir, tmp_path, eviction, kept):
    def ids(cache, passages):
        from chunkcache.prompt import as_passage

        return [cache.prompt.passage_ids(as_passage(p)) for p in passages]

    with ChunkCache(store_dir=str(tmp_path / "size"), model=str(tiny_model_dir), memory_bytes=0) as cache:
        cache.answer(Q, [A, B], mode="full", max_new_tokens=1)
        ab = cache.stats().bytes
        cache.answer(Q, [C, D], mode="full", max_new_tokens=1)
        one_context = max(ab, cache.stats().bytes - ab)  # room for two of the larger context, not three
    with ChunkCache(store_dir=str(tmp_path / eviction), model=str(tiny_model_dir), memory_bytes=0,
                    disk_bytes=int(2.5 * one_context), eviction=eviction) as cache:
        cache.answer(Q, [A, B], mode="full", max_new_tokens=1)
        for _ in range(3):  # a popular context: its chain entries are read again and again
            assert [p.cache for p in cache.answer(Q, [A, B], mode="reuse", max_new_tokens=1).passages] == ["exact"] * 2
        cache.answer(Q, [C, D], mode="full", max_new_tokens=1)  # seen once
        cache.answer(Q, [D, C], mode="full", max_new_tokens=1)  # over budget: one context must go
        assert cache.stats().evictions > 0
        assert (cache.chains.stored_run(ids(cache, [A, B])) == 2) is kept
        assert cache.chains.stored_run(ids(cache, [D, C])) == 2  # the entry being written is never the victim


def test_a_repeat_of_the_whole_prompt_computes_only_its_last_token(cc):
    full = cc.answer(Q, [A, B, C], mode="full", max_new_tokens=8, return_logprobs=True)
    assert not full.question_exact
    for mode in ("blend", "reuse", "prefix"):
        again = cc.answer(Q, [A, B, C], mode=mode, max_new_tokens=8, return_logprobs=True)
        assert again.question_exact and again.token_ids == full.token_ids, mode
        torch.testing.assert_close(again.first_logprobs, full.first_logprobs, atol=1e-4, rtol=0)
        assert again.prompt_tokens == full.prompt_tokens and again.context_tokens == full.context_tokens
    # Another question over the same passages: the passages are exact, its question is computed
    # (and a key with the passages in another order never matches the question link).
    other = cc.answer("Where does the ferry go?", [A, B, C], mode="blend", max_new_tokens=2)
    assert [p.cache for p in other.passages] == ["exact"] * 3 and not other.question_exact
    assert not cc.answer(Q, [B, A, C], mode="reuse", max_new_tokens=1).question_exact


def test_the_question_link_is_the_full_prefills_kv_of_the_questions_tokens(cc):
    cc.answer(Q, [A, B], mode="full", max_new_tokens=1)
    ids = [cc.prompt.passage_ids(as_passage(p)) for p in (A, B)]
    suffix = cc.prompt.suffix_ids(Q)
    links = prompt_links(ids, suffix)
    assert links[-1] == suffix[:-1] and cc.chains.stored_run(links) == 3
    # The same prompt prefilled by hand: [prefix][A][B][question] in one forward.
    engine, p = cc.engine, cc.prefix.length
    n = sum(map(len, ids))
    with torch.inference_mode():
        kv = new_working_kv(engine, cc.prefix, n + len(suffix))
        tokens = torch.tensor([t for c in ids for t in c] + suffix)
        engine.prefill(kv, tokens, torch.arange(p, p + tokens.numel()), keep=1)
    stored = cc.chains.lookup(links)[-1]
    ref = torch.stack((kv.k[:, :, p + n:p + n + len(suffix) - 1], kv.v[:, :, p + n:p + n + len(suffix) - 1]), dim=1)
    torch.testing.assert_close(stored.q, ref, atol=1e-5, rtol=0)  # fp32, lossless: the very bytes


def test_warm_queries_stores_the_question_too(tiny_model_dir, tmp_path):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cache:
        cache.add_documents([{"id": k, **d} for k, d in zip("abcd", (A, B, C, D))])
        assert cache.warm_queries([Q], top_k=2) == 1
        ans = cache.query(Q, top_k=2, max_new_tokens=1)
        assert ans.question_exact and ans.exact_passages == 2
