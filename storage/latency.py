"""Running latency summary: mean over every sample, percentiles over the most recent ones."""

import threading
from collections import deque

from chunkcache.stats import percentile
from chunkcache.types import LatencySummary


class LatencyRecorder:
    def __init__(self, window: int = 4096) -> None:
        self._recent: deque[float] = deque(maxlen=window)
        self._count = 0
        self._total = 0.0
        self._lock = threading.Lock()

    def record(self, ms: float) -> None:
        with self._lock:
            self._recent.append(ms)
            self._count += 1
            self._total += ms

    def summary(self) -> LatencySummary:
        with self._lock:
            recent = sorted(self._recent)
            count, total = self._count, self._total
        if not count:
            return LatencySummary()
        return LatencySummary(
            count=count, total_ms=total, mean_ms=total / count,
            p50_ms=percentile(recent, 0.50), p95_ms=percentile(recent, 0.95),
        )
