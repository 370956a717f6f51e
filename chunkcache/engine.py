"""Forward passes over a WorkingKV: plain prefill and decoding (selective recompute: recompute.py).

What each query sees is its `layout.Layout`, built from absolute positions (and segment ids),
so a recomputed token in the middle of the context never sees a key after it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chunkcache.blending import apply_rope
from chunkcache.kv import WorkingKV
from chunkcache.layout import causal_blocks, layout_for
from chunkcache.model import Generator


@dataclass(frozen=True)
class Rows:
    """One request's share of a `forward_rows` batch: token ids [T] at slots [T] of its cache,
    already reserved (new slots for a decode step, a prompt piece's new tokens; existing context
    slots for a repair or a blend recompute).

    attend: None (the rows see the cache by position, `layout.layout_for`) or what they attend
    with instead, called in every layer after their K/V are written: (layer, q_rot [H, T, d])
    -> [H, T, d] (blend's probe scores the context this way, `recompute.ProbeAttention`)."""

    kv: WorkingKV
    ids: torch.Tensor
    slots: torch.Tensor
    attend: Callable[[int, torch.Tensor], torch.Tensor] | None = None


def decode_rows(kv: WorkingKV, token: int, position: int) -> Rows:
    """Reserve the next slot at `position` for `token`: the rows of a plain decode step."""
    dev = kv.pos.device
    slots = kv.reserve(torch.tensor([position], dtype=torch.int64, device=dev))
    return Rows(kv, torch.tensor([token], dtype=torch.int64, device=dev), slots)


class Engine:
    """Runs tokens through the generator's layers against a WorkingKV (batch of one, CPU or GPU)."""

    def __init__(self, gen: Generator):
        self.gen = gen

    # -- full forward of new tokens -------------------------------------------------------
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
        blocks = causal_blocks(gen.spec, kv, positions, segments)
        slots = kv.reserve(positions, segments)
        start = kv.length - positions.numel()
        cos, sin = gen.rope(positions)
        layout = blocks if blocks is not None else layout_for(gen.spec, kv, positions, segments)
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
                tail = layout_for(gen.spec, kv, positions[-keep:], None if segments is None else segments[-keep:])
                h = gen.finish(layer, h[-keep:], tail.attend(gen, kv, layer, q_rot[:, -keep:]))
                break
            h = gen.finish(layer, h, layout.attend(gen, kv, layer, q_rot))
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
        layouts = [None if r.attend else layout_for(gen.spec, r.kv, p) for r, p in zip(batch, positions)]
        last_layouts = [lay if r.attend or p.numel() == 1 else layout_for(gen.spec, r.kv, p[-1:])
                        for r, p, lay in zip(batch, positions, layouts)]
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
                if r.attend is not None:
                    out = r.attend(layer, q_rot[:, a:b])
                    outs.append(out[:, -1:] if layer == last else out)
                elif layer == last:
                    outs.append(last_layouts[i].attend(gen, r.kv, layer, q_rot[:, b - 1 : b]))
                else:
                    outs.append(layouts[i].attend(gen, r.kv, layer, q_rot[:, a:b]))
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
            h = gen.finish(layer, h[ends] if layer == last else h, out)
        return h

