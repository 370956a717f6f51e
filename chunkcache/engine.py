"""Forward passes over a WorkingKV: plain prefill, CacheBlend's selective recompute, decoding.

Every attention mask is built from absolute positions (and segment ids), so a recomputed
token in the middle of the context never sees a key after it.
"""

from dataclasses import dataclass

import torch

from chunkcache.blending import (
    adaptive_budget,
    ape_merge,
    apply_rope,
    attention_lse,
    budget,
    position_mask,
    select_tokens,
    token_deviation,
)
from chunkcache.kv import WorkingKV
from chunkcache.model import Generator


@dataclass(frozen=True)
class BlendPlan:
    """How CacheBlend picks and recomputes tokens for one request."""

    ratio: float
    check_layer: int = 1
    deviation_of: str = "v"  # "v" or "k"
    forced: torch.Tensor | None = None  # [F] context indices always recomputed (chunk sinks)
    adaptive_coverage: float | None = None  # share of total deviation to cover; None = fixed ratio


@dataclass(frozen=True)
class ApeParams:
    temperature: float = 0.9
    scale: float = 0.9


class Engine:
    """Runs tokens through the generator's layers against a WorkingKV (batch of one, CPU or GPU)."""

    def __init__(self, gen: Generator, ape: ApeParams = ApeParams()):
        self.gen = gen
        self.ape = ape

    # -- attention over the working cache -------------------------------------------------
    def _attend(self, kv: WorkingKV, layer: int, q: torch.Tensor, q_pos: torch.Tensor, q_seg: torch.Tensor | None) -> torch.Tensor:
        """q: [H, T, d] rotated; returns [H, T, d]."""
        spec = self.gen.spec
        k, v = kv.keys(layer)
        n = kv.length
        k_pos, k_seg = kv.pos[:n], kv.seg[:n]
        if kv.ape_slots is None:
            mask = position_mask(q_pos, k_pos, q_seg, k_seg if q_seg is not None else None, spec.sliding_window)
            return self.gen.attention(q, k, v, mask)
        # APE: the context part C (all visible, temperature T) and the rest O (causal by position).
        start, end = kv.ape_slots
        rep = spec.n_heads // spec.n_kv_heads
        other = torch.cat((torch.arange(0, start), torch.arange(end, n)))
        kc = k[:, start:end].repeat_interleave(rep, 0)
        vc = v[:, start:end].repeat_interleave(rep, 0)
        ko = k[:, other].repeat_interleave(rep, 0)
        vo = v[:, other].repeat_interleave(rep, 0)
        o_c, lse_c = attention_lse(q, kc, vc, spec.scaling / self.ape.temperature)
        mask_o = position_mask(q_pos, k_pos[other], window=spec.sliding_window)
        o_o, lse_o = attention_lse(q, ko, vo, spec.scaling, mask_o)
        return ape_merge(o_c, lse_c, o_o, lse_o, self.ape.scale * self.ape.temperature)

    # -- full forward of new tokens -------------------------------------------------------
    @torch.inference_mode()
    def prefill(
        self,
        kv: WorkingKV,
        ids: torch.Tensor,
        positions: torch.Tensor,
        segments: torch.Tensor | None = None,
        collect: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run ids [T] at positions [T] through every layer, appending their K/V to `kv`.

        Returns the last layer's hidden states [T, D] and, when `collect`, the new tokens'
        pre-RoPE cache [L, 2, Hkv, T, d].
        """
        gen = self.gen
        slots = kv.reserve(positions, segments)
        cos, sin = gen.rope(positions)
        h = gen.embed(ids)
        pre = []
        for layer in range(gen.spec.n_layers):
            q, k, v = gen.qkv(layer, h)
            if collect:
                pre.append(torch.stack((k, v)))
            kv.write(layer, slots, apply_rope(k, cos, sin), v)
            h = gen.finish(layer, h, self._attend(kv, layer, apply_rope(q, cos, sin), positions, segments))
        return h, (torch.stack(pre) if collect else None)

    # -- CacheBlend ----------------------------------------------------------------------
    @torch.inference_mode()
    def blend(
        self,
        kv: WorkingKV,
        ctx_slots: torch.Tensor,
        ctx_cached: torch.Tensor,
        ctx_ids: torch.Tensor,
        suffix_ids: torch.Tensor,
        suffix_pos: torch.Tensor,
        plan: BlendPlan,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Selective recompute over a context whose cached K/V already sit in `kv` at ctx_slots.

        ctx_cached: [L, 2, Hkv, N, d] the chunks' stored pre-RoPE K/V (for the deviation);
        ctx_ids: [N]; suffix_ids/suffix_pos: [S]. Layers 0..check_layer run on every token with
        fresh K/V; then only the selected context tokens plus the whole suffix go on, their
        fresh K/V overwriting the cached ones. Returns the suffix's last hidden states [S, D]
        and the selected context indices [K].
        """
        gen = self.gen
        n, s = ctx_ids.numel(), suffix_ids.numel()
        suffix_slots = kv.reserve(suffix_pos)
        slots = torch.cat((ctx_slots, suffix_slots))  # [N+S]
        pos = kv.pos[slots]  # [N+S]
        cos_all, sin_all = gen.rope(pos)
        h = gen.embed(torch.cat((ctx_ids, suffix_ids)))
        active = torch.arange(n + s)
        selected = torch.arange(n)
        check = min(plan.check_layer, gen.spec.n_layers - 1)
        for layer in range(gen.spec.n_layers):
            cos, sin = cos_all[active], sin_all[active]
            q, k, v = gen.qkv(layer, h)
            if layer == check:
                fresh = v[:, :n] if plan.deviation_of == "v" else k[:, :n]
                cached = ctx_cached[layer, 1 if plan.deviation_of == "v" else 0]
                deviation = token_deviation(fresh, cached)  # [N]
            kv.write(layer, slots[active], apply_rope(k, cos, sin), v)
            h = gen.finish(layer, h, self._attend(kv, layer, apply_rope(q, cos, sin), pos[active], None))
            if layer == check:
                if plan.adaptive_coverage is not None:
                    k_budget = adaptive_budget(deviation, plan.adaptive_coverage, plan.ratio)
                else:
                    k_budget = budget(n, plan.ratio)
                selected = select_tokens(deviation, k_budget, plan.forced)
                keep = torch.cat((selected, torch.arange(n, n + s)))  # indices into the full [N+S]
                h = h[keep]
                active = keep
        return h[-s:], selected

    # -- decoding -------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, kv: WorkingKV, token: int, position: int) -> torch.Tensor:
        """One decode step: returns logits [V] of the token after `token`."""
        ids = torch.tensor([token], dtype=torch.int64)
        h, _ = self.prefill(kv, ids, torch.tensor([position], dtype=torch.int64))
        return self.gen.logits(h[-1:])[0]
