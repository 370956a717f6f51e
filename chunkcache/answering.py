"""One request, from token ids to generated text, in any of the four modes.

Modes (all reuse the shared prefix's KV):
  full   plain prefill of every context and question token (the baseline);
  prefix exact prefix reuse: the leading chunks that have chain entries (`chain.py`) are loaded
         as a full prefill left them, the rest of the prompt is prefilled (vLLM's automatic
         prefix caching, per chunk); always exact;
  reuse  the chunks' cached KV placed at their positions, only the question is prefilled;
  blend  reuse plus CacheBlend's selective recompute of the most deviating context tokens;
In reuse and blend, `Request.exact_chunks` leading chunks come from chain entries: exact, never
recomputed; selection, recompute and repair spend their budget on the chunks after them only.
  ape    parallel encoding: every chunk at the same positions after the prefix, the question's
         attention to the contexts tempered and rescaled (APE), no recompute.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from chunkcache.blending import budget
from chunkcache.chunk_kv import PrefixKV, new_working_kv
from chunkcache.engine import Engine, Rows, decode_rows
from chunkcache.kernels import dequant_rope
from chunkcache.scores import kl_divergence
from chunkcache.recompute import BlendPlan, blend, oracle_scores, refresh, refresh_rows
from chunkcache.sampling import Sampler
from chunkcache.storage import Payload


@dataclass(frozen=True)
class Request:
    """A tokenized request. chunk_ids: one token list per passage, in prompt order."""

    mode: str
    chunk_ids: tuple[tuple[int, ...], ...]
    suffix_ids: tuple[int, ...]
    max_new_tokens: int
    plan: BlendPlan | None = None
    # After-selection levers (blend only): per-query growth before the first token, and repair
    # while decoding. See BlendConfig for their meaning.
    grow_tolerance: float | None = None
    grow_step: float = 0.05
    grow_max_ratio: float = 0.5
    repair_ratio: float = 0.0
    repair_steps: int = 0
    # Leading chunks whose `cached` entries are chain entries (rotated, exact in this prompt).
    # The plan (blend) then covers the chunks after them only.
    exact_chunks: int = 0


@dataclass(frozen=True)
class Generated:
    token_ids: tuple[int, ...]
    first_logits: torch.Tensor  # [V] float32, on the CPU
    ttft_s: float
    prefill_s: float
    reposition_s: float
    decode_s: float
    recomputed: int
    finish_reason: str
    repaired: int = 0  # context tokens recomputed while decoding
    teacher_agreement: float | None = None
    replay_s: float = 0.0  # the teacher-forced replay after the answer (evaluation only; not answer time)
    # The request's working cache after the answer: what a full prefill computed is stored from
    # it as chain entries (`ChainStore.save`); the context slots are unchanged by plain decoding.
    kv: object = field(default=None, repr=False, compare=False)


_FLOAT_CODECS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

Cached = torch.Tensor | Payload  # [L, 2, Hkv, n, d] pre-RoPE (computed now), or a stored payload


def _place(engine: Engine, kv, start: int, cached: list[Cached], positions: torch.Tensor) -> None:
    """Write each chunk's K (rotated to `positions` [N]) and V into the slots [start, start+N).

    cached: per chunk, a pre-RoPE tensor [L, 2, Hkv, n, d] or a stored `Payload` (int8 / int4 /
    fp16 / bf16 as stored; a rotated chain entry is copied as it is, its positions being these). One fused call per chunk dequantizes, rotates (fp32 angles) and
    writes straight into the working cache: the torch reference on the CPU, Triton on CUDA.
    """
    inv_freq, scaling = engine.gen.rope_frequencies(positions)
    dev = kv.k.device
    a = 0
    for chunk in cached:
        if isinstance(chunk, Payload) and chunk.rotated:  # a chain entry: already at these positions
            chunk = chunk.to(dev)
            n = chunk.tokens
            kv.k[:, :, start + a : start + a + n] = chunk.k
            kv.v[:, :, start + a : start + a + n] = chunk.v
            a += n
            continue
        if isinstance(chunk, Payload):
            chunk = chunk.to(dev)
            n, codec = chunk.tokens, chunk.codec
            k, k_scale, v, v_scale = chunk.k, chunk.k_scale, chunk.v, chunk.v_scale
        else:
            chunk = chunk.to(dev)
            if chunk.dtype not in _FLOAT_CODECS:
                chunk = chunk.to(torch.float32)
            n, codec = chunk.shape[3], _FLOAT_CODECS[chunk.dtype]
            k, k_scale, v, v_scale = chunk[:, 0], None, chunk[:, 1], None
        dst = slice(start + a, start + a + n)
        dequant_rope(k, k_scale, v, v_scale, positions[a : a + n], inv_freq, scaling, codec, kv.k.dtype,
                     out=(kv.k[:, :, dst], kv.v[:, :, dst]))
        a += n


def _stack(cached: list[Cached], device: torch.device) -> torch.Tensor:
    """The chunks' pre-RoPE K/V as one fp32 tensor [L, 2, Hkv, N, d] on `device` (payloads are
    dequantized here: only deviation-based selection needs this copy)."""
    parts = [(c.to(device).decode(torch.float32) if isinstance(c, Payload) else c.to(device, torch.float32)) for c in cached]
    return torch.cat(parts, dim=3)


def _assemble(engine: Engine, prefix: PrefixKV, req: Request, cached: list[Cached], capacity: int, ape: bool,
              stack: bool = True):
    """Place cached chunk KV (see `_place`) into a new working cache.

    Returns (kv, context slots [N], the stacked cached KV of the chunks after the exact run
    [L, 2, Hkv, N_tail, d] fp32 or None when not `stack`ed (only deviation-based selection needs
    it), suffix start position).
    """
    p = prefix.length
    lengths = [len(c) for c in req.chunk_ids]
    kv = new_working_kv(engine, prefix, capacity)
    dev = kv.k.device
    if ape:
        positions = torch.cat([torch.arange(p, p + n, device=dev) for n in lengths])
        suffix_start = p + max(lengths)
    else:
        positions = torch.arange(p, p + sum(lengths), device=dev)
        suffix_start = p + sum(lengths)
    slots = kv.reserve(positions)
    _place(engine, kv, p, cached, positions)
    if ape:
        kv.ape_slots = (p, p + sum(lengths))
    stacked = _stack(cached[req.exact_chunks:], dev) if stack else None  # [L, 2, Hkv, N_tail, d]
    return kv, slots, stacked, suffix_start


class _Decoder:
    """Decode steps over a request's cache, repairing the context during the first steps.

    A repair step recomputes the next `budget` context tokens of `queue` together with the
    tail (question suffix, every generated token, the new input token), so each sees the others
    fresh; other steps are a plain one-token forward.
    """

    def __init__(self, engine: Engine, kv, ctx_slots=None, ctx_ids=None, queue=None, tail_slots=None,
                 tail_ids=(), budget_per_step: int = 0, steps: int = 0):
        self.engine, self.kv = engine, kv
        self.ctx_slots, self.ctx_ids, self.queue = ctx_slots, ctx_ids, queue
        self.tail_slots = [] if tail_slots is None else tail_slots.tolist()
        self.tail_ids = list(tail_ids)
        self.budget, self.steps = budget_per_step, steps if queue is not None else 0
        self.done = 0  # queue entries refreshed so far
        self.taken = 0  # decode steps taken

    def snapshot(self):
        return (self.kv.k.clone(), self.kv.v.clone(), self.kv.length, self.done, self.taken, list(self.tail_slots), list(self.tail_ids))

    def restore(self, snap) -> None:
        k, v, self.kv.length, self.done, self.taken, self.tail_slots, self.tail_ids = snap
        self.kv.k.copy_(k)
        self.kv.v.copy_(v)

    def rows(self, token: int, position: int) -> Rows:
        """The rows of the step that feeds `token` at `position` (reserves its slot)."""
        self.taken += 1
        if self.taken <= self.steps and self.done < self.queue.numel():
            dev = self.kv.pos.device
            slot = self.kv.reserve(torch.tensor([position], dtype=torch.int64, device=dev))
            self.tail_slots.append(int(slot[0]))
            self.tail_ids.append(token)
            extra = self.queue[self.done : self.done + self.budget]
            self.done += extra.numel()
            return refresh_rows(self.kv, self.ctx_slots, self.ctx_ids, extra,
                                torch.tensor(self.tail_slots, dtype=torch.int64, device=dev),
                                torch.tensor(self.tail_ids, dtype=torch.int64, device=dev))
        self.tail_slots.append(self.kv.length)
        self.tail_ids.append(token)
        return decode_rows(self.kv, token, position)

    def step(self, token: int, position: int) -> torch.Tensor:
        """Logits [V] of the token after `token` (at `position`), this request alone."""
        return self.engine.gen.logits(self.engine.forward_rows([self.rows(token, position)]))[0]


def _grow(engine: Engine, kv, req: Request, ctx_slots, ctx_ids, queue, recomputed: int, suffix_slots, suffix_ids, logits, n: int):
    """Recompute more of `queue` before the first token until its distribution settles.

    Returns (first-token logits [V], context tokens added).
    """
    step, ceiling = budget(n, req.grow_step), budget(n, req.grow_max_ratio)
    done = 0
    while recomputed + done < ceiling and done < queue.numel():
        extra = queue[done : done + min(step, ceiling - recomputed - done)]
        done += extra.numel()
        h = refresh(engine, kv, ctx_slots, ctx_ids, extra, suffix_slots, suffix_ids)
        new = engine.gen.logits(h[-1:])[0]
        moved = kl_divergence(torch.log_softmax(logits, -1), torch.log_softmax(new, -1))
        logits = new
        if moved < req.grow_tolerance:
            break
    return logits, done


def start(
    engine: Engine,
    prefix: PrefixKV,
    req: Request,
    cached: list[Cached] | None,
    sampler: Sampler,
    t_start: float,
    on_token: Callable[[int], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> "Stream":
    """Run the prompt in `req.mode` up to the first token (emitted). `cached` holds each chunk's
    KV (None for full). Decode goes on through the returned Stream, alone or in a batch.
    on_token(token) takes every generated token; it returns True when the answer's text is
    complete (a stop sequence matched), which ends the stream with finish_reason "stop"."""
    gen = engine.gen
    p = prefix.length
    n = sum(len(c) for c in req.chunk_ids)
    s = len(req.suffix_ids)
    capacity = n + s + req.max_new_tokens
    dev = gen.device
    suffix = torch.tensor(req.suffix_ids, dtype=torch.int64, device=dev)
    ctx = torch.tensor([t for c in req.chunk_ids for t in c], dtype=torch.int64, device=dev)
    e = sum(len(c) for c in req.chunk_ids[: req.exact_chunks])  # context tokens of the exact run
    reposition_s = 0.0
    recomputed = 0
    decoder = None
    t0 = time.perf_counter()
    if req.mode in ("full", "prefix"):
        kv = new_working_kv(engine, prefix, capacity)
        if e:  # prefix mode: the exact run as a full prefill left it, then the rest of the prompt
            positions = torch.arange(p, p + e, device=dev)
            kv.reserve(positions)
            _place(engine, kv, p, cached[: req.exact_chunks], positions)
            reposition_s = time.perf_counter() - t0
        h, _ = engine.prefill(kv, torch.cat((ctx[e:], suffix)), torch.arange(p + e, p + n + s, device=dev), keep=1)
        first_logits = gen.logits(h[-1:])[0]
        recomputed = n - e
        next_pos = p + n + s
    else:
        needs_stack = req.mode == "blend" and req.plan is not None and req.plan.deviation_of != "probe"
        kv, slots, stacked, suffix_start = _assemble(engine, prefix, req, cached, capacity, ape=req.mode == "ape", stack=needs_stack)
        reposition_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        suffix_pos = torch.arange(suffix_start, suffix_start + s, device=dev)
        plan = req.plan
        if plan is not None and plan.forced is not None:
            plan = replace(plan, forced=plan.forced.to(dev))
        # Ratio 0 is exactly reuse: no probe, no growth, no repair.
        zero_recompute = plan is None or (
            plan.ratio == 0 and plan.adaptive_coverage is None and (plan.forced is None or plan.forced.numel() == 0))
        if req.mode == "blend" and not zero_recompute and e < n:
            # Only the chunks after the exact run are candidates (the ratio applies to them).
            slots, ctx, n = slots[e:], ctx[e:], n - e
            if plan.deviation_of == "oracle":
                if e:
                    raise ValueError("oracle selection is a diagnostic of whole-context blending; run it without chain entries")
                scratch = new_working_kv(engine, prefix, n + s)
                plan = replace(plan, oracle_scores=oracle_scores(engine, scratch, ctx, suffix, stacked))
            res = blend(engine, kv, slots, stacked, ctx, suffix, suffix_pos, plan)
            first_logits = gen.logits(res.hidden[-1:])[0]
            recomputed = round(res.mean_tokens)
            suffix_slots = torch.arange(kv.length - s, kv.length, device=dev)
            queue = res.queue
            if req.grow_tolerance is not None:
                first_logits, grown = _grow(engine, kv, req, slots, ctx, queue, recomputed, suffix_slots, suffix,
                                            first_logits, n)
                recomputed += grown
                queue = queue[grown:]
            total = min(budget(n, req.repair_ratio), queue.numel()) if req.repair_steps else 0
            if total:  # the repair budget, a share of the blended context, in equal parts per step
                decoder = _Decoder(engine, kv, slots, ctx, queue[:total], suffix_slots, req.suffix_ids,
                                   -(-total // req.repair_steps), req.repair_steps)
        else:
            h, _ = engine.prefill(kv, suffix, suffix_pos, keep=1)
            first_logits = gen.logits(h[-1:])[0]
        next_pos = suffix_start + s
    # On the host: the sampler draws with a CPU generator, and the caller keeps the logits.
    first_logits = first_logits.cpu()
    if decoder is None:
        decoder = _Decoder(engine, kv)
    token = sampler(first_logits)
    prefill_s = time.perf_counter() - t0
    timing = {"ttft_s": time.perf_counter() - t_start, "prefill_s": prefill_s, "reposition_s": reposition_s}
    return Stream(engine, req, decoder, sampler, token, first_logits, next_pos, recomputed, timing, on_token, should_stop)


class Stream:
    """One request between its first token and its end: its cache, decoder and tokens so far.

    Each decode step is `rows()` (the rows this request adds to a forward), a forward of those
    rows alone or batched with other requests' (`Engine.forward_rows`), then `advance(logits)`.
    Greedy tokens do not depend on the batch: every row attends its own cache only.
    """

    def __init__(self, engine: Engine, req: Request, decoder: _Decoder, sampler: Sampler, token: int,
                 first_logits: torch.Tensor, next_pos: int, recomputed: int, timing: dict,
                 on_token: Callable[[int], bool] | None, should_stop: Callable[[], bool] | None):
        self.engine, self.req, self.decoder, self.sampler = engine, req, decoder, sampler
        self.first_logits, self.first_pos = first_logits, next_pos
        self.position, self.recomputed, self.timing = next_pos, recomputed, timing
        self.on_token, self.should_stop = on_token, should_stop
        self.tokens: list[int] = []
        self.eos = set() if sampler.params.ignore_eos else set(engine.gen.spec.eos_token_ids)
        self.finish = "length"
        self.decode_s = 0.0
        self._emit(token)

    def _emit(self, token: int) -> None:
        self.tokens.append(token)
        if self.on_token is not None and self.on_token(token):
            self.finish = "stop"  # the consumer says the text is complete: a stop sequence matched
        if token in self.eos:
            self.finish = "stop"

    @property
    def done(self) -> bool:
        """No more steps: a stop token, the length reached, or cancelled. Polls `should_stop`."""
        if self.finish == "length" and len(self.tokens) < self.req.max_new_tokens and self.should_stop is not None \
                and self.should_stop():
            self.finish = "cancelled"
        return self.finish != "length" or len(self.tokens) >= self.req.max_new_tokens

    def rows(self) -> Rows:
        rows = self.decoder.rows(self.tokens[-1], self.position)
        self.position += 1
        return rows

    def advance(self, logits: torch.Tensor) -> None:
        """logits [V] of this request's next token."""
        self._emit(self.sampler(logits.cpu()))  # the token id goes to the host anyway

    def agreement(self, teacher: tuple[int, ...], snap) -> float:
        """Top-1 agreement with a reference answer fed in, replayed from `snap` (taken at the first token)."""
        teacher = teacher[: self.req.max_new_tokens]
        self.decoder.restore(snap)
        hits = int(int(self.first_logits.argmax()) == teacher[0])
        for i in range(1, len(teacher)):
            hits += int(int(self.decoder.step(teacher[i - 1], self.first_pos + i - 1).argmax()) == teacher[i])
        return hits / len(teacher)

    def result(self, agreement: float | None = None) -> Generated:
        return Generated(
            token_ids=tuple(self.tokens),
            first_logits=self.first_logits,
            ttft_s=self.timing["ttft_s"],
            prefill_s=self.timing["prefill_s"],
            reposition_s=self.timing["reposition_s"],
            decode_s=self.decode_s,
            recomputed=self.recomputed,
            finish_reason=self.finish,
            repaired=self.decoder.done,
            teacher_agreement=agreement,
            kv=self.decoder.kv,
        )


