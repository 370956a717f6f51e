"""A real redis-server for tests: its own process on a free 127.0.0.1 port, no persistence.

`scripts/setup.sh --tests` (run by scripts/test.sh) installs the Debian package `redis-server`; there is no
skip when it is missing.
"""

import shutil
import socket
import subprocess
import time

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """`with RedisServer() as server: server.url` ... ; kill() stops it abruptly mid-test."""

    def __init__(self, *extra_args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `bash scripts/setup.sh --tests` (scripts/test.sh does), or apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                      "--protected-mode", "no", *extra_args]
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> "RedisServer":
        self._proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        client = self.client()
        while True:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.poll() is not None else ""
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start within {timeout_s} s: {err}")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
