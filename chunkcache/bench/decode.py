"""Decode speed and peak memory of one whole answer, chunkcache's modes beside Hugging Face.

Decode speed is generated tokens after the first divided by the time after the first token
(TTFT excluded), greedy, on the prompt of the TTFT sweep. Hugging Face `generate` is clocked by
a streamer that stamps each new token. Peak memory is the resident memory one answer adds
(`bench.memory`), measured on its own call so the polling thread does not slow the timed ones.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from chunkcache.bench.contexts import BenchContext
from chunkcache.bench.memory import peak_cuda_bytes, peak_rss_above_start
from chunkcache.bench.peers import prompt_ids
from chunkcache.bench.variants import variant_name


@dataclass(frozen=True)
class DecodeRun:
    tokens: int  # generated after the first
    decode_s: float  # time after the first token


Runner = Callable[[BenchContext, int], DecodeRun]


def chunkcache_decode(cache, mode: str, ratio: float | None = None) -> Runner:
    def run(ctx: BenchContext, max_new_tokens: int) -> DecodeRun:
        ans = cache.answer(ctx.question, list(ctx.chunks), mode=mode, recompute_ratio=ratio, max_new_tokens=max_new_tokens)
        return DecodeRun(ans.generated_tokens - 1, ans.timings.decode)

    return run


class _TokenClock:
    """A `generate` streamer that stamps every generated token (the first `put` is the prompt)."""

    def __init__(self):
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if self._prompt_seen:
            self.stamps.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def hf_decode(cache) -> Runner:
    model = cache.generator.model
    pad = cache.generator.spec.eos_token_ids[0] if cache.generator.spec.eos_token_ids else None

    def run(ctx: BenchContext, max_new_tokens: int) -> DecodeRun:
        ids = torch.tensor([prompt_ids(cache, ctx)], device=cache.generator.device)
        clock = _TokenClock()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=pad, streamer=clock)
        return DecodeRun(len(clock.stamps) - 1, clock.stamps[-1] - clock.stamps[0])

    return run


def decode_runners(cache, ratio: float, hf: bool) -> dict[str, Runner]:
    runners = {"full": chunkcache_decode(cache, "full"), "reuse": chunkcache_decode(cache, "reuse"),
               variant_name("blend", ratio): chunkcache_decode(cache, "blend", ratio)}
    if hf:
        runners["hf_generate"] = hf_decode(cache)
    return runners


def peak_bytes(cache, fn: Callable[[], object]) -> int | None:
    dev = cache.generator.device
    if dev.type == "cuda":
        return peak_cuda_bytes(fn, dev)[1]
    return peak_rss_above_start(fn)[1]


def measure_decode(cache, ctx: BenchContext, memory_ctx: BenchContext, ratio: float, hf: bool,
                   max_new_tokens: int = 32, repeats: int = 3) -> dict:
    """Per variant: median decode tokens/s on `ctx` over `repeats` answers of up to
    `max_new_tokens`, and the peak memory of one answer on `memory_ctx` (the largest context)."""
    runners = decode_runners(cache, ratio, hf)
    for run in runners.values():
        run(ctx, 2)  # untimed: first-call costs
    # Repeats interleave the variants (order rotated each time), so drift hits every one alike.
    names = list(runners)
    timed: dict[str, list[DecodeRun]] = {name: [] for name in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            timed[name].append(runners[name](ctx, max_new_tokens))
    out = {}
    for name, run in runners.items():
        runs = timed[name]
        rates = [r.tokens / r.decode_s for r in runs if r.tokens > 0 and r.decode_s > 0]
        peak = peak_bytes(cache, lambda: run(memory_ctx, max_new_tokens))
        out[name] = {
            "tokens": [r.tokens for r in runs],
            "tokens_per_s": statistics.median(rates) if rates else None,
            "ms_per_token": 1000 / statistics.median(rates) if rates else None,
            "peak_mib": None if peak is None else round(peak / 2**20, 1),
        }
    return {"chunks": len(ctx.chunks), "memory_chunks": len(memory_ctx.chunks), "max_new_tokens": max_new_tokens,
            "repeats": repeats, "variants": out}
