"""The columns of the TTFT sweep: each a name and a function timing one answer."""

from collections.abc import Callable
from dataclasses import dataclass

from chunkcache.bench.contexts import BenchContext

PEERS = ("hf", "llamacpp", "vllm")  # peers the bench can time beside chunkcache (chunkcache.bench.peers)
DEFAULT_PEERS = ("hf", "llamacpp")  # vllm is asked for by name: its engine start and cold prefills cost minutes here


@dataclass(frozen=True)
class Sample:
    """One timed answer. load_s: reading and decoding the chunk KV (chunkcache's cached modes)."""

    ttft_s: float
    load_s: float | None = None
    prompt_tokens: int | None = None


@dataclass(frozen=True)
class TimedVariant:
    """`run(context)` answers the context once and returns its Sample."""

    name: str
    run: Callable[[BenchContext], Sample]
    kind: str = "chunkcache"  # "chunkcache" | "peer"


def variant_name(mode: str, ratio: float | None = None) -> str:
    return f"blend@{ratio:g}" if mode == "blend" else mode


def chunkcache_variant(cache, mode: str, ratio: float | None = None) -> TimedVariant:
    """chunkcache answering with max_new_tokens=1; TTFT as the facade reports it (tokenize, KV load
    from the store, re-positioning, prefill or recompute, first token)."""

    def run(ctx: BenchContext) -> Sample:
        ans = cache.answer(ctx.question, list(ctx.chunks), mode=mode, recompute_ratio=ratio, max_new_tokens=1)
        return Sample(ans.ttft_s, ans.timings.lookup if mode != "full" else None, ans.prompt_tokens)

    return TimedVariant(variant_name(mode, ratio), run)
