"""The attention layout: what one request's queries see in its working cache during one forward.

Built once per forward from absolute positions (and segment ids), the same for every layer, and
used through its one method, `attend(gen, kv, layer, q)`. Three kinds:
  Causal    queries see the keys at positions <= theirs. `mask` is what `grouped_attention`
            takes: None (every key visible: a decode step), `Stairs` (queries and keys both
            sorted by position, the usual case: attention skips what lies above the staircase)
            or a dense [Tq, Tk] bool mask (unsorted positions, segments, a sliding window);
  Blocks    a prefill right after the shared prefix whose tokens form causal squares behind it
            (a whole prompt, or a packed warm-up with one chunk per segment): each block runs
            with the prefix's own queries as one square, SDPA's maskless causal path;
  Parallel  APE: the cache's parallel span attended apart (temperature T on its logits), merged
            through log-sum-exps with the other slots (causal by position) with scale S.
Which kind follows from the cache (`WorkingKV.prefix`, `.parallel`) and the positions alone.
"""

from dataclasses import dataclass

import torch

from chunkcache.blending import Stairs, ape_merge, attention_lse, position_mask, stairs
from chunkcache.kv import ParallelSpan, WorkingKV
from chunkcache.model import Generator, ModelSpec


@dataclass(frozen=True)
class Causal:
    """Keys by position. mask: None, `Stairs` or [Tq, Tk] bool over the filled slots."""

    mask: torch.Tensor | Stairs | None

    def attend(self, gen: Generator, kv: WorkingKV, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q: [H, Tq, d] rotated; returns [H, Tq, d]."""
        return gen.attention(q, *kv.keys(layer), self.mask)


@dataclass(frozen=True)
class Blocks:
    """Slot ranges [(a, b)], each a causal square right behind the prefix [0, P)."""

    bounds: tuple[tuple[int, int], ...]

    def attend(self, gen: Generator, kv: WorkingKV, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q: [H, T, d] rotated, the blocks' queries back to back; returns [H, T, d]. Each block's
        queries run behind the prefix's own queries over [prefix][block]; the prefix rows are dropped."""
        p = kv.prefix_len
        k_all, v_all = kv.keys(layer)
        outs = []
        for a, b in self.bounds:
            qb = q[:, a - p : b - p]
            if p:
                qb = torch.cat((kv.prefix.q[layer], qb), dim=1)  # [H, P+n, d]
            if a == p:
                kb, vb = k_all[:, :b], v_all[:, :b]
            else:
                kb = torch.cat((k_all[:, :p], k_all[:, a:b]), dim=1)
                vb = torch.cat((v_all[:, :p], v_all[:, a:b]), dim=1)
            outs.append(gen.attention(qb, kb, vb, None, causal=True)[:, p:])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


@dataclass(frozen=True)
class Parallel:
    """APE over `span`; others: [To] the other filled slots, mask: [Tq, To] bool over them."""

    span: ParallelSpan
    others: torch.Tensor
    mask: torch.Tensor

    def attend(self, gen: Generator, kv: WorkingKV, layer: int, q: torch.Tensor) -> torch.Tensor:
        """q: [H, Tq, d] rotated; returns [H, Tq, d]."""
        spec = gen.spec
        k, v = kv.keys(layer)
        start, end, temperature = self.span.start, self.span.end, self.span.temperature
        rep = spec.n_heads // spec.n_kv_heads
        kc = k[:, start:end].repeat_interleave(rep, 0)
        vc = v[:, start:end].repeat_interleave(rep, 0)
        ko = k[:, self.others].repeat_interleave(rep, 0)
        vo = v[:, self.others].repeat_interleave(rep, 0)
        o_c, lse_c = attention_lse(q, kc, vc, spec.scaling / temperature)
        o_o, lse_o = attention_lse(q, ko, vo, spec.scaling, self.mask)
        return ape_merge(o_c, lse_c, o_o, lse_o, self.span.scale * temperature)


Layout = Causal | Blocks | Parallel


def layout_for(spec: ModelSpec, kv: WorkingKV, q_pos: torch.Tensor, q_seg: torch.Tensor | None = None) -> Causal | Parallel:
    """The layout of queries at q_pos [Tq] (segments q_seg [Tq]) over the filled cache. Call after
    their slots are reserved."""
    n, window = kv.length, spec.sliding_window
    if kv.parallel is not None:
        start, end = kv.parallel.start, kv.parallel.end
        dev = kv.pos.device
        others = torch.cat((torch.arange(0, start, device=dev), torch.arange(end, n, device=dev)))
        return Parallel(kv.parallel, others, position_mask(q_pos, kv.pos[others], window=window))
    if q_pos.numel() == 1 and q_seg is None and window is None and int(kv.pos[:n].max()) <= int(q_pos[0]):
        return Causal(None)  # a decode step sees every key: no mask at all
    if q_seg is None and window is None:
        plan = stairs(q_pos, kv.pos[:n], spec.n_heads // spec.n_kv_heads)
        if plan is not None:
            return Causal(plan)
    k_seg = kv.seg[:n] if q_seg is not None else None
    return Causal(position_mask(q_pos, kv.pos[:n], q_seg, k_seg, window))


def causal_blocks(spec: ModelSpec, kv: WorkingKV, positions: torch.Tensor, segments: torch.Tensor | None) -> Blocks | None:
    """The `Blocks` layout of a prefill of `positions` [T] (segments [T]) when it applies, else None
    (then `layout_for`). Call before reserving: the blocks must start right after the prefix."""
    p = kv.length
    if kv.parallel is not None or spec.sliding_window is not None or p != kv.prefix_len:
        return None
    if segments is None:
        lengths = [positions.numel()]
    else:
        _, counts = torch.unique_consecutive(segments, return_counts=True)
        lengths = counts.tolist()
    expected = torch.cat([torch.arange(p, p + n, device=positions.device) for n in lengths])
    if not torch.equal(positions, expected):
        return None
    bounds, a = [], p
    for n in lengths:
        bounds.append((a, a + n))
        a += n
    return Blocks(tuple(bounds))
