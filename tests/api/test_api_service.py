"""The REST service on a real uvicorn with the real default model: every route, errors, auth, SSE."""

import time

import httpx
import pytest
from api_support import CORPUS, parse_sse, serving

from chunkcache.api import ServiceConfig

pytestmark = pytest.mark.slow

API_KEY = "test-key-0123456789"
LIMITS = dict(workers=1, queue_size=4, max_top_k=5, max_new_tokens_limit=64, max_body_bytes=64 * 1024)
QUESTION = "Who keeps the Greyhaven lighthouse?"


@pytest.fixture(scope="module")
def ingest_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("ingest")
    root = base / "root"
    (root / "field-notes").mkdir(parents=True)
    (root / "field-notes" / "heron.md").write_text("# Grey heron\nThe grey heron at the reserve nests in the reeds.\n")
    (root / "field-notes" / "otter.txt").write_text("An otter family lives under the Saltmarsh footbridge.\n")
    (base / "private.txt").write_text("not for the service")
    (root / "leak.txt").symlink_to(base / "private.txt")
    return root


@pytest.fixture(scope="module")
def client(cache, ingest_root):
    with serving(cache, ServiceConfig(**LIMITS, ingest_root=str(ingest_root))) as c:
        response = c.post("/v1/documents", json=CORPUS)
        assert response.status_code == 201, response.text
        yield c


@pytest.fixture(scope="module")
def secured(cache):
    """A second app with an API key over the same ChunkCache; its client sends no key by default."""
    with serving(cache, ServiceConfig(**LIMITS, api_key=API_KEY)) as c:
        yield c


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"type", "message", "request_id"} and body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body["message"]


# -- probes, documents ---------------------------------------------------------------------------
def test_probes_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"] and ready["workers_alive"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/query", "/v1/answer", "/v1/chat/completions", "/v1/documents", "/v1/warm", "/v1/ingest", "/metrics"):
        assert path in paths
    assert client.get("/docs").status_code == 200


def test_documents_list_get_delete(client):
    listed = client.get("/v1/documents", params={"limit": 100}).json()
    assert {d["id"] for d in listed["documents"]} >= {d["id"] for d in CORPUS}
    page = client.get("/v1/documents", params={"offset": 1, "limit": 2}).json()
    assert len(page["documents"]) == 2 and page["offset"] == 1
    bridge = client.get("/v1/documents/bridge").json()
    assert bridge["text"] == CORPUS[4]["text"] and bridge["metadata"] == {"kind": "structure"}
    assert client.get("/v1/documents/notes/comet").json()["title"] == "Comet Lira"  # ids may hold '/'

    added = client.post("/v1/documents", json={"id": "temp", "text": "A short-lived note about chalk.", "title": "Chalk"})
    assert added.status_code == 201 and added.json() == {"ids": ["temp"], "count": 1}
    deleted = client.delete("/v1/documents/temp").json()
    assert deleted["id"] == "temp" and deleted["deleted"] is True and deleted["freed_chunks"] == 1
    assert "'temp'" in error_of(client.get("/v1/documents/temp"), 404)
    message = error_of(client.delete("/v1/documents/never-was"), 404)
    assert "never-was" in message and "corpus" not in message  # the server's paths are not shown


@pytest.mark.parametrize("body, needle", [
    ([], "List should have at least 1 item"),
    ({"id": "x"}, "text: Field required"),
    ({"id": "", "text": "t"}, "id: String should have at least 1 character"),
    ({"id": "x", "text": "t", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"id": "x", "text": "   "}, "text: String should match pattern"),
])
def test_document_validation(client, body, needle):
    assert needle in error_of(client.post("/v1/documents", json=body), 422)


def test_list_documents_validation(client):
    assert "limit" in error_of(client.get("/v1/documents", params={"limit": 0}), 422)


# -- answering -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "blend"])
def test_query_answers_with_sources(client, mode):
    body = client.post("/v1/query", json={"question": QUESTION, "top_k": 2, "mode": mode, "max_new_tokens": 4}).json()
    assert body["mode"] == mode and body["answer"] and 1 <= body["generated_tokens"] <= 4
    assert len(body["sources"]) == 2 and body["sources"][0]["doc_id"] == "lighthouse"
    assert {"doc_id", "ordinal", "score", "title", "cache_hit", "tokens"} <= set(body["sources"][0])
    assert 0 < body["ttft_s"] <= body["total_s"] and body["timings"]["retrieval"] > 0
    assert body["context_tokens"] == sum(s["tokens"] for s in body["sources"])
    if mode == "full":  # full mode never looks at the cache: neither hit nor miss
        assert body["recomputed_tokens"] == body["context_tokens"] and body["recompute_ratio"] is None
        assert all(s["cache"] == "not used" and s["cache_hit"] is None and s["stored"] is None for s in body["sources"])
        assert body["cache_hits"] == 0
    else:
        assert body["cache_hits"] == sum(s["cache_hit"] for s in body["sources"])
        states = [s["cache"] for s in body["sources"]]
        assert all(state in ("exact", "hit", "miss") for state in states)
        assert [state != "miss" for state in states] == [s["cache_hit"] for s in body["sources"]]
        if all(state == "exact" for state in states):  # a full answer stored this context in context: nothing to recompute
            assert body["recomputed_tokens"] == 0
        else:
            assert 0 < body["recomputed_tokens"] < body["context_tokens"]


