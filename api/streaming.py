"""Streaming model work: tokens from a worker thread to server-sent events on the loop.

`ModelStream.open()` queues the work and waits for its first event, so a full queue (503), a
bad request (422) or a timeout before the first token (504) still gets a proper status code.
After that the response is committed: later failures become an `error` event in the stream.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from chunkcache.api.errors import ApiError, from_exception, log_failure
from chunkcache.api.work_queue import Cancellation, ModelQueue
from chunkcache.types import Answer

DONE = "data: [DONE]\n\n"
log = logging.getLogger(__name__)


def sse(payload: Any) -> str:
    """One server-sent event carrying `payload` as compact JSON."""
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Failed:
    error: ApiError


Event = Token | Answer | Failed


class ModelStream:
    """Runs `fn(should_stop, on_token) -> Answer` on the model queue and yields its events."""

    def __init__(self, queue: ModelQueue, fn: Callable[[Callable[[], bool], Callable[[str], None]], Answer], timeout_s: float,
                 request_id: str | None = None):
        self.request_id = request_id
        self._queue = queue
        self._fn = fn
        self._timeout_s = timeout_s
        self._events: asyncio.Queue = asyncio.Queue()
        self._first: Event | None = None
        self._cancellation: Cancellation | None = None
        self._deadline = 0.0

    async def open(self) -> None:
        """Queue the work and wait for its first event; raises ApiError if it fails before that."""
        loop = asyncio.get_running_loop()
        events = self._events
        fn = self._fn

        def work(cancellation: Cancellation) -> Answer:
            def on_token(piece: str) -> None:
                loop.call_soon_threadsafe(events.put_nowait, Token(piece))

            # Abandoned (client gone, timeout): the answer ends at its next decode step, nothing raised.
            return fn(lambda: cancellation.cancelled, on_token)

        self._deadline = time.monotonic() + self._timeout_s
        future, self._cancellation = self._queue.submit(work)
        # Tokens and the result both travel through call_soon_threadsafe, so they stay in order.
        future.add_done_callback(lambda f: events.put_nowait(f))
        first = await self._next()
        if isinstance(first, Failed):
            raise first.error
        self._first = first

    async def events(self) -> AsyncIterator[Event]:
        """The first event, every later token, then the Answer (or a Failed)."""
        assert self._first is not None, "open() first"
        try:
            event = self._first
            while True:
                yield event
                if not isinstance(event, Token):
                    return
                event = await self._next()
        finally:
            # Client gone or stream finished: a still-running generation stops at its next token.
            self._cancellation.cancel()

    async def _next(self) -> Event:
        remaining = self._deadline - time.monotonic()
        try:
            item = await asyncio.wait_for(self._events.get(), max(remaining, 0.001))
        except asyncio.TimeoutError:
            self._cancellation.cancel()
            return Failed(ApiError(504, "timeout", f"the request took longer than the server's limit of {self._timeout_s:g} s"))
        if isinstance(item, Token):
            return item
        if item.cancelled():
            return Failed(ApiError(503, "cancelled", "the request was cancelled"))
        if item.exception() is not None:
            error = from_exception(item.exception())
            if error.status >= 500:
                log_failure(self.request_id, "streamed answer", item.exception())
            return Failed(error)
        return item.result()
