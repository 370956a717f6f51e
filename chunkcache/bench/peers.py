"""Peers timed in the same run as chunkcache: Hugging Face `generate`, llama.cpp and vLLM-CPU.

Each peer answers the same token ids as chunkcache's `full` mode:
prefix_ids + passage_ids(chunk) for each chunk + suffix_ids(question), and is timed to its
first generated token. A peer gives `TimedVariant`s, so the runner interleaves them
with chunkcache's modes without knowing what they are.
"""

import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from chunkcache.bench.contexts import BenchContext
from chunkcache.bench.variants import Sample, TimedVariant
from chunkcache.prompt import Passage


@dataclass(frozen=True)
class PeerStatus:
    name: str
    available: bool
    detail: str  # what was run, or why it was skipped


def prompt_ids(cache, ctx: BenchContext, question: str | None = None) -> list[int]:
    """The full prompt's token ids, exactly as chunkcache's `full` mode sees them."""
    ids = list(cache.prompt.prefix_ids)
    for text in ctx.chunks:
        ids += cache.prompt.passage_ids(Passage(text))
    return ids + cache.prompt.suffix_ids(question or ctx.question)


def hf_generate_variant(cache) -> TimedVariant:
    """Plain `model.generate(max_new_tokens=1)` on the whole prompt; the clock includes tokenization
    (as chunkcache's TTFT does)."""
    model = cache.generator.model
    pad = cache.generator.spec.eos_token_ids[0] if cache.generator.spec.eos_token_ids else None

    def run(ctx: BenchContext) -> Sample:
        t0 = time.perf_counter()
        ids = torch.tensor([prompt_ids(cache, ctx)], device=cache.generator.device)  # [1, T]
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=pad)
        return Sample(time.perf_counter() - t0, prompt_tokens=ids.shape[1])

    return TimedVariant("hf_generate", run, "peer")


def gguf_for(model_dir: Path, model_arg: str | None) -> Path | None:
    """The GGUF file the generator was converted from, if any (llama.cpp needs the same weights)."""
    if model_arg and model_arg.endswith(".gguf") and Path(model_arg).is_file():
        return Path(model_arg)
    source = Path(model_dir) / "chunkcache-source.json"
    if source.is_file():
        path = Path(json.loads(source.read_text()).get("gguf", ""))
        if path.is_file():
            return path
    if model_arg in (None, "default"):
        from chunkcache.model_files import default_gguf_path

        return default_gguf_path()
    return None


class LlamaCppPeer:
    """llama.cpp (llama-cpp-python) on the GGUF the generator came from, n_threads = torch's.

    Two variants: `llama.cpp` resets the context and prefills the whole prompt; `llama.cpp+cache`
    first answers the same passages with another question (untimed), which leaves the state in
    llama-cpp-python's RAM prompt cache, resets the live context, then times the real question:
    the cache restores the longest shared prefix (prefix + passages) and only the question is
    prefilled. That is prefix caching at its best case (same passages, same order).
    Note that llama.cpp runs the GGUF's quantized weights (Q4_1 for the default model) while
    chunkcache and HF run the dequantized float32 weights.
    """

    def __init__(self, gguf: Path, n_ctx: int, vocab_size: int):
        import llama_cpp

        self.gguf = gguf
        self.version = getattr(llama_cpp, "__version__", "?")
        self.threads = torch.get_num_threads()
        self.llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
                                   verbose=False, seed=0)
        if self.llm.n_vocab() != vocab_size:
            raise RuntimeError(f"llama.cpp's vocabulary has {self.llm.n_vocab()} tokens, the generator's {vocab_size}")
        self.ram_cache = llama_cpp.LlamaRAMCache(capacity_bytes=1 << 30)

    def _ttft(self, ids: list[int]) -> Sample:
        t0 = time.perf_counter()
        stream = self.llm.create_completion(ids, max_tokens=1, temperature=0.0, stream=True)
        next(stream)
        elapsed = time.perf_counter() - t0
        for _ in stream:  # let it finish (and save its state to the prompt cache, if set)
            pass
        return Sample(elapsed, prompt_tokens=len(ids))

    def variants(self, cache) -> list[TimedVariant]:
        def cold(ctx: BenchContext) -> Sample:
            self.llm.set_cache(None)
            self.llm.reset()
            return self._ttft(prompt_ids(cache, ctx))

        def cached(ctx: BenchContext) -> Sample:
            self.llm.set_cache(self.ram_cache)
            self.llm.reset()
            self._ttft(prompt_ids(cache, ctx, ctx.prime_question))
            self.llm.reset()  # the prefix must come from the prompt cache, not the live context
            return self._ttft(prompt_ids(cache, ctx))

        return [TimedVariant("llama.cpp", cold, "peer"), TimedVariant("llama.cpp+cache", cached, "peer")]

    def close(self) -> None:
        self.llm.close()


