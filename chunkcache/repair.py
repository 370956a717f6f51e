"""More of the context recomputed after blend's selection, next tokens of `BlendResult.queue` first:
growth before the first token (`grow`), and repair while decoding (`Decoder`'s repair steps).

Both refresh context tokens together with the tail (the question suffix, the answer so far),
so each sees the others fresh; every row writes new K/V at its slot in every layer.
"""

from dataclasses import dataclass

import torch

from chunkcache.blending import budget
from chunkcache.config import BlendConfig
from chunkcache.engine import Engine, Rows, decode_rows
from chunkcache.kv import WorkingKV
from chunkcache.scores import kl_divergence


def refresh_rows(kv: WorkingKV, ctx_slots: torch.Tensor, ctx_ids: torch.Tensor, ctx_idx: torch.Tensor,
                 tail_slots: torch.Tensor, tail_ids: torch.Tensor) -> Rows:
    """The rows that recompute context tokens ctx_idx [M] together with the tail (question,
    generated tokens, the current input token: slots [T] already reserved, ids [T]); each
    writes fresh K/V at its slot in every layer (see `Engine.forward_rows`)."""
    ctx_idx = ctx_idx.sort().values  # in position order: attention then runs as `Stairs`
    return Rows(kv, torch.cat((ctx_ids[ctx_idx], tail_ids)), torch.cat((ctx_slots[ctx_idx], tail_slots)))


@torch.inference_mode()
def refresh(engine: Engine, kv: WorkingKV, ctx_slots: torch.Tensor, ctx_ids: torch.Tensor, ctx_idx: torch.Tensor,
            tail_slots: torch.Tensor, tail_ids: torch.Tensor) -> torch.Tensor:
    """Recompute context tokens ctx_idx [M] with the tail (see `refresh_rows`) through every layer.
    Returns the tail's last hidden state [1, D]."""
    return engine.forward_rows([refresh_rows(kv, ctx_slots, ctx_ids, ctx_idx, tail_slots, tail_ids)])


def grow(engine: Engine, kv: WorkingKV, cfg: BlendConfig, ctx_slots: torch.Tensor, ctx_ids: torch.Tensor,
         queue: torch.Tensor, recomputed: int, suffix_slots: torch.Tensor, suffix_ids: torch.Tensor,
         logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Recompute more of `queue` [M] before the first token until its distribution settles
    (`cfg.grow_tolerance`, `grow_step`, `grow_max_ratio`; shares of the N blended context tokens).

    ctx_slots, ctx_ids: [N]; suffix_slots, suffix_ids: [S]; logits: [V] of the first token so far.
    Returns (first-token logits [V], context tokens added).
    """
    n = ctx_ids.numel()
    step, ceiling = budget(n, cfg.grow_step), budget(n, cfg.grow_max_ratio)
    done = 0
    while recomputed + done < ceiling and done < queue.numel():
        extra = queue[done : done + min(step, ceiling - recomputed - done)]
        done += extra.numel()
        h = refresh(engine, kv, ctx_slots, ctx_ids, extra, suffix_slots, suffix_ids)
        new = engine.gen.logits(h[-1:])[0]
        moved = kl_divergence(torch.log_softmax(logits, -1), torch.log_softmax(new, -1))
        logits = new
        if moved < cfg.grow_tolerance:
            break
    return logits, done


@dataclass(frozen=True)
class RepairPlan:
    """Repair while decoding: during the first `steps` decode steps, each recomputes the next
    `per_step` context tokens of `queue` together with the tail.

    ctx_slots, ctx_ids: [N] the blended context; queue: [M] context indices, next first;
    suffix_slots: [S] the question's slots, suffix_ids: its token ids (the tail's start).
    """

    ctx_slots: torch.Tensor
    ctx_ids: torch.Tensor
    queue: torch.Tensor
    suffix_slots: torch.Tensor
    suffix_ids: tuple[int, ...]
    per_step: int
    steps: int


class Decoder:
    """The decode steps of one request over its cache: plain one-token forwards, or, while a
    `RepairPlan` has steps and tokens left, repair steps.

    repaired: context tokens refreshed so far; steps_taken: decode steps taken.
    """

    def __init__(self, engine: Engine, kv: WorkingKV, repair: RepairPlan | None = None):
        self.engine, self.kv, self.repair = engine, kv, repair
        # The tail: slots and ids of every token after the context (what a repair step refreshes).
        self.tail_slots: list[int] = [] if repair is None else repair.suffix_slots.tolist()
        self.tail_ids: list[int] = [] if repair is None else list(repair.suffix_ids)
        self.repaired = 0
        self.steps_taken = 0

    def snapshot(self):
        """The cache and progress as they are now (for a replay from here, see `restore`)."""
        return (self.kv.k.clone(), self.kv.v.clone(), self.kv.length, self.repaired, self.steps_taken,
                list(self.tail_slots), list(self.tail_ids))

    def restore(self, snap) -> None:
        k, v, self.kv.length, self.repaired, self.steps_taken, self.tail_slots, self.tail_ids = snap
        self.kv.k.copy_(k)
        self.kv.v.copy_(v)

    def rows(self, token: int, position: int) -> Rows:
        """The rows of the step that feeds `token` at `position` (reserves its slot)."""
        self.steps_taken += 1
        r = self.repair
        if r is not None and self.steps_taken <= r.steps and self.repaired < r.queue.numel():
            dev = self.kv.pos.device
            slot = self.kv.reserve(torch.tensor([position], dtype=torch.int64, device=dev))
            self.tail_slots.append(int(slot[0]))
            self.tail_ids.append(token)
            extra = r.queue[self.repaired : self.repaired + r.per_step]
            self.repaired += extra.numel()
            return refresh_rows(self.kv, r.ctx_slots, r.ctx_ids, extra,
                                torch.tensor(self.tail_slots, dtype=torch.int64, device=dev),
                                torch.tensor(self.tail_ids, dtype=torch.int64, device=dev))
        self.tail_slots.append(self.kv.length)
        self.tail_ids.append(token)
        return decode_rows(self.kv, token, position)

    def step(self, token: int, position: int) -> torch.Tensor:
        """Logits [V] of the token after `token` (at `position`), this request alone."""
        return self.engine.gen.logits(self.engine.forward_rows([self.rows(token, position)]))[0]
