"""Background jobs (the corpus warm-up): one at a time, each on its own thread, polled by id.

A job does not occupy a model worker: warm-up takes the facade's lock one batch at a time, so
queries interleave with it instead of waiting for the whole corpus.
"""

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from chunkcache.api.errors import ApiError
from chunkcache.api.work_queue import Cancellation

log = logging.getLogger(__name__)

KEEP_FINISHED = 100

# fn(report_progress, cancellation) -> a small JSON-able result
JobFn = Callable[[Callable[[int, int], None], Cancellation], dict]


@dataclass(frozen=True)
class JobStatus:
    id: str
    kind: str
    status: str  # "running" | "succeeded" | "failed" | "cancelled"
    done: int = 0
    total: int | None = None
    result: dict | None = None
    error: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None


class JobRunner:
    def __init__(self):
        self._jobs: OrderedDict[str, JobStatus] = OrderedDict()
        self._lock = threading.Lock()
        self._running: tuple[str, threading.Thread, Cancellation] | None = None

    def start(self, kind: str, fn: JobFn) -> JobStatus:
        """Start fn on a thread; 409 if a job is still running."""
        with self._lock:
            if self._running is not None and self._running[1].is_alive():
                raise ApiError(409, "conflict", f"job {self._running[0]} is still running; poll GET /v1/jobs/{self._running[0]}")
            job = JobStatus(id=uuid.uuid4().hex, kind=kind, status="running", created_at=time.time())
            self._jobs[job.id] = job
            while len(self._jobs) > KEEP_FINISHED:
                self._jobs.popitem(last=False)
            cancellation = Cancellation()
            thread = threading.Thread(target=self._run, args=(job.id, fn, cancellation), name=f"chunkcache-job-{job.id[:8]}", daemon=True)
            self._running = (job.id, thread, cancellation)
            thread.start()
        return job

    def get(self, job_id: str) -> JobStatus:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job with id {job_id!r} (the last {KEEP_FINISHED} jobs are kept)")
        return job

    @property
    def running(self) -> int:
        with self._lock:
            return int(self._running is not None and self._running[1].is_alive())

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the running job to stop at its next progress report and wait for it."""
        with self._lock:
            running = self._running
        if running is not None:
            running[2].cancel()
            running[1].join(timeout_s)

    def _update(self, job_id: str, **changes) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id] = replace(self._jobs[job_id], **changes)

    def _run(self, job_id: str, fn: JobFn, cancellation: Cancellation) -> None:
        def progress(done: int, total: int) -> None:
            self._update(job_id, done=done, total=total)
            cancellation.check()

        try:
            result = fn(progress, cancellation)
        except BaseException as exc:
            status = "cancelled" if cancellation.cancelled else "failed"
            if status == "failed":
                log.exception("job %s failed", job_id)
            self._update(job_id, status=status, error=f"{type(exc).__name__}: {exc}", finished_at=time.time())
            return
        with self._lock:  # nothing left to do means no progress was reported: done == total
            job = self._jobs.get(job_id)
            if job is not None:
                total = job.total if job.total is not None else job.done
                self._jobs[job_id] = replace(job, status="succeeded", total=total, result=result, finished_at=time.time())
