"""`create_app(cache, config)`: the FastAPI app over one ChunkCache. No module-level app.

The app owns its model queue, job runner and metrics registry; it does not own the cache (the
caller closes it), so several apps may share one ChunkCache.
"""

import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.routing import Route

import chunkcache
from chunkcache.api.errors import install_error_handlers
from chunkcache.api.jobs import JobRunner
from chunkcache.api.metrics import ServiceMetrics
from chunkcache.api.middleware import ApiKeyAuth, BodyLimit, RequestId, RequestMetrics
from chunkcache.api.openapi import describe
from chunkcache.api.routes_answer import answer_router
from chunkcache.api.routes_chat import chat_router
from chunkcache.api.routes_documents import documents_router
from chunkcache.api.routes_ops import ops_router
from chunkcache.api.services import Services
from chunkcache.api.settings import ServiceConfig
from chunkcache.api.work_queue import ModelQueue
from chunkcache.errors import ConfigError
from chunkcache.facade import ChunkCache

SHUTDOWN_WAIT_S = 10.0


def create_app(cache: ChunkCache, config: ServiceConfig) -> FastAPI:
    if config.max_new_tokens_limit > cache.config.max_new_tokens_limit:
        raise ConfigError(f"max_new_tokens_limit {config.max_new_tokens_limit} is above the cache's own limit "
                          f"{cache.config.max_new_tokens_limit}; lower it or raise CacheConfig.max_new_tokens_limit")
    metrics = ServiceMetrics(cache.stats, lambda: queue.depth, lambda: queue.busy, cache.scheduler_stats)  # read at scrape time
    queue = ModelQueue(config.workers, config.queue_size, on_wait=metrics.queue_wait.observe)
    # Document writes get their own worker and queue: behind 24 queued answers, an add would
    # wait (or be refused) for minutes. Both still take the cache's lock one call at a time.
    writes = ModelQueue(1, config.queue_size, on_wait=metrics.queue_wait.observe)
    services = Services(cache=cache, config=config, queue=queue, writes=writes, jobs=JobRunner(), metrics=metrics,
                        model_name=Path(cache.model_dir).name, created=int(time.time()))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        queue.start()
        writes.start()
        try:
            yield
        finally:
            services.jobs.stop(SHUTDOWN_WAIT_S)
            queue.stop(SHUTDOWN_WAIT_S)
            writes.stop(SHUTDOWN_WAIT_S)

    app = FastAPI(
        title="chunkcache",
        version=chunkcache.__version__,
        description="RAG context caching: answers reuse each passage's precomputed KV cache.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.openapi = lambda: describe(app, config)
    routers = (ops_router(services), documents_router(services), answer_router(services), chat_router(services))
    for router in routers:
        app.include_router(router)
    # Route templates for metric labels and 405s: ours (paths carry their prefix) and FastAPI's /docs etc.
    templates = [r for r in app.routes if isinstance(r, Route)] + [r for router in routers for r in router.routes]
    install_error_handlers(app, templates)

    # Added innermost first: metrics see every request (401s and 413s too); auth runs before
    # the body is read, so an unauthenticated client cannot make us buffer max_body_bytes.
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    if config.api_key is not None:
        app.add_middleware(ApiKeyAuth, api_key=config.api_key)
    app.add_middleware(RequestMetrics, routes=templates, observe=metrics.observe_request)
    app.add_middleware(RequestId)  # outermost: every response, 401s and 413s too, carries the id
    return app
