"""Shared fixtures: the real default model (converted once per machine) and a tiny random Llama."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Before anything imports triton (transformers pulls it in through torch._dynamo): kernel tests
# run Triton's CPU interpreter, and its language helpers only work if this is set first.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_store(tmp_path_factory) -> Path:
    """Store dir holding the converted SmolLM2 (kept across runs when CHUNKCACHE_TEST_STORE is set)."""
    env = os.environ.get("CHUNKCACHE_TEST_STORE")
    path = Path(env) if env else tmp_path_factory.mktemp("store")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def default_model_dir(default_store) -> Path:
    from chunkcache.model_files import resolve_model_dir

    return resolve_model_dir(None, default_store)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir) -> Path:
    """A 2-layer random Llama (GQA, head_dim 16) with the default model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(default_model_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        rope_theta=10000.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def one_blas_thread():
    """One BLAS/OpenMP thread for the test: the CI box is shared, and spinning OpenMP workers on
    an oversubscribed CPU make tiny FAISS and MiniLM calls 10-20x slower. Restored after."""
    import faiss
    import torch

    faiss_threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(faiss_threads)
    torch.set_num_threads(torch_threads)
