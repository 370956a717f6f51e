"""Continuous batching: answers decoded together equal the answers decoded alone (greedy)."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from chunkcache import ChunkCache
from chunkcache.config import BlendConfig
from chunkcache.errors import CacheClosedError

DEMO = Path(__file__).resolve().parents[2] / "chunkcache" / "demo" / "demo_qa.jsonl"


def _examples():
    return [json.loads(line) for line in DEMO.read_text().splitlines()]


def _jobs(examples):
    """Mixed modes and lengths, so streams join and leave the batch at different steps."""
    modes = [("blend", 0.15), ("full", None), ("reuse", None), ("blend", 0.3), ("ape", None), ("blend", 0.0)]
    repair = BlendConfig(repair_ratio=0.2, repair_steps=2)  # off by default: one job repairs, its rows ride in the batch
    return [dict(question=ex["question"], passages=ex["passages"], mode=modes[i % len(modes)][0],
                 recompute_ratio=modes[i % len(modes)][1], max_new_tokens=6 + 3 * (i % 4),
                 **({"blend": repair} if i % len(modes) == 3 else {}))
            for i, ex in enumerate(examples)]


def _together(cache, jobs):
    barrier = threading.Barrier(len(jobs))

    def one(job):
        barrier.wait()
        return cache.answer(**job)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


@pytest.fixture(scope="module")
def default_cache(tmp_path_factory, default_model_dir):
    cc = ChunkCache(store_dir=str(tmp_path_factory.mktemp("sched")), model=str(default_model_dir))
    yield cc
    cc.close()


@pytest.mark.slow  # the real default model
def test_batched_answers_equal_answers_alone_on_the_default_model(default_cache):
    jobs = _jobs(_examples()[:6])
    alone = [default_cache.answer(**job) for job in jobs]
    steps, rows = default_cache.scheduler.steps, default_cache.scheduler.batched_rows
    assert rows == steps  # one at a time: every step had one request
    together = _together(default_cache, jobs)
    for a, b, job in zip(alone, together, jobs):
        assert b.token_ids == a.token_ids, job
        assert b.finish_reason == a.finish_reason
        assert b.repaired_tokens == a.repaired_tokens
    assert any(a.repaired_tokens for a in alone)  # repair rows were part of the batched steps
    steps, rows = default_cache.scheduler.steps - steps, default_cache.scheduler.batched_rows - rows
    assert rows / steps > 2  # the decode steps really ran batched


def test_tiny_model_many_streams(tmp_path, tiny_model_dir):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), max_batch=4) as cc:
        jobs = _jobs(_examples() * 2)[:10]
        alone = [cc.answer(**job) for job in jobs]
        together = _together(cc, jobs)
        assert [a.token_ids for a in alone] == [b.token_ids for b in together]
        assert cc.scheduler.running == 0


@pytest.mark.slow  # the real default model
def test_a_cancelled_or_failing_stream_leaves_the_others_alone(default_cache):
    ex = _examples()[0]
    base = dict(question=ex["question"], passages=ex["passages"], mode="reuse", max_new_tokens=12)
    reference = default_cache.answer(**base)
    seen = {"n": 0}

    def stop_after_two():
        return seen["n"] >= 2

    def count(_piece):
        seen["n"] += 1

    def explode(_piece):
        raise RuntimeError("the client went away")

    jobs = [base, {**base, "on_token": count, "should_stop": stop_after_two}, {**base, "on_token": explode}, base]
    barrier = threading.Barrier(len(jobs))

    def one(job):
        barrier.wait()
        try:
            return default_cache.answer(**job)
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(len(jobs)) as pool:
        first, cancelled, failed, last = pool.map(one, jobs)
    assert first.token_ids == reference.token_ids == last.token_ids
    assert cancelled.finish_reason == "cancelled" and 2 <= cancelled.generated_tokens < reference.generated_tokens
    assert isinstance(failed, RuntimeError) and "went away" in str(failed)


def test_closed_cache_refuses_new_answers(tmp_path, tiny_model_dir):
    cc = ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir))
    ex = _examples()[0]
    cc.answer(ex["question"], ex["passages"], max_new_tokens=2)
    cc.close()
    with pytest.raises(CacheClosedError):
        cc.answer(ex["question"], ex["passages"], max_new_tokens=2)
