"""vLLM-CPU tests: run in vLLM's own venv (`bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest
-q tests/vllm`, a step of .ci/run); scripts/test.sh does not collect them (pyproject: --ignore=tests/vllm)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")  # one bound thread: the machine is shared
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The default model converted to safetensors, where scripts/test.sh keeps it (converted here if missing)."""
    from chunkcache.model_files import resolve_model_dir

    store = Path(os.environ.get("CHUNKCACHE_TEST_STORE", REPO / ".store" / "test"))
    return resolve_model_dir(None, store)


@pytest.fixture(scope="session")
def model_bits(model_dir):
    """(fingerprint, PromptBuilder) as chunkcache computes them, from this venv's transformers."""
    from chunkcache.model_files import load_model, model_fingerprint
    from chunkcache.prompt import PromptBuilder, PromptConfig

    model, tokenizer = load_model(model_dir)
    fingerprint = model_fingerprint(model, model.config.to_dict())
    del model
    return fingerprint, PromptBuilder(tokenizer, PromptConfig())
