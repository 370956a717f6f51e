"""JobRunner: one job at a time (409), progress, failures recorded, unknown ids 404."""

import threading
import time

import pytest

from chunkcache.api.errors import ApiError
from chunkcache.api.jobs import JobRunner


def wait_finished(jobs: JobRunner, job_id: str):
    deadline = time.monotonic() + 5
    while (job := jobs.get(job_id)).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return job


def test_one_job_at_a_time_with_progress():
    jobs = JobRunner()
    release = threading.Event()

    def work(progress, cancellation):
        progress(1, 3)
        release.wait(5)
        progress(3, 3)
        return {"computed": 3}

    job = jobs.start("warm", work)
    with pytest.raises(ApiError) as err:
        jobs.start("warm", work)
    assert err.value.status == 409 and job.id in err.value.message
    release.set()
    done = wait_finished(jobs, job.id)
    assert (done.status, done.done, done.total, done.result) == ("succeeded", 3, 3, {"computed": 3})
    assert jobs.start("warm", lambda p, c: {}).id != job.id  # a new job may start after


def test_failure_is_recorded_and_unknown_is_404():
    jobs = JobRunner()
    job = jobs.start("warm", lambda p, c: 1 / 0)
    failed = wait_finished(jobs, job.id)
    assert failed.status == "failed" and "ZeroDivisionError" in failed.error
    with pytest.raises(ApiError) as err:
        jobs.get("nope")
    assert err.value.status == 404


def test_stop_cancels_at_the_next_progress_report():
    jobs = JobRunner()

    def endless(progress, cancellation):
        for i in range(10_000):
            progress(i, 10_000)
            time.sleep(0.001)
        return {}

    job = jobs.start("warm", endless)
    jobs.stop(timeout_s=5)
    assert jobs.get(job.id).status == "cancelled"
