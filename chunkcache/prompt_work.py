"""A request's prompt phase in pieces that ride in scheduler steps beside the decodes (SARATHI's
chunked prefill; vLLM's scheduler spends its token budget the same way).

The prompt rows of one request, in the order they run:
  full, prefix   the context after the exact run, then the question, in position order;
  reuse, ape     the question alone;
  blend (probe)  the probe (the question over the placed cache; its scores are sums over its
                 rows, `recompute.ProbeAttention`), then the selected context tokens and the
                 question in position order.
Any split of a run in position order is exact: a piece attends to positions before it, whose
K/V the earlier pieces already wrote (or, for blend, refreshed) in every layer, so a chunked
prompt phase computes what the whole one computes (`prompt_phase.start`) up to the float
rounding of batched matrix products. Selections that need the whole context at once
(CacheBlend's deviation, gradual filtering, leading full layers: `recompute.splits_by_position`)
run whole and alone (`solo`); growth before the first token runs alone after the last piece.
"""

import time
from collections.abc import Callable

import torch

from chunkcache.blending import gradual_budgets
from chunkcache.engine import Engine, Rows
from chunkcache.prompt_phase import Prepared, Prompted, after_blend, blend_plan, context_ids, first_token, start
from chunkcache.recompute import ProbeAttention, refresh_queue, select, splits_by_position
from chunkcache.repair import Decoder
from chunkcache.request import Request
from chunkcache.sampling import Sampler
from chunkcache.stream import Stream


class PromptWork:
    """The prompt phase of one admitted request, its cache already placed (`prompt_phase.prepare`).

    Either `solo` (run it whole with `run_solo`), or pieces: `rows_left` is what is left of the
    current run (a blend's recompute is known once its probe ran), `piece(n)` returns the next
    rows (at most n, at least 1) for a shared forward and `took(hidden)` takes that forward's
    last hidden state [1, D] of them. Every run splits anywhere.
    `stream` is set once the first token is out.
    """

    def __init__(self, engine: Engine, req: Request, prepared: Prepared, sampler: Sampler, t_start: float,
                 on_token: Callable[[int], bool] | None = None, should_stop: Callable[[], bool] | None = None):
        self.engine, self.req, self.prepared, self.sampler = engine, req, prepared, sampler
        self.t_start, self.on_token, self.should_stop = t_start, on_token, should_stop
        self.stream: Stream | None = None
        self._t0: float | None = None  # when the first piece ran (the prefill's clock)
        dev = engine.gen.device
        a = prepared.assembled
        n, s, e = sum(req.lengths), len(req.suffix_ids), req.exact_tokens
        suffix = torch.tensor(req.suffix_ids, dtype=torch.int64, device=dev)
        self._suffix_pos = torch.arange(a.suffix_start, a.suffix_start + s, device=dev)
        self._next_pos = a.suffix_start + s
        self._plan = blend_plan(req, dev)
        self._ctx_slots = a.slots[e:]  # [N - E] the slots of the context after the exact run
        self._probe: ProbeAttention | None = None
        self._probing = False
        self._slots: torch.Tensor | None = None  # [T] the run's slots, None: new ones reserved per piece
        self._done = 0
        self._recomputed = 0
        self.solo = self._plan is not None and not self._plan.recomputes_nothing and not splits_by_position(req.blend)
        if req.mode in ("full", "prefix"):
            self._ids = torch.cat((context_ids(req, dev), suffix))
            self._pos = torch.arange(a.suffix_start - (n - e), self._next_pos, device=dev)
            self._recomputed = n - e
        elif self._plan is None or self._plan.recomputes_nothing:
            self._ids, self._pos = suffix, self._suffix_pos
        else:  # blend: the probe first; its rows are the question's
            self._ids, self._pos = suffix, self._suffix_pos
            self._probing = True

    @property
    def rows_left(self) -> int:
        return self._ids.numel() - self._done

    def piece(self, rows: int) -> Rows:
        """The next rows to run (at most `rows`, at least 1), their slots reserved."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
        kv = self.prepared.kv
        a, b = self._done, min(self._done + max(rows, 1), self._ids.numel())
        slots = kv.reserve(self._pos[a:b]) if self._slots is None else self._slots[a:b]
        self._done = b
        if not self._probing:
            return Rows(kv, self._ids[a:b], slots)
        if self._probe is None:
            self._probe = ProbeAttention(self.engine, kv, self._ctx_slots, self.req.blend.probe_from)
        return Rows(kv, self._ids[a:b], slots, self._probe.piece(self._pos[a:b]))

    def took(self, hidden: torch.Tensor) -> None:
        """hidden: [1, D] the last row of the piece just run. Opens the stream after the last piece."""
        if self.rows_left:
            return
        if self._probing:
            self._probing = False
            self._start_recompute()
            return
        engine, req, kv = self.engine, self.req, self.prepared.kv
        logits = engine.gen.logits(hidden[-1:])[0]
        decoder = Decoder(engine, kv)
        if self._plan is not None and not self._plan.recomputes_nothing:
            decoder, logits, self._recomputed = after_blend(engine, kv, req, self._ctx_slots, self._ctx, self._queue,
                                                             self._recomputed, logits)
        done = Prompted(decoder, logits, self._next_pos, self._recomputed, self.prepared.reposition_s, self._t0)
        self.stream = first_token(engine, req, done, self.sampler, self.t_start, self.on_token, self.should_stop)

    def _start_recompute(self) -> None:
        """After the probe: the selected context tokens and the question, in position order."""
        dev = self.engine.gen.device
        plan = self._plan
        n = self._ctx_slots.numel()
        k = gradual_budgets(n, plan.ratio, self.engine.gen.spec.n_layers, plan.config.gradual_start)[0]
        selected, order = select(self._probe.scores, plan, k)
        self._ctx = context_ids(self.req, dev)
        self._queue = refresh_queue(order, selected)
        self._recomputed = selected.numel()
        s = self._ids.numel()  # the question, whose slots the probe reserved last
        suffix_slots = torch.arange(self.prepared.kv.length - s, self.prepared.kv.length, device=dev)
        self._ids = torch.cat((self._ctx[selected], self._ids))
        self._slots = torch.cat((self._ctx_slots[selected], suffix_slots))
        self._done = 0
        self._probe = None

    def run_solo(self) -> Stream:
        """The whole prompt phase alone (`prompt_phase.start` over the placed cache)."""
        return start(self.engine, self.prepared.kv.prefix, self.req, None, self.sampler, self.t_start,
                     self.on_token, self.should_stop, prepared=self.prepared)
