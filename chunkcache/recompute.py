"""Selective recompute over a re-positioned chunk cache (CacheBlend and what we add to it).

Selection (which context tokens get fresh K/V):
  probe   run the question through every layer over the re-positioned cache first, score each
          context token by the question's attention in the deep layers (each layer normalised,
          summed), then recompute the top tokens from layer 0 on (layer 0's K/V need no
          refresh, only its output does);
  v, k    CacheBlend: layers 0..check_layer run on every token, the fresh-vs-cached V (or K)
          deviation at check_layer picks the tokens that go on;
  vattn   V deviation weighted by the question's attention at check_layer;
  oracle  scores given by the caller (true deviation from a full prefill): a diagnostic of
          selection's ceiling, never a serving mode.
Then, optionally: span smoothing of the scores and gradual filtering (a per-layer budget that
shrinks, survivors re-scored by the current layer's question attention). More context tokens
are recomputed later by `repair.py` (growing the set before the first token, or repairing it
while decoding), in the order of `BlendResult.queue`. Every mask is built from absolute positions.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from chunkcache.blending import (
    adaptive_budget,
    apply_rope,
    attention_probs,
    chunk_starts_forced,
    context_attention,
    gradual_budgets,
    position_mask,
    probe_layers,
    rank_tokens,
    smooth_within,
    token_deviation,
)
from chunkcache.config import BlendConfig
from chunkcache.engine import Engine
from chunkcache.kv import WorkingKV
from chunkcache.layout import layout_for


@dataclass(frozen=True)
class BlendPlan:
    """How one request picks and recomputes context tokens: its `BlendConfig` (every lever, the
    request's ratio included) and what follows from its chunks.

    chunk_lengths: passage lengths (span smoothing stays inside a passage; () = one passage);
    forced: [F] context indices always recomputed (the chunks' sink tokens), or None;
    oracle_scores: [N] given scores, for deviation_of="oracle" (a diagnostic).
    """

    config: BlendConfig
    chunk_lengths: tuple[int, ...] = ()
    forced: torch.Tensor | None = None
    oracle_scores: torch.Tensor | None = None

    @classmethod
    def from_config(cls, config: BlendConfig, chunk_ids: Sequence[Sequence[int]],
                    device: torch.device | str = "cpu") -> "BlendPlan":
        """The plan of `config` over these chunks (`forced` on `device`)."""
        lengths = [len(c) for c in chunk_ids]
        forced = chunk_starts_forced(lengths, config.sink_tokens).to(device) if config.sink_tokens > 0 else None
        return cls(config, tuple(lengths), forced)

    @property
    def ratio(self) -> float:
        return self.config.recompute_ratio

    @property
    def recomputes_nothing(self) -> bool:
        """Ratio 0 with nothing forced or adaptive: exactly reuse (no probe, growth or repair)."""
        return self.ratio == 0 and self.config.adaptive_coverage is None and (self.forced is None or self.forced.numel() == 0)


@dataclass(frozen=True)
class BlendResult:
    hidden: torch.Tensor  # [S, D] last hidden states of the question suffix
    recomputed: torch.Tensor  # [K] context indices that ran through every layer, ascending
    queue: torch.Tensor  # [N] every context index, next to refresh first (recomputed ones last)
    # Context tokens per narrowed layer, averaged: the compute a fixed ratio would name (with
    # gradual filtering more tokens run in early layers and fewer late, `recomputed` only the last).
    mean_tokens: float = 0.0


def _context_range(ctx_slots: torch.Tensor) -> slice:
    start = int(ctx_slots[0]) if ctx_slots.numel() else 0
    assert ctx_slots.numel() == 0 or int(ctx_slots[-1]) == start + ctx_slots.numel() - 1, "context slots must be contiguous"
    return slice(start, start + ctx_slots.numel())


@torch.inference_mode()
def probe(engine: Engine, kv: WorkingKV, ctx_slots: torch.Tensor, suffix_ids: torch.Tensor,
          suffix_pos: torch.Tensor, start: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the suffix [S] through every layer over the cache as it is; score the context.

    Reserves the suffix's slots (returned, [S]) and writes its K/V there (blend overwrites them).
    Returns (slots [S], scores [N] float32): the question's normalised attention to each context
    token, summed over layers [start*L, L) (`ProbeAttention`).
    """
    gen = engine.gen
    slots = kv.reserve(suffix_pos)
    attend = ProbeAttention(engine, kv, ctx_slots, start).piece(suffix_pos)
    cos, sin = gen.rope(suffix_pos)
    h = gen.embed(suffix_ids)
    stop = attend.scoring.stop
    for layer in range(stop):
        q, k, v = gen.qkv(layer, h)
        kv.write(layer, slots, apply_rope(k, cos, sin), v)
        out = attend(layer, apply_rope(q, cos, sin))
        if layer + 1 < stop:  # the last layer's output is not needed
            h = gen.finish(layer, h, out)
    return slots, attend.scores


@torch.inference_mode()
def oracle_scores(engine: Engine, kv: WorkingKV, ctx_ids: torch.Tensor, suffix_ids: torch.Tensor,
                  ctx_cached: torch.Tensor) -> torch.Tensor:
    """The true deviation of each context token: a FULL prefill of context + suffix into `kv`
    (a scratch cache holding the prefix only), V deviation from the cached chunks times the
    question's attention, each layer normalised, summed over layers 1..L-1. Returns [N].

    Diagnostic only: it costs more than the full prefill it is compared with.
    """
    gen = engine.gen
    n, s = ctx_ids.numel(), suffix_ids.numel()
    p = kv.length
    dev = kv.pos.device
    pos = torch.arange(p, p + n + s, device=dev)
    slots = kv.reserve(pos)
    cos, sin = gen.rope(pos)
    mask = position_mask(pos, kv.pos[: kv.length])
    ctx = slice(p, p + n)
    h = gen.embed(torch.cat((ctx_ids, suffix_ids)))
    scores = torch.zeros(n, dtype=torch.float32, device=dev)
    for layer in range(gen.spec.n_layers):
        q, k, v = gen.qkv(layer, h)
        kv.write(layer, slots, apply_rope(k, cos, sin), v)
        q_rot = apply_rope(q, cos, sin)
        keys, values = kv.keys(layer)
        out = gen.attention(q_rot[:, :n], keys, values, mask[:n])
        out_s, probs = attention_probs(q_rot[:, n:], keys, values, gen.spec.scaling, mask[n:])
        if layer >= 1:
            weight = token_deviation(v[:, :n], ctx_cached[layer, 1]) * context_attention(probs, ctx)  # [N]
            scores += weight / weight.sum().clamp_min(1e-30)
        h = gen.finish(layer, h, torch.cat((out, out_s), dim=1))
    return scores


def _question_share(engine: Engine, kv: WorkingKV, layer: int, q_suffix: torch.Tensor, suffix_pos: torch.Tensor, ctx: slice) -> torch.Tensor:
    """[N] the suffix's normalised attention over the context at `layer` (keys as they are now)."""
    keys, values = kv.keys(layer)
    mask = position_mask(suffix_pos, kv.pos[: kv.length])
    _, probs = attention_probs(q_suffix, keys, values, engine.gen.spec.scaling, mask)
    return context_attention(probs, ctx)


def select(scores: torch.Tensor, plan: BlendPlan, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The context tokens to recompute from `scores` [N]: (selected [K] ascending, order [N] best
    first). k: the budget (the adaptive budget replaces it when set); forced tokens come first."""
    cfg = plan.config
    if cfg.adaptive_coverage is not None:
        k = adaptive_budget(scores, cfg.adaptive_coverage, plan.ratio)
    n_forced = 0 if plan.forced is None else plan.forced.numel()
    order = rank_tokens(smooth_within(scores, list(plan.chunk_lengths) or [scores.numel()], cfg.span_window), plan.forced)
    return order[: max(k, n_forced)].sort().values, order


def refresh_queue(order: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """[N] every context index, next to refresh first: `order` [N] without the `selected` [K]
    (already fresh), which come last."""
    done = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
    done[selected] = True
    return torch.cat((order[~done[order]], order[done[order]]))


def splits_by_position(cfg: BlendConfig) -> bool:
    """Whether blend's recompute under `cfg` may run in pieces (`prompt_work.py`): the probe picks
    every token before any recompute, and the same tokens run through every layer (no leading
    full layers, no gradual filtering), so the recompute is one causal pass over them in position
    order and any split of it is exact."""
    return cfg.deviation_of == "probe" and cfg.full_layers == 0 and cfg.gradual_start == 1.0


class ProbeAttention:
    """The probe as attention in a shared forward (`Rows.attend`), whole or in pieces: the
    question's rows see the cache by position; in the scoring layers [start*L, L) the attention
    they give each context token is summed over heads and rows, per layer (`raw`). `scores` [N]
    is the sum over those layers of each layer's share, normalised: a split of the rows changes
    nothing but the order of float additions. Call `piece(q_pos)` after reserving a piece's
    slots and before its forward."""

    def __init__(self, engine: Engine, kv: WorkingKV, ctx_slots: torch.Tensor, start: float):
        self.gen, self.kv = engine.gen, kv
        self.ctx = _context_range(ctx_slots)
        self.scoring = probe_layers(engine.gen.spec.n_layers, start)
        self.raw = torch.zeros(len(self.scoring), ctx_slots.numel(), dtype=torch.float32, device=kv.pos.device)
        self.mask: torch.Tensor | None = None

    def piece(self, q_pos: torch.Tensor) -> "ProbeAttention":
        """The next rows are at q_pos [T] (their slots reserved)."""
        self.mask = position_mask(q_pos, self.kv.pos[: self.kv.length])
        return self

    def __call__(self, layer: int, q_rot: torch.Tensor) -> torch.Tensor:
        """q_rot: [H, T, d]; returns the attention's output [H, T, d]."""
        keys, values = self.kv.keys(layer)
        if layer in self.scoring:
            out, probs = attention_probs(q_rot, keys, values, self.gen.spec.scaling, self.mask)
            self.raw[layer - self.scoring.start] += probs[:, :, self.ctx].to(torch.float32).sum(dim=(0, 1))
            return out
        return self.gen.attention(q_rot, keys, values, self.mask)

    @property
    def scores(self) -> torch.Tensor:
        """[N] each scoring layer's attention share (uniform where a layer gave the context none), summed."""
        total = self.raw.sum(dim=1, keepdim=True)  # [Ls, 1]
        uniform = torch.full_like(self.raw, 1.0 / max(1, self.raw.shape[1]))
        return torch.where(total > 0, self.raw / total.clamp_min(torch.finfo(torch.float32).tiny), uniform).sum(dim=0)


@torch.inference_mode()
def blend(engine: Engine, kv: WorkingKV, ctx_slots: torch.Tensor, ctx_cached: torch.Tensor, ctx_ids: torch.Tensor,
          suffix_ids: torch.Tensor, suffix_pos: torch.Tensor, plan: BlendPlan) -> BlendResult:
    """Selective recompute over a context whose cached K/V already sit in `kv` at ctx_slots.

    ctx_cached: [L, 2, Hkv, N, d] the chunks' stored pre-RoPE K/V (for v/k/vattn deviation);
    ctx_ids: [N]; suffix_ids/suffix_pos: [S]. The suffix always runs through every layer.
    """
    gen, cfg = engine.gen, plan.config
    n_layers = gen.spec.n_layers
    n, s = ctx_ids.numel(), suffix_ids.numel()
    ctx = _context_range(ctx_slots)
    scores = None
    if cfg.deviation_of == "probe":
        suffix_slots, scores = probe(engine, kv, ctx_slots, suffix_ids, suffix_pos, cfg.probe_from)
    else:
        suffix_slots = kv.reserve(suffix_pos)
        if cfg.deviation_of == "oracle":
            if plan.oracle_scores is None or plan.oracle_scores.numel() != n:
                raise ValueError("deviation_of='oracle' needs oracle_scores of the context's length")
            scores = plan.oracle_scores
    # Layers < narrow_at run every token; from narrow_at on, only the selected ones and the suffix.
    narrow_at = cfg.full_layers if scores is not None else min(cfg.check_layer, n_layers - 1) + 1
    narrow_at = min(narrow_at, n_layers)
    slots = torch.cat((ctx_slots, suffix_slots))  # [N+S]
    pos = kv.pos[slots]  # [N+S]
    cos_all, sin_all = gen.rope(pos)  # [N+S, d]
    budgets = gradual_budgets(n, plan.ratio, n_layers - narrow_at, cfg.gradual_start)  # start 1: budget(n, r) each
    n_forced = 0 if plan.forced is None else plan.forced.numel()
    order = None
    dev = kv.pos.device
    selected = torch.arange(n, device=dev)
    active = torch.arange(n + s, device=dev)
    layout = layout_for(gen.spec, kv, pos)  # rebuilt whenever the active set changes
    h = gen.embed(torch.cat((ctx_ids, suffix_ids)))

    def narrow():
        nonlocal order, selected, active, h, layout
        selected, order = select(scores, plan, budgets[0] if budgets else 0)
        keep = torch.cat((selected, torch.arange(n, n + s, device=dev)))
        h, active = h[keep], keep
        layout = layout_for(gen.spec, kv, pos[active])

    if narrow_at == 0:
        narrow()
    per_layer = []
    for layer in range(n_layers):
        if layer >= narrow_at:
            per_layer.append(selected.numel())
        cos, sin = cos_all[active], sin_all[active]
        q, k, v = gen.qkv(layer, h)
        q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if scores is None and layer == narrow_at - 1:
            use_k = cfg.deviation_of == "k"
            scores = token_deviation(k[:, :n] if use_k else v[:, :n], ctx_cached[layer, 0 if use_k else 1])  # [N]
            if cfg.deviation_of == "vattn":
                scores = scores * engine.query_attention(q_rot[:, n:], k_rot[:, :n])
        kv.write(layer, slots[active], k_rot, v)
        if layer == n_layers - 1:  # only the suffix's output is used: the context rows need just their K/V
            rows = layout_for(gen.spec, kv, pos[active][-s:])
            h = gen.finish(layer, h[-s:], rows.attend(gen, kv, layer, q_rot[:, -s:]))
            break
        h = gen.finish(layer, h, layout.attend(gen, kv, layer, q_rot))
        if layer + 1 == narrow_at and narrow_at < n_layers:
            narrow()
        elif layer + 1 > narrow_at and layer + 1 < n_layers:
            nxt = budgets[layer + 1 - narrow_at]
            if nxt < selected.numel():  # gradual filtering: survivors re-scored at this layer
                share = _question_share(engine, kv, layer, q_rot[:, -s:], suffix_pos, ctx)
                if plan.forced is not None and plan.forced.numel():
                    share[plan.forced] = float("inf")
                local = share[selected].topk(max(nxt, min(n_forced, selected.numel()))).indices.sort().values
                selected = selected[local]
                keep = torch.cat((local, torch.arange(h.shape[0] - s, h.shape[0], device=dev)))
                h, active = h[keep], active[keep]
                layout = layout_for(gen.spec, kv, pos[active])
    if order is None:  # narrow_at == n_layers: every token ran through every layer
        order = torch.arange(n, device=dev)
    queue = refresh_queue(order, selected)
    mean_tokens = sum(per_layer) / len(per_layer) if per_layer else float(n)
    return BlendResult(hidden=h[-s:], recomputed=selected, queue=queue, mean_tokens=mean_tokens)

