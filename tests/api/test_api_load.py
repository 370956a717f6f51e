"""Bounded load on the real server: 16 concurrent clients, a small queue, nothing but 200 or 503."""

import asyncio
from collections import Counter

import httpx
import pytest
from api_support import CORPUS, serving

from chunkcache.api import ServiceConfig

pytestmark = pytest.mark.slow

CLIENTS = 16
REQUESTS = 48
QUESTIONS = ["Who keeps the Greyhaven lighthouse?", "What does Pell's Bakery bake?", "How fast does the Vesk glacier retreat?",
             "Where does the Fernwood orchestra rehearse?", "How long is the Saltmarsh footbridge?", "When does Comet Lira return?"]


async def hammer(base_url: str) -> list[httpx.Response]:
    """REQUESTS queries from CLIENTS concurrent clients (each client sends its share in turn)."""
    async def one_client(index: int, client: httpx.AsyncClient) -> list[httpx.Response]:
        out = []
        for j in range(index, REQUESTS, CLIENTS):
            mode = ("full", "blend", "reuse")[j % 3]
            body = {"question": QUESTIONS[j % len(QUESTIONS)], "top_k": 2, "mode": mode, "max_new_tokens": 2}
            out.append(await client.post("/v1/query", json=body))
        return out

    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        per_client = await asyncio.gather(*(one_client(i, client) for i in range(CLIENTS)))
    return [r for responses in per_client for r in responses]


def test_load_gets_answers_or_503_and_documents_survive(cache):
    with serving(cache, ServiceConfig(queue_size=2, max_new_tokens_limit=16)) as client:
        assert client.post("/v1/documents", json=CORPUS).status_code == 201
        responses = asyncio.run(hammer(str(client.base_url)))

        statuses = Counter(r.status_code for r in responses)
        assert len(responses) == REQUESTS
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] >= 3 and statuses[503] >= 1, statuses  # 16 clients vs 1 worker + 2 slots
        for r in responses:
            if r.status_code == 200:
                assert r.json()["answer"] and r.json()["sources"]
            else:
                assert r.json()["error"]["type"] == "overloaded" and int(r.headers["Retry-After"]) >= 1

        listed = client.get("/v1/documents").json()["documents"]
        assert sorted(d["id"] for d in listed) == sorted(d["id"] for d in CORPUS)
        for doc in CORPUS:
            assert client.get(f"/v1/documents/{doc['id']}").json()["text"] == doc["text"]
        stats = client.get("/v1/stats").json()
        assert stats["queue"]["depth"] == 0 and stats["queue"]["busy_workers"] == 0
        metrics = client.get("/metrics").text
        assert 'chunkcache_http_requests_total{method="POST",route="/v1/query",status="503"}' in metrics
        assert client.get("/readyz").status_code == 200
        ok = client.post("/v1/query", json={"question": QUESTIONS[0], "top_k": 1, "max_new_tokens": 2})
        assert ok.status_code == 200  # still serving after the burst
