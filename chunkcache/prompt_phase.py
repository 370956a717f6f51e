"""The prompt phase of one request: from its tokens (and its chunks' KV) to the first token.

Modes (all reuse the shared prefix's KV):
  full   plain prefill of every context and question token (the baseline);
  prefix exact prefix reuse: the leading chunks that have chain entries (`chain.py`) are loaded
         as a full prefill left them, the rest of the prompt is prefilled (vLLM's automatic
         prefix caching, per chunk); always exact;
  reuse  the chunks' cached KV placed at their positions, only the question is prefilled;
  blend  reuse plus CacheBlend's selective recompute of the most deviating context tokens
         (`recompute.py`), then optionally growth before the first token (`repair.grow`);
  ape    parallel encoding: every chunk at the same positions after the prefix, the question's
         attention to the contexts tempered and rescaled (APE, `layout.Parallel`), no recompute.
In reuse and blend, `Request.exact_chunks` leading chunks come from chain entries: exact, never
recomputed; selection, recompute and repair spend their budget on the chunks after them only.
Placement (`prepare`) needs no model and runs in the caller's thread; `start` runs the rest whole
and alone, and `prompt_work.PromptWork` the same in pieces that ride in scheduler steps.
Decoding goes on in the returned `Stream` (`stream.py`).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from chunkcache.assembly import Assembled, Cached, assemble, place
from chunkcache.blending import budget
from chunkcache.chunk_kv import new_working_kv
from chunkcache.engine import Engine
from chunkcache.kv import PrefixKV, WorkingKV
from chunkcache.recompute import BlendPlan, blend, oracle_scores
from chunkcache.repair import Decoder, RepairPlan, grow
from chunkcache.request import Request
from chunkcache.sampling import Sampler
from chunkcache.stream import PromptTimings, Stream


@dataclass(frozen=True)
class Prepared:
    """A request's working cache with what is stored placed in it (no model work yet).

    assembled: for reuse, ape and blend, the chunks placed (`assembly.assemble`); for full and
    prefix, a cache holding the prefix and the exact run (`assembled.slots` [E], no stack).
    reposition_s: how long placing took."""

    assembled: Assembled
    reposition_s: float

    @property
    def kv(self) -> WorkingKV:
        return self.assembled.kv


def capacity(prefix: PrefixKV, req: Request) -> int:
    """Slots of the request's working cache: the prefix, the context, the question and the answer."""
    return prefix.length + sum(req.lengths) + len(req.suffix_ids) + req.max_new_tokens


def prepare(engine: Engine, prefix: PrefixKV, req: Request, cached: list[Cached] | None) -> Prepared:
    """Allocate `req`'s working cache and place its stored KV there (`cached`: each chunk's KV in
    reuse, ape and blend; the exact run's chain entries in prefix; None in full). Tensor copies
    only: it may run in the caller's thread while the model works for others."""
    t0 = time.perf_counter()
    p, n, s, e = prefix.length, sum(req.lengths), len(req.suffix_ids), req.exact_tokens
    room = capacity(prefix, req) - p
    if req.mode in ("full", "prefix"):
        kv = new_working_kv(engine, prefix, room)
        positions = torch.arange(p, p + e, device=engine.gen.device)
        slots = kv.reserve(positions)
        if e:  # prefix mode: the exact run as a full prefill left it
            place(engine, kv, p, cached[: req.exact_chunks], positions)
        a = Assembled(kv, slots, None, p + n)
    else:
        a = assemble(engine, prefix, req, cached, room, stacked=req.mode == "blend" and req.blend.deviation_of != "probe")
    return Prepared(a, time.perf_counter() - t0)


@dataclass(frozen=True)
class Prompted:
    """What a mode's prompt phase leaves: the decoder over the request's cache, the first token's
    logits [V] (on the model's device), the next position, the context tokens recomputed, and
    its clocks (reposition_s; prefill_t0, when the prefill's clock started)."""

    decoder: Decoder
    logits: torch.Tensor
    next_pos: int
    recomputed: int
    reposition_s: float
    prefill_t0: float


