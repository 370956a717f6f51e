"""BM25 and reciprocal-rank fusion."""

from chunkcache.retrieval.bm25 import BM25Index, reciprocal_rank_fusion, terms


def test_terms_fold_case_accents_and_drop_stopwords():
    assert terms("The Café in Zürich, and THE 3 cats") == ["cafe", "zurich", "3", "cats"]


def test_rare_matching_terms_rank_first_and_removal_forgets():
    bm25 = BM25Index()
    bm25.add_many([
        (1, "Lyon is a city in France with a famous silk industry."),
        (2, "Paris is the capital of France."),
        (3, "Kyoto was the capital of Japan for a thousand years."),
    ])
    assert [i for i, _ in bm25.search("capital of Japan", 3)] == [3, 2]
    assert bm25.search("silk", 5)[0][0] == 1
    bm25.remove(3)
    assert len(bm25) == 2 and [i for i, _ in bm25.search("Japan", 3)] == []
    assert bm25.search("", 3) == []


def test_reciprocal_rank_fusion_rewards_agreement():
    fused = reciprocal_rank_fusion([[1, 2, 3], [2, 4, 1]], k=60)
    assert [i for i, _ in fused] == [2, 1, 4, 3]
    assert abs(fused[0][1] - (1 / 62 + 1 / 61)) < 1e-12