def test_a_repeated_context_is_exact_and_a_new_one_is_blended(client):
    question = "Who rings the harbour bell at Greyhaven?"

    def exact_count(metric: str = 'chunkcache_passages_total{result="exact"}') -> float:
        line = [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith(metric + " ")]
        return float(line[0].split()[-1]) if line else 0.0

    before, prompts_before = exact_count(), exact_count("chunkcache_exact_prompts_total")
    full = client.post("/v1/query", json={"question": question, "top_k": 2, "mode": "full", "max_new_tokens": 4}).json()
    again = client.post("/v1/query", json={"question": question, "top_k": 2, "mode": "blend", "max_new_tokens": 4}).json()
    assert [s["cache"] for s in again["sources"]] == ["exact", "exact"] and again["recomputed_tokens"] == 0
    assert again["answer"] == full["answer"]  # exact KV: the full prefill's greedy answer
    assert again["question_exact"] and not full["question_exact"]  # the same question: the whole prompt repeats
    assert exact_count() == before + 2  # /metrics counts exact passages apart from hits
    assert exact_count("chunkcache_exact_prompts_total") == prompts_before + 1
    passages = ["Brass bells ring lower when the air is cold.", "The harbour master keeps the tide tables."]
    new = client.post("/v1/answer", json={"question": question, "passages": passages, "mode": "blend",
                                          "max_new_tokens": 4}).json()
    assert [s["cache"] for s in new["sources"]] == ["miss", "miss"]
    assert 0 < new["recomputed_tokens"] < new["context_tokens"]


def test_answer_over_caller_passages(client):
    passages = ["Tin is soft and silvery.", {"title": "Copper", "text": "Copper turns green in damp air."}]
    body = client.post("/v1/answer", json={"question": "Which metal turns green?", "passages": passages,
                                           "mode": "reuse", "max_new_tokens": 4}).json()
    assert body["mode"] == "reuse" and body["answer"]
    assert [s["title"] for s in body["sources"]] == ["", "Copper"] and body["sources"][0]["doc_id"] is None


@pytest.mark.parametrize("patch, needle", [
    ({"top_k": 0}, "top_k: Input should be greater than or equal to 1 (got 0)"),
    ({"top_k": 6}, "top_k: must be <= 5 on this server, got 6"),
    ({"max_new_tokens": 0}, "max_new_tokens: Input should be greater than or equal to 1"),
    ({"max_new_tokens": 65}, "max_new_tokens: must be <= 64 on this server, got 65"),
    ({"recompute_ratio": 1.5}, "recompute_ratio: Input should be less than or equal to 1"),
    ({"temperature": -0.5}, "temperature: Input should be greater than or equal to 0"),
    ({"top_p": 0}, "top_p: Input should be greater than 0"),
    ({"mode": "turbo"}, "mode: Input should be 'full', 'reuse', 'blend', 'ape' or 'prefix' (got 'turbo')"),
    ({"order": "random"}, "order: Input should be 'score' or 'document'"),
    ({"question": ""}, "question: String should have at least 1 character"),
    ({"question": "   "}, "question: String should match pattern"),
    ({"top_k": "many"}, "top_k: Input should be a valid integer"),
    ({"topk": 3}, "topk: Extra inputs are not permitted"),
])
def test_query_validation(client, patch, needle):
    body = {"question": QUESTION, "max_new_tokens": 4, **patch}
    assert needle in error_of(client.post("/v1/query", json=body), 422)


