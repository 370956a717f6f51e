"""ChunkCache.query over the bundled demo corpus on the real default model."""

from pathlib import Path

import pytest

from chunkcache import ChunkCache, InvalidRequestError, NotFoundError
from chunkcache.prompt import Passage
from chunkcache.retrieval import load_paths

pytestmark = pytest.mark.slow  # the corpus and answers run on the real default model

DOCS = Path(__file__).resolve().parents[2] / "chunkcache" / "demo" / "docs"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, default_model_dir):
    cc = ChunkCache(store_dir=str(tmp_path_factory.mktemp("query")), model=str(default_model_dir))
    cc.add_documents(load_paths([str(DOCS)]))
    yield cc
    cc.close()


def test_query_retrieves_the_passage_with_the_answer(cache):
    ans = cache.query("Which store sits in front of the LMDB database on disk?", top_k=3, max_new_tokens=8)
    assert ans.passages[0].doc_id == "03-storage.md"
    assert all(p.doc_id is not None and p.score is not None for p in ans.passages)
    assert ans.timings.retrieval > 0 and ans.ttft_s >= ans.timings.retrieval


def test_warm_corpus_makes_every_chunk_a_hit(cache):
    # Other tests of this module may have stored some chunks already: warm-up computes exactly
    # the indexed chunks whose KV is not stored yet.
    records = list(cache.corpus.iter_chunks())
    keys = {cache.chunks.key(cache.prompt.passage_ids(Passage(r.text, r.title))) for r in records}
    missing = sum(not cache.store.contains(k) for k in keys)
    assert cache.warm_corpus() == missing
    assert all(cache.store.contains(k) for k in keys)
    assert cache.warm_corpus() == 0  # resumable: nothing left to do
    ans = cache.query("What does the API key protect?", top_k=4, max_new_tokens=4)
    assert all(p.hit for p in ans.passages)


def test_document_order_option(cache):
    ans = cache.query("How are caches blended and stored?", top_k=4, order="document", max_new_tokens=2)
    keys = [(p.doc_id, p.ordinal) for p in ans.passages]
    assert keys == sorted(keys)


def test_replace_and_delete_documents(cache):
    cache.add_documents([{"id": "extra", "title": "Kettles", "text": "The blue kettle in the staff kitchen whistles at ninety degrees."}])
    assert cache.get_document("extra").title == "Kettles"
    ans = cache.query("At what temperature does the blue kettle whistle?", top_k=1, max_new_tokens=2)
    assert ans.passages[0].doc_id == "extra"
    cache.add_documents([{"id": "extra", "title": "Kettles", "text": "The red kettle in the workshop never whistles at all."}])
    assert "red kettle" in cache.get_document("extra").text
    red = cache.query("Does the red kettle whistle?", top_k=1, max_new_tokens=2)  # stores the red kettle's KV
    assert red.passages[0].doc_id == "extra"
    key = cache.chunks.key(cache.prompt.passage_ids(Passage(cache.get_document("extra").text, "Kettles")))
    assert cache.store.contains(key)
    before = len(cache.list_documents(limit=100))
    freed = cache.delete_document("extra")
    assert len(freed) == 1
    assert not cache.store.contains(key), "the freed chunk's KV is dropped with it"
    assert len(cache.list_documents(limit=100)) == before - 1
    with pytest.raises(NotFoundError):
        cache.get_document("extra")
    with pytest.raises(NotFoundError):
        cache.delete_document("extra")


def test_query_bad_input(cache):
    with pytest.raises(InvalidRequestError, match="top_k"):
        cache.query("anything", top_k=0)
    with pytest.raises(InvalidRequestError, match="question is empty"):
        cache.query(" ")
