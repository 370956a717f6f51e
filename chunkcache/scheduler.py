"""Continuous batching with a token budget per step (the scheduling of vLLM and SARATHI, small).

One scheduler thread owns the model while requests are answered. Every step is ONE forward
(`Engine.forward_rows`: projections and MLP over all rows, attention per request over its own
cache) of
  - the next rows of every running decode (one row; more while it repairs), never cut, and
  - prompt work in pieces (`prompt_work.PromptWork`: a full prefill in chunks, blend's probe,
    then its recompute in position order) in what `token_budget` has left, in admission order
    (`step_budget.share_budget`).
A long prompt therefore never stalls the running decodes for its whole length: it advances a
budget's worth of rows per step beside them (`IDLE_BUDGET_FACTOR` budgets when nothing decodes).
A prompt phase that cannot be split (a non-default selection: `recompute.splits_by_position`)
runs alone at a step boundary.

Memory: a request holds its working cache's slots from admission (`step_budget.Admission`, in the
caller's thread, before its chunks are placed) to its end; one that can never fit is refused,
others wait in arrival order. A request is done on a stop token, at its length, or when its
`should_stop` says so (a client gone, a timeout); it is then removed before the next step (before
its first token: its Future fails with RequestCancelledError).

Concurrency model: callers block on a Future; the scheduler holds the model lock for each step
(never across steps), so warm-up and evaluation interleave at step boundaries.
"""

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

import torch

from chunkcache.engine import Engine, Rows
from chunkcache.errors import CacheClosedError, RequestCancelledError
from chunkcache.names import DEFAULT_TOKEN_BUDGET
from chunkcache.prompt_work import PromptWork
from chunkcache.step_budget import Admission, SlotPool, share_budget
from chunkcache.stream import Stream, decode_step
from chunkcache.types import SchedulerStats

log = logging.getLogger(__name__)

# A step with no decode to stall gives prompt work this many budgets: every forward reads all the
# weights once (~40 ms for the default model on one core), so a lone prompt in budget-sized
# pieces would pay that per piece (measured: 723 ms alone at a budget of 32 against 539 at 64).
IDLE_BUDGET_FACTOR = 4