def test_answer_validation_and_context_too_long(client):
    assert "passages" in error_of(client.post("/v1/answer", json={"question": "q", "passages": []}), 422)
    six = ["p"] * 6
    assert "at most 5 passages" in error_of(client.post("/v1/answer", json={"question": "q", "passages": six}), 422)
    huge = " ".join(["ox"] * 9000)  # ~9k tokens: more than the model's context, under the body limit
    message = error_of(client.post("/v1/answer", json={"question": "q", "passages": [huge], "max_new_tokens": 4}), 400)
    assert "model's context is" in message
    assert "invalid JSON" in error_of(client.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"}), 400)


def test_body_too_large_and_unknown_route(client):
    big = b'{"question": "' + b"x" * (70 * 1024) + b'"}'
    assert "65536 bytes" in error_of(client.post("/v1/query", content=big, headers={"content-type": "application/json"}), 413)
    chunked = (part for part in [big[:40_000], big[40_000:]])  # no Content-Length: counted while read
    assert "65536 bytes" in error_of(client.post("/v1/query", content=chunked, headers={"content-type": "application/json"}), 413)
    assert "no route GET /v1/nothing" in error_of(client.get("/v1/nothing"), 404)
    assert error_of(client.put("/v1/query"), 405)


# -- streaming -------------------------------------------------------------------------------------
def test_query_stream_sends_tokens_answer_done(client):
    body = {"question": QUESTION, "top_k": 2, "max_new_tokens": 5, "stream": True}
    with client.stream("POST", "/v1/query", json=body) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.iter_lines())
    assert events[-1] == "[DONE]"
    final = events[-2]
    tokens = [e["token"] for e in events[:-2]]
    assert tokens and all(set(e) == {"token"} for e in events[:-2])
    assert "".join(tokens).strip() == final["answer"] and final["sources"][0]["doc_id"] == "lighthouse"


def test_stream_errors_before_the_first_token_keep_their_status(client):
    body = {"question": QUESTION, "top_k": 9, "stream": True}
    assert "top_k" in error_of(client.post("/v1/query", json=body), 422)
    huge = " ".join(["ox"] * 9000)
    body = {"question": "q", "passages": [huge], "stream": True}
    assert "model's context" in error_of(client.post("/v1/answer", json=body), 400)


# -- OpenAI chat -----------------------------------------------------------------------------------
def test_chat_completion(client):
    body = {"model": "anything", "messages": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Where is the Pell bakery?"}],
            "max_tokens": 4, "chunkcache": {"top_k": 1, "mode": "blend", "recompute_ratio": 0.5}}
    completion = client.post("/v1/chat/completions", json=body).json()
    assert completion["object"] == "chat.completion" and completion["id"].startswith("chatcmpl-")
    assert completion["model"] == client.get("/v1/models").json()["data"][0]["id"]
    choice = completion["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = completion["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"] <= 4
    assert [s["doc_id"] for s in completion["sources"]] == ["bakery"]


def test_chat_completion_stream(client):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "When does Comet Lira return?"}]}],
            "max_tokens": 4, "stream": True, "chunkcache": {"top_k": 1}}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = parse_sse(response.iter_lines())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] in ("stop", "length") and last["choices"][0]["delta"] == {}
    assert last["usage"]["completion_tokens"] <= 4 and last["sources"][0]["doc_id"] == "notes/comet"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip()


@pytest.mark.parametrize("patch, needle", [
    ({"messages": [{"role": "system", "content": "hi"}]}, "no message with role 'user'"),
    ({"messages": []}, "messages: List should have at least 1 item"),
    ({"n": 2}, "n: Input should be less than or equal to 1"),
    ({"max_tokens": 500}, "max_new_tokens: must be <= 64"),
    ({"chunkcache": {"top_k": 50}}, "top_k: must be <= 5"),
    ({"chunkcache": {"mode": "fast"}}, "chunkcache.mode: Input should be"),
    ({"chunkcache": {"topk": 2}}, "chunkcache.topk: Extra inputs are not permitted"),
])
def test_chat_validation(client, patch, needle):
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 4, **patch}
    assert needle in error_of(client.post("/v1/chat/completions", json=body), 422)


