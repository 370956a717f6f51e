"""Full mode never looks at the cache: its passages are "not used", neither hits nor misses.
After it, the same passages in the same order are "exact" (its chain entries); without chain
entries a first reuse misses and a second hits."""

from chunkcache import ChunkCache

PASSAGES = ["The ferry leaves at seven.", {"title": "Mill", "text": "The mill grinds barley."}]


def test_full_mode_reports_the_cache_as_not_used(tiny_model_dir, tmp_path):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), persist=False) as cc:
        full = cc.answer("When does the ferry leave?", PASSAGES, mode="full", max_new_tokens=1)
        exact = cc.answer("When does the ferry leave?", PASSAGES, mode="reuse", max_new_tokens=1)
        first = cc.answer("When does the ferry leave?", PASSAGES, mode="reuse", max_new_tokens=1, chain=False)
        again = cc.answer("When does the ferry leave?", PASSAGES, mode="reuse", max_new_tokens=1, chain=False)
    assert [(p.hit, p.cache) for p in exact.passages] == [(True, "exact")] * 2 and exact.exact_passages == 2
    assert [(p.hit, p.cache) for p in full.passages] == [(None, "not used")] * 2
    assert (full.cache_hits, full.cache_misses) == (0, 0)
    assert [(p.hit, p.cache) for p in first.passages] == [(False, "miss")] * 2 and first.cache_misses == 2
    assert [(p.hit, p.cache) for p in again.passages] == [(True, "hit")] * 2 and again.cache_hits == 2
