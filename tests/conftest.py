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


# What the tiny tokenizer learns its merges from: words the tests' passages and questions use, so
# they take a few tokens each; any other text still tokenizes (byte-level: every byte is a token).
_TINY_CORPUS = (
    "The ferry leaves at seven o'clock from the north pier. When does the ferry leave?",
    "Alice wrote the report about the river. Who wrote the report? The answer is Alice.",
    "A passage about the city, its bridge and its harbour. Paris is the capital of France.",
    "Question: what does the note say? Answer the question using the passages below.",
    "You are a helpful assistant. Use the documents to answer. Title: Notes. Text: one two three.",
)
# ChatML, as SmolLM2 writes it: the prompt builder needs a plain template it can split at the passages.
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level BPE (at most 512 tokens) trained here on `_TINY_CORPUS`, with a ChatML chat template:
    self-contained and offline, unlike borrowing a downloaded model's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_TINY_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.chat_template = _TINY_CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama (GQA, head_dim 16) with the tiny byte-level tokenizer and a ChatML template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tiny_tokenizer()
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
