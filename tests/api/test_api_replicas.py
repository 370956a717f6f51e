"""Two replicas, one cache: two real `chunkcache serve` processes, each with its own local store,
sharing one real redis-server. What one replica computed is a cache hit on the other; a corrupt
shared entry is recomputed; a Redis killed mid-test turns into misses, never into failed answers."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from api_support import CORPUS
from process_support import wait_ready
from redis_support import RedisServer, free_port

from chunkcache.storage import read_header

pytestmark = pytest.mark.slow
PREFIX = "replicas"


@contextmanager
def replicas(stores, redis_url: str, timeout_s: float = 300.0) -> Iterator[list[httpx.Client]]:
    """`chunkcache serve` per store dir, each in its own process on a free port, started as an
    operator would: no --model, so each converts the default model into its own store (both
    conversions run at once). Yields one client per replica, once all are ready."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    procs, logs, clients = [], [], []
    try:
        for store in stores:
            port = free_port()
            command = [sys.executable, "-m", "chunkcache.cli", "serve", "--port", str(port), "--store", str(store),
                       "--threads", "1", "--log-level", "warning",
                       "--redis-url", redis_url, "--redis-prefix", PREFIX, "--redis-ttl", "3600"]
            logs.append(open(store.parent / f"{store.name}.log", "wb"))
            procs.append(subprocess.Popen(command, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120))
        for store, proc, client in zip(stores, procs, clients):
            wait_ready(client, proc, timeout_s, lambda store=store: (store.parent / f"{store.name}.log").read_text())
        yield clients
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for client in clients:
            client.close()
        for log in logs:
            log.close()


def answer(client: httpx.Client, passages: list[dict]) -> dict:
    r = client.post("/v1/answer", json={"question": "What is described here?", "passages": passages,
                                        "mode": "reuse", "max_new_tokens": 2})
    assert r.status_code == 200, r.text
    return r.json()


def tier(client: httpx.Client, name: str) -> dict:
    return next(t for t in client.get("/v1/stats").json()["store"]["tiers"] if t["name"] == name)


def test_two_replicas_share_one_redis_cache(tmp_path):
    """Each replica has its own store and its own converted copy of the default model (at another
    path): the keys depend on what the model is, not where it lies, so they share Redis hits."""
    passages = [{"title": d["title"], "text": d["text"]} for d in CORPUS]
    with RedisServer("--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru") as server, \
            replicas([tmp_path / "a", tmp_path / "b"], server.url) as (a, b):
        assert (tmp_path / "a" / "models").is_dir() and (tmp_path / "b" / "models").is_dir()
        # A document warmed through replica A (ingest + the warm job) is a hit on replica B.
        for client in (a, b):  # both replicas index the same documents (the corpus is local)
            assert client.post("/v1/documents", json=CORPUS[:3]).status_code in (200, 201)
        job = a.post("/v1/warm").json()
        while job["status"] == "running":
            time.sleep(0.2)
            job = a.get(f"/v1/jobs/{job['id']}").json()
        assert job["status"] == "succeeded" and job["result"]["computed"] >= 3, job
        r = b.post("/v1/query", json={"question": "Who keeps the Greyhaven lighthouse?", "top_k": 3, "mode": "reuse",
                                      "max_new_tokens": 2})
        assert r.status_code == 200, r.text
        assert [s["cache_hit"] for s in r.json()["sources"]] == [True] * 3
        assert tier(b, "redis")["hits"] == 3 and tier(b, "memory")["hits"] == 0

        # Passages answered on A are hits on B, promoted into B's own tiers.
        first = answer(a, passages[3:5])
        assert [s["cache_hit"] for s in first["sources"]] == [False, False]
        second = answer(b, passages[3:5])
        assert [s["cache_hit"] for s in second["sources"]] == [True, True]
        assert tier(b, "redis")["hits"] == 5
        answer(b, passages[3:5])
        assert tier(b, "redis")["hits"] == 5 and tier(b, "memory")["hits"] == 2  # served locally now
        assert tier(b, "redis")["errors"] == 0

        # A corrupt shared entry is detected, dropped and recomputed by the replica that reads it.
        client = server.client()
        before = set(client.keys(f"{PREFIX}:*"))
        answer(a, passages[5:6])
        (name,) = set(client.keys(f"{PREFIX}:*")) - before
        blob = bytearray(client.get(name))
        read_header(blob)  # the store's own format (header + crc32), not pickle
        blob[-1] ^= 0xFF
        client.set(name, bytes(blob))
        corrupt = b.get("/v1/stats").json()["store"]["corrupt"]
        third = answer(b, passages[5:6])
        assert [s["cache_hit"] for s in third["sources"]] == [False]  # recomputed, not served corrupt
        assert b.get("/v1/stats").json()["store"]["corrupt"] == corrupt + 1
        read_header(client.get(name))  # B wrote the recomputed entry through to Redis

        # Redis killed mid-test: answers still work, as misses, and the errors are counted.
        server.kill()
        t0 = time.perf_counter()
        fourth = answer(b, [{"title": "New", "text": "A passage neither replica has seen, about Comet Lira's return."}])
        assert [s["cache_hit"] for s in fourth["sources"]] == [False]
        again = answer(a, passages[3:5])  # A still serves what it holds locally
        assert [s["cache_hit"] for s in again["sources"]] == [True, True]
        assert time.perf_counter() - t0 < 60
        assert tier(b, "redis")["errors"] >= 1
