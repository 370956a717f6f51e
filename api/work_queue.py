"""A bounded queue of blocking model work in front of a few worker threads.

The event loop never runs model code: a route submits a function, the queue hands it to a
worker thread, and the result comes back on the loop's future. When `capacity` items already
wait, `submit` refuses at once (the route answers 503) instead of letting work pile up. A
request that times out or whose client left is cancelled: a waiting item is skipped, a running
one stops at its next `Cancellation.check()` (jobs) or decode step (answers poll `cancelled`).

Writes (`run(..., finish_started=True)`) are never abandoned half-way: at the timeout a write
that has not started is withdrawn (504, nothing done, safe to retry); one that has started is
waited for, so its status tells the truth about what happened.
"""

import asyncio
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chunkcache.api.errors import ApiError

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a worker when its request was abandoned (timeout or client gone)."""


@dataclass
class Cancellation:
    event: threading.Event = field(default_factory=threading.Event)
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        self.event.set()

    def start(self) -> bool:
        """The worker claims the item; False if it was cancelled first (then it must not run)."""
        with self._lock:
            if self.event.is_set():
                return False
            self._started = True
            return True

    def withdraw(self) -> bool:
        """Cancel the item if no worker has started it; True if it will never run."""
        with self._lock:
            if self._started:
                return False
            self.event.set()
            return True

    @property
    def cancelled(self) -> bool:
        return self.event.is_set()

    def check(self) -> None:
        if self.event.is_set():
            raise Cancelled("request abandoned")


@dataclass
class _Item:
    fn: Callable[[Cancellation], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    cancellation: Cancellation
    enqueued: float


_STOP = object()


class ModelQueue:
    """`workers` threads draining a queue of at most `capacity` waiting items."""

    def __init__(self, workers: int, capacity: int, on_wait: Callable[[float], None] | None = None):
        self.workers = workers
        self.capacity = capacity
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._lock = threading.Lock()
        self._service_s = 1.0  # moving average of one item's run time, for Retry-After
        self._on_wait = on_wait

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"chunkcache-model-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel what waits, let running items finish (up to timeout_s), end the threads."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                item.cancellation.cancel()
                _settle(item, None, ApiError(503, "shutting_down", "the server is shutting down"))
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def depth(self) -> int:
        """Items waiting for a worker (not counting those running)."""
        return self._queue.qsize()

    @property
    def busy(self) -> int:
        return self._busy

    def retry_after_s(self) -> int:
        """A guess at when a slot frees up: the waiting work divided among the workers."""
        return max(1, math.ceil(self._service_s * (self.depth + 1) / self.workers))

    # -- submitting ---------------------------------------------------------------------------
    async def run(self, fn: Callable[[Cancellation], Any], timeout_s: float, finish_started: bool = False) -> Any:
        """Run fn(cancellation) on a worker; 503 when full, 504 after timeout_s.

        finish_started: for writes. At the timeout, work not yet started is withdrawn (504 saying
        nothing was done); work already running is waited for and its outcome returned.
        """
        future, cancellation = self.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            if not finish_started:
                cancellation.cancel()
                raise ApiError(504, "timeout", f"the request took longer than the server's limit of {timeout_s:g} s; "
                                               "retry later or ask for fewer max_new_tokens") from None
            if cancellation.withdraw():
                raise ApiError(504, "timeout", f"the request waited longer than the server's limit of {timeout_s:g} s "
                                               "for a worker and was not carried out; it is safe to retry") from None
            return await future  # running: a write finishes, and says how it went
        except asyncio.CancelledError:
            if not finish_started:
                cancellation.cancel()
            raise

    def submit(self, fn: Callable[[Cancellation], Any]) -> tuple[asyncio.Future, Cancellation]:
        """Queue fn; raises ApiError(503) with Retry-After when `capacity` items already wait."""
        if not self.alive:
            raise ApiError(503, "not_ready", "the model workers are not running")
        loop = asyncio.get_running_loop()
        item = _Item(fn, loop, loop.create_future(), Cancellation(), time.perf_counter())
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            retry = self.retry_after_s()
            raise ApiError(
                503, "overloaded",
                f"the server is busy: {self.capacity} requests already wait for {self.workers} model worker(s); retry in {retry} s",
                headers={"Retry-After": str(retry)},
            ) from None
        return item.future, item.cancellation

    # -- the worker -----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if item.future.done() or not item.cancellation.start():
                _settle(item, None, None)  # withdrawn or abandoned while waiting: never runs
                continue
            if self._on_wait is not None:
                self._on_wait(time.perf_counter() - item.enqueued)
            with self._lock:
                self._busy += 1
            t0 = time.perf_counter()
            try:
                result, error = item.fn(item.cancellation), None
            except BaseException as exc:  # delivered to the awaiting route, never kills the worker
                result, error = None, exc
            finally:
                with self._lock:
                    self._busy -= 1
                self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - t0)
            _settle(item, result, error)


def _settle(item: _Item, result: Any, error: BaseException | None) -> None:
    def deliver():
        if item.future.done():
            return
        if item.cancellation.cancelled:  # nobody waits for the outcome; don't leave it unretrieved
            item.future.cancel()
        elif error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)

    try:
        item.loop.call_soon_threadsafe(deliver)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