# -- warm-up, stats, metrics ---------------------------------------------------------------------
def test_warm_job_runs_to_completion(client):
    fresh = [{"id": f"warm-{i}", "text": f"Warm-up note {i}: the kiln at the pottery reaches {1200 + i} degrees."} for i in range(3)]
    assert client.post("/v1/documents", json=fresh).status_code == 201
    started = client.post("/v1/warm")
    assert started.status_code == 202
    job_id = started.json()["id"]
    deadline = time.monotonic() + 120
    while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    assert job["done"] == job["total"] >= 3 and job["result"]["computed"] == job["total"]
    assert "no job with id" in error_of(client.get("/v1/jobs/unknown"), 404)
    # ?verify=true checks every stored entry's checksum: all are sound, so nothing is recomputed
    verified = client.post("/v1/warm?verify=true")
    assert verified.status_code == 202
    while (job := client.get(f"/v1/jobs/{verified.json()['id']}").json())["status"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "succeeded" and job["result"]["computed"] == 0, job
    assert client.post("/v1/warm?verify=maybe").status_code in (400, 422)


@pytest.fixture(scope="module")
def answered(client):
    """At least one blend answer and one 404, so stats and metrics have something to show."""
    assert client.post("/v1/query", json={"question": QUESTION, "top_k": 1, "max_new_tokens": 2}).status_code == 200
    assert client.get("/v1/documents/bridge").status_code == 200
    assert client.get("/v1/documents/absent").status_code == 404
    return client


def test_stats(answered):
    client = answered
    stats = client.get("/v1/stats").json()
    assert {t["name"] for t in stats["store"]["tiers"]} == {"memory", "lmdb"}
    assert stats["store"]["hits"] + stats["store"]["misses"] > 0
    assert stats["queue"] == {"depth": 0, "capacity": 4, "busy_workers": 0, "workers": 1, "running_jobs": 0}


def test_metrics_exposition(answered):
    client = answered
    text = client.get("/metrics").text
    for name in ('chunkcache_http_requests_total{method="POST",route="/v1/query",status="200"}',
                 'chunkcache_http_requests_total{method="GET",route="/v1/documents/{doc_id:path}",status="404"}',
                 "chunkcache_http_request_duration_seconds_bucket", 'chunkcache_ttft_seconds_bucket{le="0.5",mode="blend"}',
                 'chunkcache_cache_hit_ratio{tier="memory"}', 'chunkcache_cache_hit_ratio{tier="lmdb"}',
                 "chunkcache_recomputed_token_ratio_bucket", "chunkcache_recomputed_tokens_total",
                 "chunkcache_queue_depth 0.0", "chunkcache_generated_tokens_total", "chunkcache_queue_wait_seconds_bucket", "chunkcache_passages_total",
                 "chunkcache_working_cache_bytes 0.0", "chunkcache_waiting_for_memory 0.0"):
        assert name in text, name
    steps = next(line for line in text.splitlines() if line.startswith("chunkcache_scheduler_steps "))
    assert float(steps.split()[1]) > 0  # the answers above ran through the scheduler
    assert "/v1/documents/bridge" not in text  # labels are route templates, not raw ids


# -- server-side ingest ------------------------------------------------------------------------------
def test_ingest_inside_root_only(client):
    added = client.post("/v1/ingest", json={"paths": ["field-notes"]})
    assert added.status_code == 201 and added.json()["ids"] == ["field-notes/heron.md", "field-notes/otter.txt"]
    assert client.get("/v1/documents/field-notes/heron.md").json()["title"] == "Grey heron"
    for path, needle in (("../private.txt", "'..'"), ("/etc/hostname", "absolute"), ("leak.txt", "leaves the ingest root")):
        assert needle in error_of(client.post("/v1/ingest", json={"paths": [path]}), 422)
    assert "no file or folder" in error_of(client.post("/v1/ingest", json={"paths": ["missing"]}), 404)


# -- auth ------------------------------------------------------------------------------------------
def test_api_key_guards_every_route_but_probes(secured):
    assert secured.get("/healthz").status_code == 200 and secured.get("/readyz").status_code == 200
    for method, path in (("GET", "/v1/documents"), ("GET", "/metrics"), ("GET", "/docs"), ("POST", "/v1/query"),
                         ("GET", "/v1/stats"), ("POST", "/v1/warm"), ("GET", "/nowhere")):
        response = secured.request(method, path)
        assert "missing Authorization header" in error_of(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = secured.get("/v1/documents", headers={"Authorization": "Bearer not-the-key"})
    assert "wrong API key" in error_of(wrong, 401)
    assert "wrong API key" in error_of(secured.get("/v1/documents", headers={"Authorization": API_KEY}), 401)
    good = {"Authorization": f"Bearer {API_KEY}"}
    assert secured.get("/v1/documents", headers=good).status_code == 200
    assert secured.get("/metrics", headers=good).status_code == 200
    # no ingest_root on this app: the route does not exist
    assert error_of(secured.post("/v1/ingest", json={"paths": ["x"]}, headers=good), 404)


def test_timeout_is_504_and_the_service_recovers(cache, client):
    with serving(cache, ServiceConfig(**LIMITS, request_timeout_s=0.2)) as tight:
        message = error_of(tight.post("/v1/query", json={"question": QUESTION, "max_new_tokens": 48}), 504)
        assert "0.2 s" in message
    # The abandoned generation stops at its next token; the main app still answers.
    assert client.post("/v1/query", json={"question": QUESTION, "top_k": 1, "max_new_tokens": 2}).status_code == 200


def test_stream_client_leaving_stops_the_generation(client):
    body = {"question": QUESTION, "top_k": 1, "max_new_tokens": 64, "stream": True}
    with client.stream("POST", "/v1/query", json=body) as response:
        first = next(response.iter_lines())
        assert first.startswith('data: {"token"')
    # 64 tokens take many seconds on CPU; the worker stops at its next token instead.
    deadline = time.monotonic() + 5
    while client.get("/v1/stats").json()["queue"]["busy_workers"]:
        assert time.monotonic() < deadline, "the abandoned stream kept the worker busy"
        time.sleep(0.05)
