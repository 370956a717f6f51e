"""Peak resident memory of one call: the process's RSS polled while the call runs.

The CPU build of torch keeps no allocator statistics, so the bench reads /proc/self/statm every
millisecond from a thread. Freed heap memory is handed back to the OS first (glibc
`malloc_trim`), so a query cannot hide behind memory an earlier one left mapped. On CUDA the
allocator's own peak is used. Elsewhere (no /proc) the result is None.
"""

import ctypes
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

_STATM = Path("/proc/self/statm")


def _rss() -> int | None:
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_rss_above_start(fn: Callable[[], object], interval_s: float = 0.001) -> tuple[object, int | None]:
    """Run fn(); return (its result, peak RSS during the call minus RSS just before, in bytes)."""
    _trim()
    start = _rss()
    if start is None:
        return fn(), None
    peak = [start]
    done = threading.Event()

    def poll():
        while not done.is_set():
            now = _rss()
            if now is not None and now > peak[0]:
                peak[0] = now
            time.sleep(interval_s)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        result = fn()
    finally:
        done.set()
        watcher.join()
    end = _rss()
    return result, max(peak[0], end or 0) - start


def peak_cuda_bytes(fn: Callable[[], object], device) -> tuple[object, int]:
    """Run fn(); return (its result, the CUDA allocator's peak above its level before the call)."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    return result, torch.cuda.max_memory_allocated(device) - before