def decode_step(engine: Engine, streams: list[Stream]) -> list[BaseException | None]:
    """One decode step of every stream in ONE forward (`Engine.forward_rows`).

    Returns, per stream, the error its token callback raised (None if it took its token): one
    request's failing consumer does not end the others'.
    """
    t0 = time.perf_counter()
    logits = engine.gen.logits(engine.forward_rows([st.rows() for st in streams]))  # [B, V]
    errors: list[BaseException | None] = []
    for st, row in zip(streams, logits):
        try:
            st.advance(row)
            errors.append(None)
        except Exception as exc:
            errors.append(exc)
    elapsed = time.perf_counter() - t0  # every stream waited for the whole step
    for st in streams:
        st.decode_s += elapsed
    return errors


def generate(
    engine: Engine,
    prefix: PrefixKV,
    req: Request,
    cached: list[Cached] | None,
    sampler: Sampler,
    t_start: float,
    on_token: Callable[[int], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    teacher: tuple[int, ...] | None = None,
) -> Generated:
    """Run the prompt in `req.mode` and decode, this request alone (see `start`).

    teacher: token ids of a reference answer; when given, the decode is replayed from the same
    state with the teacher's tokens fed in, and the share of positions whose top-1 token equals
    the teacher's is returned as `teacher_agreement` (the answer itself is unchanged).
    """
    stream = start(engine, prefix, req, cached, sampler, t_start, on_token, should_stop)
    snap = stream.decoder.snapshot() if teacher else None
    while not stream.done:
        error = decode_step(engine, [stream])[0]
        if error is not None:
            raise error
    if not teacher:
        return stream.result()
    t0 = time.perf_counter()
    agreement = stream.agreement(teacher, snap)
    return replace(stream.result(agreement), replay_s=time.perf_counter() - t0)
