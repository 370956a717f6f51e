"""Forward passes over a WorkingKV: plain prefill and decoding (selective recompute: recompute.py).

Every attention mask is built from absolute positions (and segment ids), so a recomputed
token in the middle of the context never sees a key after it.
"""

from dataclasses import dataclass

import torch

from chunkcache.blending import ape_merge, apply_rope, attention_lse, position_mask, stairs
from chunkcache.kv import WorkingKV
from chunkcache.model import Generator


@dataclass(frozen=True)
class ApeParams:
    temperature: float = 0.9
    scale: float = 0.9


@dataclass(frozen=True)
class Rows:
    """One request's share of a `forward_rows` batch: token ids [T] at slots [T] of its cache,
    already reserved (new slots for a decode step; existing context slots too for a repair)."""

    kv: WorkingKV
    ids: torch.Tensor
    slots: torch.Tensor


def decode_rows(kv: WorkingKV, token: int, position: int) -> Rows:
    """Reserve the next slot at `position` for `token`: the rows of a plain decode step."""
    dev = kv.pos.device
    slots = kv.reserve(torch.tensor([position], dtype=torch.int64, device=dev))
    return Rows(kv, torch.tensor([token], dtype=torch.int64, device=dev), slots)


class Engine:
    """Runs tokens through the generator's layers against a WorkingKV (batch of one, CPU or GPU)."""

    def __init__(self, gen: Generator, ape: ApeParams = ApeParams()):
        self.gen = gen
        self.ape = ape

    # -- attention over the working cache -------------------------------------------------
    def mask_for(self, kv: WorkingKV, q_pos: torch.Tensor, q_seg: torch.Tensor | None = None):
        """What attention of queries at q_pos [Tq] over the filled cache needs. Call after the new
        slots are reserved; built once per forward (the same for every layer).

        Returns None (every key visible: a decode step), `Stairs` (queries and keys both sorted
        by position, the usual layout: attention skips what lies above the staircase), a dense
        [Tq, Tk] bool mask, or, for APE, (other slots [To], mask over them [Tq, To]).
        """
        n, window = kv.length, self.gen.spec.sliding_window
        if kv.ape_slots is None:
            if q_pos.numel() == 1 and q_seg is None and window is None and int(kv.pos[:n].max()) <= int(q_pos[0]):
                return None  # a decode step sees every key: no mask at all
            if q_seg is None and window is None:
                spec = self.gen.spec
                plan = stairs(q_pos, kv.pos[:n], spec.n_heads // spec.n_kv_heads)
                if plan is not None:
                    return plan
            k_seg = kv.seg[:n] if q_seg is not None else None
            return position_mask(q_pos, kv.pos[:n], q_seg, k_seg, window)
        start, end = kv.ape_slots
        dev = kv.pos.device
        other = torch.cat((torch.arange(0, start, device=dev), torch.arange(end, n, device=dev)))
        return other, position_mask(q_pos, kv.pos[other], window=window)

    def _attend(self, kv: WorkingKV, layer: int, q: torch.Tensor, mask) -> torch.Tensor:
        """q: [H, T, d] rotated; mask from `mask_for`; returns [H, T, d]."""
        spec = self.gen.spec
        k, v = kv.keys(layer)
        if kv.ape_slots is None:
            return self.gen.attention(q, k, v, mask)
        # APE: the context part C (all visible, temperature T) and the rest O (causal by position).
        other, mask_o = mask
        start, end = kv.ape_slots
        rep = spec.n_heads // spec.n_kv_heads
        kc = k[:, start:end].repeat_interleave(rep, 0)
        vc = v[:, start:end].repeat_interleave(rep, 0)
        ko = k[:, other].repeat_interleave(rep, 0)
        vo = v[:, other].repeat_interleave(rep, 0)
        o_c, lse_c = attention_lse(q, kc, vc, spec.scaling / self.ape.temperature)
        o_o, lse_o = attention_lse(q, ko, vo, spec.scaling, mask_o)
        return ape_merge(o_c, lse_c, o_o, lse_o, self.ape.scale * self.ape.temperature)

    # -- full forward of new tokens -------------------------------------------------------
    def _causal_blocks(self, kv: WorkingKV, positions: torch.Tensor, segments: torch.Tensor | None) -> list[tuple[int, int]] | None:
        """Slot ranges [(a, b)] that each form a plain causal block right after the prefix, or None.

        The common prefills (a full prompt, a packed warm-up of chunks each in its own segment)
        are causal squares behind the shared prefix: for them attention needs no dense mask.
        Call before reserving. Needs the prefix's queries (`kv.prefix_q`) unless there is no prefix.
        """
        p = kv.length
        if kv.ape_slots is not None or self.gen.spec.sliding_window is not None or p != kv.prefix_len:
            return None
        if p and kv.prefix_q is None:
            return None
        t = positions.numel()
        if segments is None:
            lengths = [t]
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
        return bounds

    def _causal_attend(self, kv: WorkingKV, layer: int, q: torch.Tensor, blocks: list[tuple[int, int]]) -> torch.Tensor:
        """Attention of causal blocks behind the prefix, without a mask.

        Each block's queries run together with the prefix's own queries over [prefix][block] as
        one causal square (SDPA's is_causal path); the prefix rows are dropped. q: [H, T, d].
        """
        p = kv.prefix_len
        k_all, v_all = kv.keys(layer)
        outs = []
        for a, b in blocks:
            qb = q[:, a - p : b - p]
            if p:
                qb = torch.cat((kv.prefix_q[layer], qb), dim=1)  # [H, P+n, d]
            if a == p:
                kb, vb = k_all[:, :b], v_all[:, :b]
            else:
                kb = torch.cat((k_all[:, :p], k_all[:, a:b]), dim=1)
                vb = torch.cat((v_all[:, :p], v_all[:, a:b]), dim=1)
            outs.append(self.gen.attention(qb, kb, vb, None, causal=True)[:, p:])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    @torch.inference_mode()
    def prefill(
        self,
        kv: WorkingKV,
        ids: torch.Tensor,
        positions: torch.Tensor,
        segments: torch.Tensor | None = None,
        collect: bool = False,
        collect_q: bool = False,
        keep: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run ids [T] at positions [T] through every layer, appending their K/V to `kv`.

        Returns the last layer's hidden states [T, D] and, when `collect`, the new tokens'
        pre-RoPE cache [L, 2, Hkv, T, d] (with `collect_q`, their rotated queries [L, H, T, d]
        instead: what a shared prefix keeps so later prefills need no mask).
        keep: only the last `keep` tokens' hidden states are wanted ([keep, D] is returned; 0 for
        a warm-up): the last layer then writes every token's K/V but runs attention, output
        projection and MLP for those rows alone (a thirtieth of a prefill on a 30-layer model).
        """
        steps = self.prefill_steps(kv, ids, positions, segments, collect, collect_q, keep)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def prefill_steps(self, kv: WorkingKV, ids: torch.Tensor, positions: torch.Tensor, segments: torch.Tensor | None = None,
                      collect: bool = False, collect_q: bool = False, keep: int | None = None):
        """`prefill` one layer at a time: a generator that yields each layer's index after it ran
        (work that must give way, like idle refinement, pauses between layers) and returns
        prefill's result. Run it under `torch.inference_mode()`."""
        gen = self.gen
        blocks = self._causal_blocks(kv, positions, segments)
        slots = kv.reserve(positions, segments)
        start = kv.length - positions.numel()
        cos, sin = gen.rope(positions)
        mask = None if blocks is not None else self.mask_for(kv, positions, segments)
        h = gen.embed(ids)
        pre = []
        last = gen.spec.n_layers - 1
        for layer in range(gen.spec.n_layers):
            q, k, v = gen.qkv(layer, h)
            q_rot = apply_rope(q, cos, sin)
            if collect:
                pre.append(q_rot if collect_q else torch.stack((k, v)))
            if blocks is not None:
                kv.write_block(layer, start, apply_rope(k, cos, sin), v)
            else:
                kv.write(layer, slots, apply_rope(k, cos, sin), v)
            if layer == last and keep is not None and keep < positions.numel():
                if keep == 0:
                    h = h[:0]
                    break
                rows = positions[-keep:]
                tail_mask = self.mask_for(kv, rows, None if segments is None else segments[-keep:])
                h = gen.finish(layer, h[-keep:], self._attend(kv, layer, q_rot[:, -keep:], tail_mask))
                break
            if blocks is not None:
                out = self._causal_attend(kv, layer, q_rot, blocks)
            else:
                out = self._attend(kv, layer, q_rot, mask)
            h = gen.finish(layer, h, out)
            if layer < last:
                yield layer
        return h, (torch.stack(pre) if collect else None)

    def query_attention(self, q_suffix: torch.Tensor, k_ctx: torch.Tensor) -> torch.Tensor:
        """Mean attention of the suffix tokens over the context tokens, both already rotated.

        q_suffix: [H, S, d]; k_ctx: [Hkv, N, d]. Returns [N] (sums to 1).
        """
        spec = self.gen.spec
        k_rep = k_ctx.repeat_interleave(spec.n_heads // spec.n_kv_heads, 0)  # [H, N, d]
        probs = torch.softmax(torch.matmul(q_suffix, k_rep.transpose(-1, -2)) * spec.scaling, dim=-1)  # [H, S, N]
        return probs.mean(dim=(0, 1))

    # -- decoding: rows of several requests in one forward -----------------------------------
    @torch.inference_mode()
    def forward_rows(self, batch: list[Rows]) -> torch.Tensor:
        """One forward of several requests' rows; returns each request's LAST row's final hidden
        state [B, D] (what the next token's logits need).

        Norms, projections and MLP run on all rows at once (B requests' weights are read once:
        this is where batched decoding gains, decoding being memory-bound); attention runs per
        request over its own cache, each row seeing exactly the keys its position allows. Every
        row writes fresh K/V at its slot in every layer; in the last layer only each request's
        last row goes on past its K/V.
        """
        gen = self.gen
        ids = torch.cat([r.ids for r in batch])
        positions = [r.kv.pos[r.slots] for r in batch]
        cos, sin = gen.rope(torch.cat(positions))
        masks = [self.mask_for(r.kv, p) for r, p in zip(batch, positions)]
        last_masks = [m if p.numel() == 1 else self.mask_for(r.kv, p[-1:]) for r, p, m in zip(batch, positions, masks)]
        # A decode step's one new slot is written as a slice, not through the index scatter.
        starts = [int(r.slots[0]) if r.slots.numel() == 1 else None for r in batch]
        bounds = [0]
        for r in batch:
            bounds.append(bounds[-1] + r.ids.numel())
        ends = torch.tensor(bounds[1:], device=ids.device) - 1
        h = gen.embed(ids)
        last = gen.spec.n_layers - 1
        for layer in range(gen.spec.n_layers):
            q, k, v = gen.qkv(layer, h)
            q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            outs = []
            for i, r in enumerate(batch):
                a, b = bounds[i], bounds[i + 1]
                if starts[i] is None:
                    r.kv.write(layer, r.slots, k_rot[:, a:b], v[:, a:b])
                else:
                    r.kv.write_block(layer, starts[i], k_rot[:, a:b], v[:, a:b])
                if layer == last:
                    outs.append(self._attend(r.kv, layer, q_rot[:, b - 1 : b], last_masks[i]))
                else:
                    outs.append(self._attend(r.kv, layer, q_rot[:, a:b], masks[i]))
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
            h = gen.finish(layer, h[ends] if layer == last else h, out)
        return h

    @torch.inference_mode()
    def step(self, kv: WorkingKV, token: int, position: int) -> torch.Tensor:
        """One decode step: returns logits [V] of the token after `token`."""
        return self.gen.logits(self.forward_rows([decode_rows(kv, token, position)]))[0]

