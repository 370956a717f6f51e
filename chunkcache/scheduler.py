"""Continuous batching on the in-process generator (the scheduling idea of vLLM and SGLang, small).

One scheduler thread owns the model while requests are answered. A request's prompt phase
(`prompt_phase.start`: placing its chunks' KV, already loaded by the caller's thread, then the
prefill or blend and the first token) runs alone; then the request joins the running set, and
every running request's next decode step goes through ONE forward (`stream.decode_step`:
projections and MLP over all rows, attention per request over its own cache). New requests join
at step boundaries: each loop admits one waiting request, then takes one step of the batch, so a
newcomer waits at most one step for its prompt phase and the running ones are never starved. A request is done on a stop token, at its length, or when its
`should_stop` says so (a client gone, a timeout); it is then removed before the next step.

Concurrency model: callers block on a Future; the scheduler holds the model lock for each prompt
phase and each step (never across them), so warm-up and evaluation interleave at step boundaries.
"""

import collections
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

import torch

from chunkcache.engine import Engine
from chunkcache.errors import CacheClosedError
from chunkcache.stream import Stream, decode_step

log = logging.getLogger(__name__)


class Scheduler:
    """Runs submitted requests, decoding up to `max_batch` of them together.

    submit(prompt): `prompt()` runs on the scheduler thread under the model lock and returns
    the request's Stream after its first token; the Future resolves to the finished Stream.
    """

    def __init__(self, engine: Engine, lock: threading.RLock, max_batch: int = 16):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.engine = engine
        self.max_batch = max_batch
        self._lock = lock
        self._cv = threading.Condition()
        self._waiting: collections.deque[tuple[Callable[[], Stream], Future]] = collections.deque()
        self._running: list[tuple[Stream, Future]] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # batched decode steps taken
        self.batched_rows = 0  # requests summed over those steps (mean batch = batched_rows / steps)

    def submit(self, prompt: Callable[[], Stream]) -> Future:
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise CacheClosedError("the scheduler is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chunkcache-scheduler", daemon=True)
                self._thread.start()
            self._waiting.append((prompt, future))
            self._cv.notify()
        return future

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests, finish the running ones, fail the waiting ones."""
        with self._cv:
            self._closed = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._cv.notify()
        for _, future in waiting:
            future.set_exception(CacheClosedError("the cache was closed before this request started"))
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def busy(self) -> bool:
        """A request waits or runs (a snapshot: idle refinement polls it between layers)."""
        return bool(self._waiting or self._running)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._running and not self._closed:
                    self._cv.wait()
                if self._closed and not self._running:
                    return
                job = self._waiting.popleft() if self._waiting and len(self._running) < self.max_batch else None
            if job is not None:
                self._admit(*job)
            self._finish_done()
            if self._running:
                self._step()
                self._finish_done()

    def _admit(self, prompt: Callable[[], Stream], future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            with self._lock, torch.inference_mode():
                stream = prompt()
        except BaseException as exc:  # the request's own error (bad input, a model failure) is its caller's
            future.set_exception(exc)
            return
        self._running.append((stream, future))

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

    def _step(self) -> None:
        streams = [s for s, _ in self._running]
        try:
            with self._lock, torch.inference_mode():
                errors = decode_step(self.engine, streams)
        except BaseException as exc:  # the forward itself failed: every request of the batch fails
            log.exception("batched decode step failed for %d requests", len(streams))
            for _, future in self._running:
                future.set_exception(exc)
            self._running = []
            return
        self.steps += 1
        self.batched_rows += len(streams)
        if any(e is not None for e in errors):
            kept = []
            for (stream, future), err in zip(self._running, errors):
                if err is None:
                    kept.append((stream, future))
                else:
                    future.set_exception(err)
            self._running = kept