def start(
    engine: Engine,
    prefix: PrefixKV,
    req: Request,
    cached: list[Cached] | None,
    sampler: Sampler,
    t_start: float,
    on_token: Callable[[int], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    prepared: Prepared | None = None,
) -> Stream:
    """Run the prompt in `req.mode` up to the first token (emitted), whole and alone. `cached`
    holds each chunk's KV (None for full), or `prepared` the cache it was already placed in.
    Decode goes on through the returned Stream, alone or in a batch.
    on_token(token) takes every generated token; it returns True when the answer's text is
    complete (a stop sequence matched), which ends the stream with finish_reason "stop".
    should_stop() is polled before every decode step; True ends it as "cancelled"."""
    prepared = prepared or prepare(engine, prefix, req, cached)
    if req.mode in ("full", "prefix"):
        done = _prefill(engine, prefix, req, prepared)
    else:
        done = _from_cache(engine, req, prepared)
    return first_token(engine, req, done, sampler, t_start, on_token, should_stop)


def first_token(engine: Engine, req: Request, done: Prompted, sampler: Sampler, t_start: float,
                on_token: Callable[[int], bool] | None, should_stop: Callable[[], bool] | None) -> Stream:
    """Sample the first token from `done.logits` and open the request's Stream."""
    # On the host: the sampler draws with a CPU generator, and the caller keeps the logits.
    first_logits = done.logits.cpu()
    token = sampler(first_logits)
    prefill_s = time.perf_counter() - done.prefill_t0
    timings = PromptTimings(ttft_s=time.perf_counter() - t_start, prefill_s=prefill_s, reposition_s=done.reposition_s)
    return Stream(engine, req, done.decoder, sampler, token, first_logits, done.next_pos, done.recomputed, timings,
                  on_token, should_stop)


def _prefill(engine: Engine, prefix: PrefixKV, req: Request, prepared: Prepared) -> Prompted:
    """full and prefix: every token after the exact run (none in full) is prefilled."""
    t0 = time.perf_counter()
    dev = engine.gen.device
    p, n, s, e = prefix.length, sum(req.lengths), len(req.suffix_ids), req.exact_tokens
    kv = prepared.kv
    ids = torch.tensor([t for c in req.chunk_ids for t in c][e:] + list(req.suffix_ids), dtype=torch.int64, device=dev)
    h, _ = engine.prefill(kv, ids, torch.arange(p + e, p + n + s, device=dev), keep=1)
    return Prompted(Decoder(engine, kv), engine.gen.logits(h[-1:])[0], p + n + s, n - e, prepared.reposition_s, t0)


def _from_cache(engine: Engine, req: Request, prepared: Prepared) -> Prompted:
    """reuse, ape and blend: the chunks placed from their KV, then the question prefilled (or
    blended with the context tokens blend recomputes)."""
    gen, cfg = engine.gen, req.blend
    dev = gen.device
    n, s, e = sum(req.lengths), len(req.suffix_ids), req.exact_tokens
    a = prepared.assembled
    t0 = time.perf_counter()
    kv, next_pos = a.kv, a.suffix_start + s
    suffix = torch.tensor(req.suffix_ids, dtype=torch.int64, device=dev)
    suffix_pos = torch.arange(a.suffix_start, a.suffix_start + s, device=dev)
    plan = blend_plan(req, dev)
    if plan is None or plan.recomputes_nothing:
        h, _ = engine.prefill(kv, suffix, suffix_pos, keep=1)
        return Prompted(Decoder(engine, kv), gen.logits(h[-1:])[0], next_pos, 0, prepared.reposition_s, t0)
    slots, n = a.slots[e:], n - e
    ctx = context_ids(req, dev)
    if cfg.deviation_of == "oracle":
        if e:
            raise ValueError("oracle selection is a diagnostic of whole-context blending; run it without chain entries")
        scratch = new_working_kv(engine, kv.prefix, n + s)
        plan = replace(plan, oracle_scores=oracle_scores(engine, scratch, ctx, suffix, a.stacked))
    res = blend(engine, kv, slots, a.stacked, ctx, suffix, suffix_pos, plan)
    logits = gen.logits(res.hidden[-1:])[0]
    decoder, logits, recomputed = after_blend(engine, kv, req, slots, ctx, res.queue, round(res.mean_tokens), logits)
    return Prompted(decoder, logits, next_pos, recomputed, prepared.reposition_s, t0)


def blend_plan(req: Request, device) -> BlendPlan | None:
    """The blend plan over the chunks after the exact run (the ratio applies to them), or None
    when nothing is blended (another mode, or an exact run covering the whole context)."""
    if req.mode != "blend" or req.exact_tokens >= sum(req.lengths):
        return None
    return BlendPlan.from_config(req.blend, req.chunk_ids[req.exact_chunks:], device)


def context_ids(req: Request, device) -> torch.Tensor:
    """[N - E] the context's token ids after the exact run."""
    return torch.tensor([t for c in req.chunk_ids for t in c][req.exact_tokens:], dtype=torch.int64, device=device)


def after_blend(engine: Engine, kv: WorkingKV, req: Request, slots: torch.Tensor, ctx: torch.Tensor, queue: torch.Tensor,
                recomputed: int, logits: torch.Tensor) -> tuple[Decoder, torch.Tensor, int]:
    """What follows blend's recompute: growth before the first token (if asked), then the decoder
    with its repair plan. slots, ctx: [N] the blended context; queue: [N] next to refresh first;
    logits: [V] of the first token so far. Returns (decoder, first-token logits, tokens recomputed)."""
    cfg, s = req.blend, len(req.suffix_ids)
    suffix_slots = torch.arange(kv.length - s, kv.length, device=kv.pos.device)
    if cfg.grow_tolerance is not None:
        suffix = torch.tensor(req.suffix_ids, dtype=torch.int64, device=kv.pos.device)
        logits, grown = grow(engine, kv, cfg, slots, ctx, queue, recomputed, suffix_slots, suffix, logits)
        recomputed += grown
        queue = queue[grown:]
    total = min(budget(ctx.numel(), cfg.repair_ratio), queue.numel()) if cfg.repair_steps else 0
    repair = None
    if total:  # the repair budget, a share of the blended context, in equal parts per step
        repair = RepairPlan(slots, ctx, queue[:total], suffix_slots, req.suffix_ids, -(-total // cfg.repair_steps), cfg.repair_steps)
    return Decoder(engine, kv, repair), logits, recomputed
