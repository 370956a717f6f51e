"""A circuit breaker for a remote tier: after a failure, skip the remote for a while.

A dead or unreachable server would otherwise cost every request a socket timeout. After a
connection failure or timeout the breaker opens for `backoff_s`, doubling with each failure in
a row up to `max_backoff_s`; while it is open, calls are skipped (a remote miss). When the
back-off ends, one caller probes: success closes the breaker, failure opens it for longer.
Plain bookkeeping over an injectable clock, so it is tested without a network.
"""

import threading
import time
from collections.abc import Callable

from chunkcache.errors import ConfigError


class CircuitBreaker:
    def __init__(self, backoff_s: float, max_backoff_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < backoff_s <= max_backoff_s:
            raise ConfigError(f"need 0 < backoff_s <= max_backoff_s, got {backoff_s!r} and {max_backoff_s!r}")
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0  # in a row
        self._open_until = 0.0

    def allow(self) -> bool:
        """True if a call may go to the remote now. After a back-off, the first caller gets
        True (the probe) and the breaker re-arms, so other callers keep skipping meanwhile."""
        with self._lock:
            if not self._failures:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            self._open_until = now + self._delay()
            return True

    def succeeded(self) -> bool:
        """Record a success; -> True if it ends a run of failures (the remote is back)."""
        with self._lock:
            recovered = self._failures > 0
            self._failures = 0
            self._open_until = 0.0
            return recovered

    def failed(self) -> float:
        """Record a failure; -> seconds the remote is now skipped for."""
        with self._lock:
            self._failures += 1
            delay = self._delay()
            self._open_until = self._clock() + delay
            return delay

    @property
    def is_open(self) -> bool:
        with self._lock:
            return bool(self._failures) and self._clock() < self._open_until

    def _delay(self) -> float:
        return min(self.max_backoff_s, self.backoff_s * 2 ** min(self._failures - 1, 30))
