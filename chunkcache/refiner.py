"""Idle-time refinement: make a context's next answer exact while nobody waits.

Every reuse or blend answer whose prompt was not wholly exact is noted (its links in prompt
order: the chunks' token lists, then the question's, `chain.prompt_links`). When the service
has been idle for `RefineConfig.idle_s`, one thread takes the most requested noted prompt,
full-prefills it behind its exact leading run (if any) and stores the chain entries of every
link (`chain.py`): the prompt's next answer computes only its last token, and another question
over the same chunks only its question. It gives way to requests between layers: before each
layer it waits until no answer is being prepared, prefilled or decoded, and it takes the model
lock for one layer at a time, so an arrival waits at most one layer (tens of ms on 2 cores at
1,000 context tokens). It rests so that it uses at most
`idle_share` of idle time, and stops writing once `max_bytes` are spent.

`compute_chain` is the same work without pauses, for `warm --queries` (ahead of time).
"""

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from chunkcache.assembly import place
from chunkcache.chain import ChainStore
from chunkcache.chunk_kv import new_working_kv
from chunkcache.config import RefineConfig
from chunkcache.engine import Engine
from chunkcache.kv import PrefixKV

log = logging.getLogger(__name__)

Context = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class RefineStats:
    """pending: contexts noted and not refined yet; refined: contexts stored exactly;
    layers: layers run; pauses: times a layer waited for a request; busy_s: seconds of work;
    bytes: chain-entry bytes written."""

    pending: int
    refined: int
    layers: int
    pauses: int
    busy_s: float
    bytes: int


def compute_chain(engine: Engine, prefix: PrefixKV, chains: ChainStore, chunk_ids: Sequence[Sequence[int]],
                  lock: threading.RLock, pause: Callable[[], None] | None = None) -> int:
    """Full-prefill a context behind its stored exact run and store its chain entries.

    pause: called before each layer (it may block; the model lock is not held then). Returns
    the bytes stored (0 when the whole context was exact already or the write failed).
    """
    chunk_ids = [list(c) for c in chunk_ids]
    exact = chains.lookup(chunk_ids)
    e = len(exact)
    if e == len(chunk_ids):
        return 0
    p = prefix.length
    n_exact = sum(len(c) for c in chunk_ids[:e])
    n = sum(len(c) for c in chunk_ids)
    with lock, torch.inference_mode():
        kv = new_working_kv(engine, prefix, n)
        dev = kv.pos.device
        if e:
            positions = torch.arange(p, p + n_exact, device=dev)
            kv.reserve(positions)
            place(engine, kv, p, exact, positions)
        ids = torch.tensor([t for c in chunk_ids[e:] for t in c], dtype=torch.int64, device=dev)
        steps = engine.prefill_steps(kv, ids, torch.arange(p + n_exact, p + n, device=dev), keep=0)
    while True:
        if pause is not None:
            pause()
        with lock, torch.inference_mode():
            try:
                next(steps)
            except StopIteration:
                break
    return chains.save(kv, chunk_ids, start=e)


class Refiner:
    """The refinement thread of one ChunkCache (started on the first note, see module docstring).

    busy: True while some answer is in progress (the Answerer's `busy`).
    """

    def __init__(self, engine: Engine, prefix: PrefixKV, chains: ChainStore, lock: threading.RLock,
                 busy: Callable[[], bool], config: RefineConfig):
        self.engine, self.prefix, self.chains = engine, prefix, chains
        self.config = config
        self._lock = lock
        self._busy = busy
        self._cv = threading.Condition()
        self._counts: collections.Counter[Context] = collections.Counter()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_busy = time.monotonic()
        self._refined = self._layers = self._pauses = self._bytes = 0
        self._busy_s = 0.0

    def note(self, chunk_ids: Context) -> None:
        """A context was answered inexactly: refine it when idle (repeats raise its priority)."""
        if not self.config.enabled:
            return
        with self._cv:
            if self._closed or self._spent():
                return
            self._counts[chunk_ids] += 1
            if len(self._counts) > self.config.max_pending:
                least, _ = min(self._counts.items(), key=lambda kv: kv[1])
                del self._counts[least]
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chunkcache-refiner", daemon=True)
                self._thread.start()
            self._cv.notify()

    def stats(self) -> RefineStats:
        with self._cv:
            return RefineStats(len(self._counts), self._refined, self._layers, self._pauses, self._busy_s, self._bytes)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _spent(self) -> bool:
        return self.config.max_bytes is not None and self._bytes >= self.config.max_bytes

    def _wait_idle(self) -> None:
        """Block until no answer has been in progress for `idle_s` (or the refiner closes)."""
        waited = False
        while not self._closed:
            if self._busy():
                self._last_busy = time.monotonic()
                waited = True
            elif time.monotonic() - self._last_busy >= self.config.idle_s:
                break
            time.sleep(0.002)
        if waited:
            with self._cv:
                self._pauses += 1

    def _pause(self) -> None:
        self._wait_idle()
        if self._closed:
            raise _Closed
        with self._cv:
            self._layers += 1

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._counts and not self._closed:
                    self._cv.wait()
                if self._closed or self._spent():
                    return
                context, _ = self._counts.most_common(1)[0]
                del self._counts[context]
            self._wait_idle()
            t0 = time.perf_counter()
            try:
                if self.chains.stored_run(context) < len(context):
                    written = compute_chain(self.engine, self.prefix, self.chains, context, self._lock, self._pause)
                    with self._cv:
                        self._refined += written > 0
                        self._bytes += written
            except _Closed:
                return
            except Exception:  # refinement is an optimisation: log and go on with the next context
                log.exception("idle refinement of a %d-chunk context failed", len(context))
            spent = time.perf_counter() - t0
            with self._cv:
                self._busy_s += spent
            rest = spent * (1 - self.config.idle_share) / self.config.idle_share
            with self._cv:
                self._cv.wait_for(lambda: self._closed, timeout=rest) if rest > 0 else None


class _Closed(Exception):
    """The refiner closed while a context was half done (its partial work is dropped)."""
