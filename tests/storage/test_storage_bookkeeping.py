"""Plain-Python bookkeeping: victim choice, latency summaries, the resize gate."""

import threading
import time

import pytest

from chunkcache.storage.eviction import AccessRecord, choose_victims
from chunkcache.storage.gate import SharedExclusiveLock
from chunkcache.storage.latency import LatencyRecorder

RECORDS = [
    (b"a", AccessRecord(last_access_ns=30, count=1, size=10)),
    (b"b", AccessRecord(last_access_ns=10, count=5, size=10)),
    (b"c", AccessRecord(last_access_ns=20, count=2, size=10)),
    (b"d", AccessRecord(last_access_ns=40, count=1, size=10)),
]


def test_record_pack_round_trip():
    rec = AccessRecord(last_access_ns=1_700_000_000_000_000_000, count=3, size=12345)
    assert AccessRecord.unpack(rec.pack()) == rec


def test_lru_and_lfu_order():
    assert choose_victims(RECORDS, 40, "lru") == [b"b", b"c", b"a", b"d"]
    assert choose_victims(RECORDS, 40, "lfu") == [b"a", b"d", b"c", b"b"]


def test_stops_once_enough_is_freed():
    assert choose_victims(RECORDS, 15, "lru") == [b"b", b"c"]
    assert choose_victims(RECORDS, 0, "lru") == []


def test_protected_keys_go_last_in_given_order():
    assert choose_victims(RECORDS, 30, "lru", protected=[b"b", b"c"]) == [b"a", b"d", b"b"]


def test_unknown_policy():
    with pytest.raises(ValueError, match="fifo"):
        choose_victims(RECORDS, 10, "fifo")


def test_latency_summary():
    rec = LatencyRecorder(window=100)
    assert rec.summary().count == 0
    for ms in range(1, 101):
        rec.record(float(ms))
    s = rec.summary()
    assert (s.count, s.mean_ms, s.p50_ms, s.p95_ms) == (100, 50.5, 50.0, 95.0)


def test_gate_exclusive_waits_for_shared():
    gate = SharedExclusiveLock()
    order = []
    entered = threading.Event()

    def reader():
        with gate.shared():
            entered.set()
            time.sleep(0.05)
            order.append("read done")

    t = threading.Thread(target=reader)
    t.start()
    entered.wait()
    with gate.exclusive():
        order.append("exclusive")
    t.join()
    assert order == ["read done", "exclusive"]
