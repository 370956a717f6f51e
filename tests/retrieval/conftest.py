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
def _one_thread(one_blas_thread):
    """Every retrieval test runs with one BLAS/OpenMP thread (see `one_blas_thread`)."""
    yield
