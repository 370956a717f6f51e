"""One request, from token ids to generated text, in any of the four modes.

Modes (all reuse the shared prefix's KV):
  full   plain prefill of every context and question token (the baseline);
  reuse  the chunks' cached KV placed at their positions, only the question is prefilled;
  blend  reuse plus CacheBlend's selective recompute of the most deviating context tokens;
  ape    parallel encoding: every chunk at the same positions after the prefix, the question's
         attention to the contexts tempered and rescaled (APE), no recompute.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from chunkcache.blending import chunk_starts_forced
from chunkcache.chunks import PrefixKV, new_working_kv
from chunkcache.engine import BlendPlan, Engine
from chunkcache.kernels import dequant_rope
from chunkcache.sampling import Sampler


@dataclass(frozen=True)
class Request:
    """A tokenized request. chunk_ids: one token list per passage, in prompt order."""

    mode: str
    chunk_ids: tuple[tuple[int, ...], ...]
    suffix_ids: tuple[int, ...]
    max_new_tokens: int
    plan: BlendPlan | None = None


@dataclass(frozen=True)
class Generated:
    token_ids: tuple[int, ...]
    first_logits: torch.Tensor  # [V]
    ttft_s: float
    prefill_s: float
    reposition_s: float
    decode_s: float
    recomputed: int
    finish_reason: str


def _assemble(engine: Engine, prefix: PrefixKV, req: Request, cached: list[torch.Tensor], capacity: int, ape: bool):
    """Place cached chunk KV ([L, 2, Hkv, n, d] pre-RoPE each) into a new working cache.

    Returns (kv, context slots [N], the stacked cached KV [L, 2, Hkv, N, d], suffix start position).
    """
    p = prefix.length
    lengths = [len(c) for c in req.chunk_ids]
    kv = new_working_kv(engine, prefix, capacity)
    if ape:
        positions = torch.cat([torch.arange(p, p + n) for n in lengths])
        suffix_start = p + max(lengths)
    else:
        positions = torch.arange(p, p + sum(lengths))
        suffix_start = p + sum(lengths)
    slots = kv.reserve(positions)
    stacked = torch.cat(cached, dim=3).to(kv.k.dtype)  # [L, 2, Hkv, N, d]
    inv_freq, scaling = engine.gen.rope_frequencies(positions)
    k_rot, v = dequant_rope(stacked[:, 0], None, stacked[:, 1], None, positions, inv_freq, scaling, "fp32", kv.k.dtype)
    kv.write_span(p, k_rot, v)
    if ape:
        kv.ape_slots = (p, p + sum(lengths))
    return kv, slots, stacked, suffix_start


def generate(
    engine: Engine,
    prefix: PrefixKV,
    req: Request,
    cached: list[torch.Tensor] | None,
    sampler: Sampler,
    t_start: float,
    on_token: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Generated:
    """Run the prompt in `req.mode` and decode. `cached` holds each chunk's KV (None for full)."""
    gen = engine.gen
    p = prefix.length
    n = sum(len(c) for c in req.chunk_ids)
    s = len(req.suffix_ids)
    capacity = n + s + req.max_new_tokens
    suffix = torch.tensor(req.suffix_ids, dtype=torch.int64)
    ctx = torch.tensor([t for c in req.chunk_ids for t in c], dtype=torch.int64)
    reposition_s = 0.0
    recomputed = 0
    t0 = time.perf_counter()
    if req.mode == "full":
        kv = new_working_kv(engine, prefix, capacity)
        h, _ = engine.prefill(kv, torch.cat((ctx, suffix)), torch.arange(p, p + n + s))
        recomputed = n
        next_pos = p + n + s
    else:
        kv, slots, stacked, suffix_start = _assemble(engine, prefix, req, cached, capacity, ape=req.mode == "ape")
        reposition_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        suffix_pos = torch.arange(suffix_start, suffix_start + s)
        plan = req.plan
        zero_recompute = plan is None or (plan.ratio == 0 and plan.adaptive_coverage is None and (plan.forced is None or plan.forced.numel() == 0))
        if req.mode == "blend" and not zero_recompute:
            h, selected = engine.blend(kv, slots, stacked, ctx, suffix, suffix_pos, plan)
            recomputed = selected.numel()
        else:
            h, _ = engine.prefill(kv, suffix, suffix_pos)
        next_pos = suffix_start + s
    first_logits = gen.logits(h[-1:])[0]
    token = sampler(first_logits)
    prefill_s = time.perf_counter() - t0
    ttft = time.perf_counter() - t_start
    tokens = [token]
    if on_token is not None:
        on_token(token)
    t0 = time.perf_counter()
    eos = set(gen.spec.eos_token_ids)
    finish = "stop" if token in eos else "length"
    while finish == "length" and len(tokens) < req.max_new_tokens:
        if should_stop is not None and should_stop():
            finish = "cancelled"
            break
        logits = engine.step(kv, tokens[-1], next_pos)
        next_pos += 1
        token = sampler(logits)
        tokens.append(token)
        if on_token is not None:
            on_token(token)
        if token in eos:
            finish = "stop"
    return Generated(
        token_ids=tuple(tokens),
        first_logits=first_logits,
        ttft_s=ttft,
        prefill_s=prefill_s,
        reposition_s=reposition_s,
        decode_s=time.perf_counter() - t0,
        recomputed=recomputed,
        finish_reason=finish,
    )


def forced_tokens(chunk_ids, sink_tokens: int) -> torch.Tensor | None:
    if sink_tokens <= 0:
        return None
    return chunk_starts_forced([len(c) for c in chunk_ids], sink_tokens)