class Scheduler:
    """Runs submitted requests, up to `max_batch` of them at once, `token_budget` rows a step.

    submit(work): `work()` is called on the scheduler thread and returns the request's PromptWork
    (its cache placed); the Future resolves to the finished Stream. Working-cache memory is
    `admission`'s (`pool_slots` tokens; acquire before placing, release after the answer).
    """

    def __init__(self, engine: Engine, lock: threading.RLock, max_batch: int = 16,
                 token_budget: int = DEFAULT_TOKEN_BUDGET, pool_slots: int = 1 << 40, slot_bytes: int = 0):
        if max_batch < 1 or token_budget < 1:
            raise ValueError(f"max_batch and token_budget must be >= 1, got {max_batch}, {token_budget}")
        self.engine = engine
        self.max_batch = max_batch
        self.token_budget = token_budget
        self.admission = Admission(SlotPool(pool_slots))
        self.slot_bytes = slot_bytes  # working-cache bytes a slot (for reports)
        self._lock = lock
        self._cv = threading.Condition()
        self._waiting: collections.deque[tuple[Callable[[], PromptWork], Future]] = collections.deque()
        self._prompting: list[tuple[PromptWork, Future]] = []
        self._running: list[tuple[Stream, Future]] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # forwards taken
        self.batched_rows = 0  # requests summed over those steps (mean batch = batched_rows / steps)
        self.rows = 0  # token rows summed over those steps (decode, repair and prompt rows)
        self.prompt_rows = 0  # of which prompt pieces
        self.mixed_steps = 0  # steps whose forward carried decodes and prompt pieces together

    def submit(self, work: Callable[[], PromptWork]) -> Future:
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise CacheClosedError("the scheduler is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chunkcache-scheduler", daemon=True)
                self._thread.start()
            self._waiting.append((work, future))
            self._cv.notify()
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests, finish the admitted ones, fail the waiting ones."""
        with self._cv:
            self._closed = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._cv.notify()
        for _, future in waiting:
            future.set_exception(CacheClosedError("the cache was closed before this request started"))
        if self._thread is not None:
            self._thread.join(timeout_s)

    def stats(self) -> SchedulerStats:
        pool, b = self.admission.pool, self.slot_bytes
        return SchedulerStats(self.steps, self.rows, self.prompt_rows, self.mixed_steps, self.token_budget, pool.used * b,
                              pool.peak * b, pool.capacity * b, self.admission.waiting)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> int:
        return len(self._running) + len(self._prompting)

    @property
    def busy(self) -> bool:
        """A request waits or runs (a snapshot: idle refinement polls it between layers)."""
        return bool(self._waiting or self._prompting or self._running or self.admission.waiting)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._running and not self._prompting and not self._closed:
                    self._cv.wait()
                if self._closed and not self._running and not self._prompting:
                    return
                new = []
                while self._waiting and len(self._running) + len(self._prompting) + len(new) < self.max_batch:
                    new.append(self._waiting.popleft())
            for work, future in new:
                self._start(work, future)
            self._finish_done()
            self._drop_cancelled()
            if self._prompting and self._prompting[0][0].solo:
                self._solo(*self._prompting.pop(0))
            elif self._running or self._prompting:
                self._step()
            self._finish_done()

    def _start(self, work: Callable[[], PromptWork], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            self._prompting.append((work(), future))
        except BaseException as exc:  # the request's own error is its caller's
            future.set_exception(exc)

    def _solo(self, work: PromptWork, future: Future) -> None:
        try:
            with self._lock, torch.inference_mode():
                self._running.append((work.run_solo(), future))
        except BaseException as exc:
            future.set_exception(exc)

    def _finish_done(self) -> None:
        live = []
        for stream, future in self._running:
            try:
                finished = stream.finished
            except BaseException as exc:  # should_stop raised
                future.set_exception(exc)
                continue
            if finished:
                future.set_result(stream)
            else:
                live.append((stream, future))
        self._running = live

    def _drop_cancelled(self) -> None:
        """Prompt phases whose caller gave up stop here, not after their last piece."""
        still = []
        for work, future in self._prompting:
            try:
                stop = work.should_stop is not None and work.should_stop()
            except BaseException as exc:  # should_stop raised
                future.set_exception(exc)
                continue
            if stop:
                future.set_exception(RequestCancelledError("the request was cancelled before its first token"))
            else:
                still.append((work, future))
        self._prompting = still

    def _step(self) -> None:
        """One forward (`stream.decode_step`): every running decode's rows and the prompt pieces
        the budget has room for."""
        decoding = self._running
        share: list[tuple[int, int]] = []  # (index in _prompting, rows) of this step's pieces
        n_decode = 0

        def pieces(decode_rows: int) -> list[Rows]:
            nonlocal n_decode
            n_decode = decode_rows
            budget = self.token_budget if decode_rows else IDLE_BUDGET_FACTOR * self.token_budget
            share.extend(share_budget(decode_rows, [(i, w.rows_left) for i, (w, _) in enumerate(self._prompting)], budget))
            return [self._prompting[i][0].piece(n) for i, n in share]

        try:
            with self._lock, torch.inference_mode():
                errors, hidden = decode_step(self.engine, [st for st, _ in decoding], pieces)
        except BaseException as exc:  # the forward itself failed: every request of the step fails
            log.exception("scheduler step failed for %d decodes and %d prompt pieces", len(decoding), len(self._prompting))
            for _, future in decoding + self._prompting:
                future.set_exception(exc)
            self._running, self._prompting = [], []
            return
        prompt_rows = sum(n for _, n in share)
        self.steps += 1
        self.batched_rows += len(decoding) + len(share)
        self.rows += n_decode + prompt_rows
        self.prompt_rows += prompt_rows
        self.mixed_steps += bool(decoding and share)
        self._running = []
        for (stream, future), err in zip(decoding, errors):
            if err is None:
                self._running.append((stream, future))
            else:  # its consumer failed: this request alone ends
                future.set_exception(err)
        self._take_pieces(share, hidden)

    def _take_pieces(self, share: list[tuple[int, int]], hidden: torch.Tensor) -> None:
        """Hand each prompt piece its last hidden state [1, D]; move requests with a first token on."""
        failed: set[int] = set()
        for (i, _), h in zip(share, hidden):
            work, future = self._prompting[i]
            try:
                with self._lock, torch.inference_mode():
                    work.took(h[None])
            except Exception as exc:  # its first token's consumer failed, or its growth
                future.set_exception(exc)
                failed.add(i)
        still = []
        for i, (work, future) in enumerate(self._prompting):
            if i in failed:
                continue
            if work.stream is not None:
                self._running.append((work.stream, future))
            else:
                still.append((work, future))
        self._prompting = still
