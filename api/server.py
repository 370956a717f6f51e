"""Running the service: `serve` (blocking, for the CLI) and `BackgroundServer` (tests, benchmarks)."""

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from chunkcache.api.app import create_app
from chunkcache.api.settings import ServiceConfig
from chunkcache.config import CacheConfig
from chunkcache.facade import ChunkCache


def serve(cache_config: CacheConfig, service_config: ServiceConfig, log_level: str = "info") -> None:
    """Load the cache, build the app, serve until interrupted, then close the cache."""
    cache = ChunkCache(config=cache_config)
    try:
        app = create_app(cache, service_config)
        config = uvicorn.Config(app, host=service_config.host, port=service_config.port, log_level=log_level,
                                timeout_graceful_shutdown=int(service_config.request_timeout_s))
        # uvicorn.Config has set up logging; say where we listen in uvicorn's own log format.
        out = logging.getLogger("uvicorn.error")
        auth = "on (Authorization: Bearer <key>)" if service_config.auth_enabled else "off"
        out.info("chunkcache API on http://%s:%d (OpenAPI at /docs); auth %s; ingest root %s; model %s",
                 service_config.host, service_config.port, auth, service_config.ingest_root or "disabled", cache.model_dir)
        if not service_config.auth_enabled and service_config.host not in ("127.0.0.1", "localhost", "::1"):
            out.warning("listening on %s without an API key: anyone who can reach it can use the service", service_config.host)
        uvicorn.Server(config).run()
    finally:
        cache.close()


class BackgroundServer:
    """uvicorn on a thread, on an already bound socket (port 0 = any free port).

    >>> with BackgroundServer(app) as server:
    ...     httpx.get(server.url + "/healthz")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"uvicorn-{self.port}", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url} within {timeout_s} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
