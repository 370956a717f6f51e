"""Fixtures for chunkcache.retrieval: a fake and the real generator tokenizer, embedders."""

from __future__ import annotations

import os

import pytest

from retrieval_fakes import HashEmbedder, RegexTokenizer

@pytest.fixture(scope="session")
def real_tokenizer(default_model_dir):
    """The default generator's own tokenizer (the model the suite converts once), or the one at
    $CHUNKCACHE_TEST_TOKENIZER when that is set."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.environ.get("CHUNKCACHE_TEST_TOKENIZER") or default_model_dir)


@pytest.fixture(scope="session", params=["fake", "real"])
def tokenizer(request):
    """Every chunker test runs with the fake tokenizer and, when present, the real one."""
    if request.param == "fake":
        return RegexTokenizer()
    return request.getfixturevalue("real_tokenizer")


@pytest.fixture(scope="session")
def fake_tokenizer():
    return RegexTokenizer()


@pytest.fixture
def hash_embedder():
    return HashEmbedder()


@pytest.fixture(scope="session")
def minilm():
    """The real default embedder (all-MiniLM-L6-v2), loaded once."""
    from chunkcache.retrieval import Embedder

    return Embedder()


@pytest.fixture(autouse=True)
def _one_thread():
    """One BLAS/OpenMP thread per test: the CI box is shared, and spinning OpenMP workers on
    an oversubscribed CPU make tiny FAISS and MiniLM calls 10-20x slower. Restored after."""
    import faiss
    import torch

    faiss_threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(faiss_threads)
    torch.set_num_threads(torch_threads)
