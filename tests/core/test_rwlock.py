"""ReadWriteLock: readers overlap, writers are alone, a waiting writer is not starved."""

import threading
import time

import pytest

from chunkcache.rwlock import ReadWriteLock


def start(fn) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def wait_until(cond, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_readers_run_together():
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)

    def reader():
        with lock.read():
            inside.wait()  # all three readers are inside at once, or this times out

    threads = [start(reader) for _ in range(3)]
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads) and lock.readers == 0


def test_writer_excludes_readers_and_writers():
    lock = ReadWriteLock()
    inside, events = [], []

    def enter(side, name):
        with side():
            inside.append(name)
            events.append((name, len(inside)))  # how many were inside together
            time.sleep(0.01)
            inside.remove(name)

    with lock.write():
        threads = [start(lambda: enter(lock.read, "read")), start(lambda: enter(lock.write, "write"))]
        time.sleep(0.05)
        assert events == []  # nobody gets in while a writer holds it
    for t in threads:
        t.join(5)
    assert sorted(name for name, _ in events) == ["read", "write"]
    assert all(together == 1 for _, together in events)  # the writer was alone


def test_waiting_writer_blocks_new_readers():
    lock = ReadWriteLock()
    order = []
    release_first = threading.Event()

    def first_reader():
        with lock.read():
            order.append("r1")
            release_first.wait(5)

    def writer():
        with lock.write():
            order.append("w")

    def late_reader():
        with lock.read():
            order.append("r2")

    t1 = start(first_reader)
    wait_until(lambda: order == ["r1"])
    tw = start(writer)
    wait_until(lambda: lock._writers_waiting == 1)
    t2 = start(late_reader)
    time.sleep(0.05)
    assert order == ["r1"]  # the late reader queues behind the waiting writer
    release_first.set()
    for t in (t1, tw, t2):
        t.join(5)
    assert order == ["r1", "w", "r2"]


def test_lock_is_released_when_the_body_raises():
    lock = ReadWriteLock()
    for side in (lock.read, lock.write):
        with pytest.raises(ValueError):
            with side():
                raise ValueError("boom")
    with lock.write():
        pass
    assert lock.readers == 0


def test_counter_under_contention_stays_consistent():
    lock = ReadWriteLock()
    state = {"value": 0, "torn": 0}

    def writer():
        for _ in range(300):
            with lock.write():
                v = state["value"]
                state["value"] = -1  # a reader seeing -1 would be a torn read
                state["value"] = v + 1

    def reader():
        for _ in range(300):
            with lock.read():
                if state["value"] < 0:
                    state["torn"] += 1

    threads = [start(writer) for _ in range(3)] + [start(reader) for _ in range(3)]
    for t in threads:
        t.join(30)
    assert state == {"value": 900, "torn": 0}
