"""ModelQueue bookkeeping without a model: 503 when full, 504 and cancellation, errors delivered."""

import asyncio
import threading
import time

import pytest

from chunkcache.api.errors import ApiError
from chunkcache.api.work_queue import Cancelled, ModelQueue


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def queue():
    q = ModelQueue(workers=1, capacity=1)
    q.start()
    yield q
    q.stop(timeout_s=5)


def test_result_and_error_are_delivered(queue):
    async def main():
        assert await queue.run(lambda c: 41 + 1, timeout_s=5) == 42
        with pytest.raises(ZeroDivisionError):
            await queue.run(lambda c: 1 / 0, timeout_s=5)
        assert await queue.run(lambda c: "worker survived", timeout_s=5) == "worker survived"

    run(main())


def test_full_queue_answers_503_with_retry_after(queue):
    release = threading.Event()

    async def main():
        running = asyncio.ensure_future(queue.run(lambda c: release.wait(5), timeout_s=10))
        while queue.busy == 0:
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(queue.run(lambda c: "second", timeout_s=10))
        await asyncio.sleep(0.05)
        assert queue.depth == 1
        with pytest.raises(ApiError) as err:
            queue.submit(lambda c: "third")
        assert err.value.status == 503 and "1 requests already wait" in err.value.message
        assert int(err.value.headers["Retry-After"]) >= 1
        release.set()
        assert await running is True and await waiting == "second"

    run(main())


def test_timeout_is_504_and_cancels_the_running_work(queue):
    seen = {}

    def slow(cancellation):
        for _ in range(500):
            time.sleep(0.01)
            try:
                cancellation.check()
            except Cancelled:
                seen["cancelled"] = True
                raise
        return "finished"

    async def main():
        with pytest.raises(ApiError) as err:
            await queue.run(slow, timeout_s=0.1)
        assert err.value.status == 504 and "0.1 s" in err.value.message
        assert await queue.run(lambda c: "next", timeout_s=5) == "next"

    run(main())
    assert seen == {"cancelled": True}


def test_stopped_queue_refuses_work():
    q = ModelQueue(workers=1, capacity=2)

    async def main():
        with pytest.raises(ApiError) as err:
            q.submit(lambda c: None)
        assert err.value.status == 503

    run(main())


def test_a_started_write_is_finished_not_abandoned_at_the_timeout(queue):
    def write(cancellation):
        time.sleep(0.3)
        return "written"

    async def main():
        assert await queue.run(write, timeout_s=0.05, finish_started=True) == "written"

    run(main())


def test_a_write_still_waiting_at_the_timeout_is_withdrawn_and_never_runs(queue):
    release, ran = threading.Event(), []

    async def main():
        blocker = asyncio.ensure_future(queue.run(lambda c: release.wait(5), timeout_s=10))
        while queue.busy == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as err:
            await queue.run(lambda c: ran.append(1), timeout_s=0.1, finish_started=True)
        assert err.value.status == 504 and "was not carried out" in err.value.message
        release.set()
        await blocker
        assert await queue.run(lambda c: "after", timeout_s=5) == "after"

    run(main())
    assert ran == []