def load_llamacpp(cache, model_arg: str | None, n_ctx: int) -> tuple[LlamaCppPeer | None, PeerStatus]:
    """The llama.cpp peer, or None and the reason it is skipped (an optional extra)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return None, PeerStatus("llama.cpp", False, f"skipped: llama-cpp-python is not installed ({exc}); "
                                "`pip install llama-cpp-python` (compiles llama.cpp) to include it")
    try:
        gguf = gguf_for(cache.model_dir, model_arg)
    except Exception as exc:  # the default GGUF package may be missing
        return None, PeerStatus("llama.cpp", False, f"skipped: no GGUF file ({exc})")
    if gguf is None:
        return None, PeerStatus("llama.cpp", False, "skipped: the generator was not converted from a GGUF file; pass --model X.gguf")
    try:
        peer = LlamaCppPeer(gguf, n_ctx, cache.generator.spec.vocab_size)
    except Exception as exc:
        return None, PeerStatus("llama.cpp", False, f"skipped: could not load {gguf} ({type(exc).__name__}: {exc})")
    return peer, PeerStatus("llama.cpp", True, f"llama-cpp-python {peer.version} on {gguf.name}, n_ctx {n_ctx}, "
                            f"{peer.threads} threads; +cache = RAM prompt cache restoring the shared prefix")


def hf_status(cache) -> PeerStatus:
    import transformers

    return PeerStatus("hf_generate", True, f"transformers {transformers.__version__} generate(max_new_tokens=1), "
                      f"{cache.generator.dtype}, attn {getattr(cache.generator.model.config, '_attn_implementation', '?')}, "
                      f"{torch.get_num_threads()} threads")


def vllm_python() -> Path:
    """The interpreter of vLLM's own venv: $CHUNKCACHE_VLLM_PYTHON, else .venv-vllm beside the repository
    (scripts/setup_vllm.sh creates it)."""
    import os

    if os.environ.get("CHUNKCACHE_VLLM_PYTHON"):
        return Path(os.environ["CHUNKCACHE_VLLM_PYTHON"])
    return Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


class VllmPeer:
    """vLLM-CPU (automatic prefix caching on, greedy, the generator's dtype, eager mode) in its own venv,
    driven over a pipe (chunkcache/integrations/vllm_worker.py), timed inside the worker from token
    ids in to the first token out.

    Variants: `vllm` drops the prefix cache first (cold); `vllm+repeat` answers the same
    prompt untimed, then times it again (an exact repeat: every block but the last is a hit);
    `vllm+reorder` answers the same passages in reverse order untimed, then times the original
    order (the RAG case: only the shared prefix is a hit, because a block's hash chains every
    token before it); `vllm+chunkcache` times the passages in reverse order with chunkcache's KV
    connector (`chunkcache.integrations.vllm`) on the bench's store: each passage's KV comes from
    the store, re-positioned, and vLLM computes the question only.
    """

    def __init__(self, python: Path, model_dir: Path, dtype: str, max_model_len: int, threads: int, connector: dict | None = None):
        import subprocess

        repo = Path(__file__).resolve().parents[2]  # run as a module from here: chunkcache need not be installed there
        self.threads = threads
        self.proc = subprocess.Popen([str(python), "-m", "chunkcache.integrations.vllm_worker"], cwd=repo, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        ready = self._call({"model": str(model_dir), "dtype": dtype, "max_model_len": max_model_len, "threads": threads,
                            "kv_connector": connector})
        self.connector = connector is not None
        self.version = ready["vllm"]

    def _call(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the vLLM worker exited (code {self.proc.wait()}); run it by hand to see why")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"vLLM worker: {reply['error']}")
        return reply

    def generate(self, ids: list[int], max_tokens: int = 1, reset: bool = False, params: dict | None = None) -> dict:
        return self._call({"op": "generate", "ids": ids, "max_tokens": max_tokens, "reset": reset, "kv_transfer_params": params})

    def variants(self, cache) -> list[TimedVariant]:
        def sample(reply: dict) -> Sample:
            return Sample(reply["wall_s"], prompt_tokens=reply["prompt_tokens"])

        def cold(ctx: BenchContext) -> Sample:
            return sample(self.generate(prompt_ids(cache, ctx), reset=True))

        def repeat(ctx: BenchContext) -> Sample:
            ids = prompt_ids(cache, ctx)
            self.generate(ids)
            return sample(self.generate(ids))

        def reorder(ctx: BenchContext) -> Sample:
            self.generate(prompt_ids(cache, replace(ctx, chunks=ctx.chunks[::-1])), reset=True)
            return sample(self.generate(prompt_ids(cache, ctx)))

        def chunkcache_reorder(ctx: BenchContext) -> Sample:
            from chunkcache.integrations.vllm_plan import request_params

            reverse = replace(ctx, chunks=ctx.chunks[::-1])
            chunks = [cache.prompt.passage_ids(Passage(c)) for c in reverse.chunks]
            # Untimed: the first passage alone, so the store holds vLLM's prefix entry (ChunkCache has no use for one);
            # otherwise vLLM would compute this whole prompt once and store it as exact chain entries.
            self.generate(prompt_ids(cache, replace(reverse, chunks=reverse.chunks[:1])), params=request_params(chunks[:1]))
            reply = self.generate(prompt_ids(cache, reverse), reset=True, params=request_params(chunks))
            if reply["cached_tokens"] < sum(map(len, chunks)):
                raise RuntimeError(f"vLLM+chunkcache loaded only {reply['cached_tokens']} prompt tokens: a passage missed the store")
            return sample(reply)

        out = [TimedVariant("vllm", cold, "peer"), TimedVariant("vllm+repeat", repeat, "peer"),
               TimedVariant("vllm+reorder", reorder, "peer")]
        if self.connector:
            out.append(TimedVariant("vllm+chunkcache", chunkcache_reorder, "peer"))
        return out

    def decode(self, cache, ctx: BenchContext, max_new_tokens: int, repeats: int) -> dict:
        """Decode tokens/s after the first (engine timestamps of the first and last token), median of `repeats`."""
        ids = prompt_ids(cache, ctx)
        self.generate(ids, max_tokens=2)  # untimed: first-call costs
        runs = [self.generate(ids, max_tokens=max_new_tokens, reset=True) for _ in range(repeats)]
        rates = [(len(r["tokens"]) - 1) / r["decode_s"] for r in runs if r["decode_s"]]
        rate = statistics.median(rates) if rates else None
        return {"tokens": [len(r["tokens"]) - 1 for r in runs], "tokens_per_s": rate,
                "ms_per_token": None if rate is None else 1000 / rate, "peak_mib": None}

    def close(self) -> None:
        try:
            self._call({"op": "quit"}) if self.proc.poll() is None else None
        except (RuntimeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


def load_vllm(cache, n_ctx: int) -> tuple[VllmPeer | None, PeerStatus]:
    """The vLLM peer, or None and the reason it is skipped (vLLM lives in its own venv)."""
    python = vllm_python()
    if not python.is_file():
        return None, PeerStatus("vllm", False, f"skipped: vLLM is not installed ({python} does not exist); "
                                "run `bash scripts/setup_vllm.sh` to include it")
    from chunkcache.integrations.vllm_plan import connector_settings

    dtype = str(cache.generator.dtype).removeprefix("torch.")
    max_len = -(-n_ctx // 256) * 256
    try:
        peer = VllmPeer(python, cache.model_dir, dtype, max_len, torch.get_num_threads(), connector_settings(cache))
    except Exception as exc:
        return None, PeerStatus("vllm", False, f"skipped: vLLM did not start ({type(exc).__name__}: {exc})")
    return peer, PeerStatus("vllm", True, f"vLLM-CPU {peer.version} ({python.parent.parent.name}) on {Path(cache.model_dir).name}, "
                            f"{dtype}, eager, prefix caching on, greedy, {peer.threads} bound OpenMP thread(s), max_model_len {max_len}; "
                            "timed in the worker from token ids in to the first token out; +repeat = the same prompt again, "
                            "+reorder = the same passages after a request with them in reverse order; +chunkcache = the passages "
                            "in reverse order with chunkcache's KV connector on this store, vLLM's prefix cache dropped first "
                            "(every passage loaded from chunkcache's store, re-positioned)")
