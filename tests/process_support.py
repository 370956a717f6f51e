"""Waiting for a service process started by a test (`chunkcache serve` in a subprocess)."""

import subprocess
import time
from collections.abc import Callable

import httpx


def wait_ready(client: httpx.Client, proc: subprocess.Popen, timeout_s: float, log: Callable[[], str]) -> None:
    """Polls /readyz until 200; fails with the tail of `log()` if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not become ready (exit status {proc.poll()}): {log()[-3000:]}")
        time.sleep(0.2)
