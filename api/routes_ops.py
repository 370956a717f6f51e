"""Operations: probes, stats, Prometheus metrics, the warm-up job and job status."""

from dataclasses import asdict

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from chunkcache.api.errors import ApiError
from chunkcache.api.jobs import JobStatus
from chunkcache.api.metrics import CONTENT_TYPE
from chunkcache.api.openapi import errors
from chunkcache.api.schemas import Health, JobOut, QueueStatsOut, Readiness, StatsResponse, StoreStatsOut, TierStatsOut
from chunkcache.api.services import Services


def job_out(job: JobStatus) -> JobOut:
    return JobOut(**asdict(job))


def store_stats_out(stats) -> StoreStatsOut:
    data = asdict(stats)
    data["tiers"] = [TierStatsOut(**asdict(t), hit_rate=t.hit_rate) for t in stats.tiers]
    return StoreStatsOut(**data)


def ops_router(s: Services) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Health, summary="Liveness (no auth)")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get("/readyz", response_model=Readiness, summary="Readiness: model loaded and workers running (no auth)", responses=errors(503))
    async def readyz() -> Readiness:
        if not (s.queue.alive and s.writes.alive):
            raise ApiError(503, "not_ready", "the model workers are not running (starting up or shutting down)")
        return Readiness(status="ready", model=s.model_name, workers_alive=True)

    @router.get("/v1/stats", response_model=StatsResponse, summary="KV store and queue statistics")
    async def stats() -> StatsResponse:
        store = await run_in_threadpool(s.cache.stats)
        queue = QueueStatsOut(depth=s.queue.depth, capacity=s.queue.capacity, busy_workers=s.queue.busy,
                              workers=s.queue.workers, running_jobs=s.jobs.running)
        return StatsResponse(store=store_stats_out(store), queue=queue)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(await run_in_threadpool(s.metrics.render), media_type=CONTENT_TYPE)

    @router.post("/v1/warm", status_code=202, response_model=JobOut, summary="Start precomputing the KV of every indexed chunk",
                 responses=errors(409))
    async def warm(verify: bool = Query(False, description="also check every stored entry's checksum and recompute the corrupt ones")) -> JobOut:
        def fn(progress, _cancellation) -> dict:
            return {"computed": s.cache.warm_corpus(on_progress=progress, verify=verify)}

        return job_out(s.jobs.start("warm", fn))

    @router.get("/v1/jobs/{job_id}", response_model=JobOut, summary="A background job's status and progress", responses=errors(404))
    async def job(job_id: str) -> JobOut:
        return job_out(s.jobs.get(job_id))

    return router
