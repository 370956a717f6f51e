"""Issue 12 regressions, each against a real uvicorn with the real default model: no 5xx on odd
input, the cache never blocks an answer, write statuses tell the truth, 500s leak nothing."""

import errno
import logging
import os
import threading
import time

import httpx
import pytest
import torch
from api_support import CORPUS, serving

from chunkcache.api import ServiceConfig
from chunkcache.errors import StorageError
from chunkcache.sampling import Sampler, SamplingParams
from chunkcache.storage import KVStore, MemoryTier, StoreConfig

pytestmark = pytest.mark.slow

LIMITS = dict(workers=1, queue_size=4, max_top_k=5, max_new_tokens_limit=64, max_body_bytes=1024 * 1024)
QUESTION = "Who keeps the Greyhaven lighthouse?"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(cache):
    with serving(cache, ServiceConfig(**LIMITS)) as c:
        assert c.post("/v1/documents", json=CORPUS).status_code == 201
        yield c


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert set(body) == {"type", "message", "request_id"} and body["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# -- 1. tiny sampling values ---------------------------------------------------------------------
@pytest.mark.parametrize("temperature, top_p", [(1e-300, 1.0), (1.0, 1e-46), (5e-324, 1e-300)])
def test_sampler_survives_underflowing_values(temperature, top_p):
    logits = torch.randn(500, generator=torch.Generator().manual_seed(0))
    token = Sampler(SamplingParams(temperature=temperature, top_p=top_p, seed=1))(logits)
    assert token == int(logits.argmax())  # both limits mean "the best token"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("route", ["/v1/query", "/v1/answer", "/v1/chat/completions"])
def test_tiny_temperature_and_top_p_answer(client, route, stream):
    body = {"temperature": 1e-300, "top_p": 1e-46, "stream": stream}
    if route == "/v1/chat/completions":
        body |= {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 3, "chunkcache": {"top_k": 1}}
    else:
        body |= {"question": QUESTION, "max_new_tokens": 3}
        body |= {"top_k": 1} if route == "/v1/query" else {"passages": ["Mira Colt keeps the lighthouse."]}
    response = client.post(route, json=body)
    assert response.status_code == 200, response.text
    if stream:
        assert '"error"' not in response.text and response.text.rstrip().endswith("data: [DONE]")


# -- 2. lone surrogates ----------------------------------------------------------------------------
@pytest.mark.parametrize("route, body", [
    ("/v1/documents", '{"id": "s1", "title": "t\\udc00", "text": "ok"}'),
    ("/v1/documents", '{"id": "s2", "text": "ok", "metadata": {"k\\udc00": 1}}'),
    ("/v1/documents", '{"id": "s3", "text": "ok", "metadata": {"k": ["\\ud800"]}}'),
    ("/v1/answer", '{"question": "q", "passages": ["p\\udc00"]}'),
    ("/v1/answer", '{"question": "q", "passages": [{"title": "\\udc00", "text": "p"}]}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "hi \\udc00"}]}'),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}'),
])
def test_lone_surrogates_are_422(client, route, body):
    error = error_of(client.post(route, content=body.encode(), headers=JSON), 422)
    assert "lone surrogate" in error["message"]


# -- 3. metadata depth and size -----------------------------------------------------------------
def test_deep_or_huge_metadata_is_refused_and_listing_stays_readable(client):
    deep: dict = {}
    node = deep
    for _ in range(256):
        node["a"] = {}
        node = node["a"]
    error = error_of(client.post("/v1/documents", json={"id": "deep", "text": "ok", "metadata": deep}), 422)
    assert "nested deeper than 8 levels" in error["message"]
    huge = {"blob": "x" * 20_000}
    assert "the limit is 16384" in error_of(client.post("/v1/documents", json={"id": "huge", "text": "ok", "metadata": huge}), 422)["message"]
    eight = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}  # 8 levels counting metadata itself
    assert client.post("/v1/documents", json={"id": "eight", "text": "A note.", "metadata": eight}).status_code == 201
    assert client.get("/v1/documents/eight").json()["metadata"] == eight
    assert client.get("/v1/documents", params={"limit": 1000}).status_code == 200
    assert client.get("/v1/documents/deep").status_code == 404


# -- 4. disk full: the answer still comes back ---------------------------------------------------
class NoSpaceTier(MemoryTier):
    """A disk tier on a full filesystem: every write raises the real OSError(ENOSPC)."""

    def __init__(self):
        super().__init__(1 << 20, name="full-disk")

    def put_many(self, items):
        list(items)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def full_disk_store(cache):
    original = cache.store
    cache.chunks.store = KVStore(StoreConfig(path=None, codec=original.config.codec, zstd_level=original.config.zstd_level),
                                 tiers=[MemoryTier(64 << 20), NoSpaceTier()])
    try:
        yield cache.store
    finally:
        cache.store.close()
        cache.chunks.store = original


@pytest.mark.parametrize("stream", [False, True])
def test_disk_full_answers_still_come_back(client, full_disk_store, caplog, stream):
    passages = [f"The full-disk note {stream} says the ferry leaves at {7 + stream} o'clock.", "An unrelated second note."]
    body = {"question": "When does the ferry leave?", "passages": passages, "mode": "blend", "max_new_tokens": 3, "stream": stream}
    with caplog.at_level(logging.WARNING, logger="chunkcache.storage.store"):
        response = client.post("/v1/answer", json=body)
    assert response.status_code == 200, response.text
    final = response.json() if not stream else [e for e in response.text.split("\n\n") if '"sources"' in e][0]
    if stream:
        import json
        final = json.loads(final[len("data: "):])
    assert final["answer"] and [s["stored"] for s in final["sources"]] == [False, False]
    assert [s["cache_hit"] for s in final["sources"]] == [False, False]
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
    metrics = client.get("/metrics").text
    assert "chunkcache_cache_no_space_failures_total 1.0" in metrics
    assert "chunkcache_passages_not_stored_total" in metrics
    assert client.get("/v1/stats").json()["store"]["write_failures"] == 1


def test_stored_flag_is_true_when_the_store_works(client):
    body = {"question": "q", "passages": ["A note the working store keeps."], "mode": "reuse", "max_new_tokens": 2}
    assert [s["stored"] for s in client.post("/v1/answer", json=body).json()["sources"]] == [True]
    body["mode"] = "full"
    assert [s["stored"] for s in client.post("/v1/answer", json=body).json()["sources"]] == [None]


# -- 5. statuses of writes that happened ----------------------------------------------------------
@pytest.fixture
def unwritable_index(cache):
    """The FAISS file cannot be replaced (a directory stands at its path): index writes fail."""
    path = os.path.join(cache.config.store_dir, "corpus", "vectors.faiss")
    cache.corpus.flush()
    os.replace(path, path + ".saved")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)
        os.replace(path + ".saved", path)
        cache.corpus._dirty = True  # write the index again, now that it can be
        cache.corpus.flush()


def test_index_write_failure_after_the_document_is_stored_is_not_an_error(client, unwritable_index, caplog):
    with caplog.at_level(logging.WARNING):
        added = client.post("/v1/documents", json={"id": "faiss-fail", "text": "The harbour crane lifts 40 tonnes."})
    assert added.status_code == 201, added.text
    assert client.get("/v1/documents/faiss-fail").status_code == 200
    assert any("vector index not saved" in r.getMessage() for r in caplog.records)
    found = client.post("/v1/query", json={"question": "How much does the harbour crane lift?", "top_k": 1, "max_new_tokens": 2})
    assert found.json()["sources"][0]["doc_id"] == "faiss-fail"  # the in-memory index has it
    deleted = client.delete("/v1/documents/faiss-fail")
    assert deleted.status_code == 200, deleted.text
    assert client.get("/v1/documents/faiss-fail").status_code == 404


def test_a_slow_write_is_finished_not_504(cache):
    text = " ".join(f"Ledger line {i}: the granary at Osk held {i * 7} sacks of barley." for i in range(6000))  # ~400 kB
    assert 300_000 < len(text) < 1_000_000
    with serving(cache, ServiceConfig(**LIMITS, request_timeout_s=0.2)) as tight:
        response = tight.post("/v1/documents", json={"id": "slow-write", "title": "Ledger", "text": text})
        assert response.status_code == 201, response.text
        assert tight.get("/v1/documents/slow-write").json()["text"] == text
        assert tight.delete("/v1/documents/slow-write").status_code == 200


# -- 6. 500s carry a code, a message and a request id; details go to the log ------------------------
@pytest.mark.parametrize("failure, kind", [
    (RuntimeError("boom at /srv/secret/store/corpus/vectors.faiss"), "internal_error"),
    (StorageError("LMDB read failed at '/srv/secret/store/kv': MDB_CORRUPTED"), "storage_error"),
])
def test_500_bodies_do_not_leak_internals(cache, client, monkeypatch, caplog, failure, kind):
    def broken(*args, **kwargs):
        raise failure

    monkeypatch.setattr(cache, "list_documents", broken)
    with caplog.at_level(logging.ERROR, logger="chunkcache.api.errors"):
        response = client.get("/v1/documents", headers={"X-Request-ID": "trace-42"})
    error = error_of(response, 500)
    assert error["type"] == kind and error["request_id"] == "trace-42"
    for secret in ("/srv/secret", type(failure).__name__, "MDB_CORRUPTED", "vectors.faiss", "boom"):
        assert secret not in response.text
    assert any("trace-42" in r.getMessage() and "/srv/secret" in r.getMessage() for r in caplog.records)


# -- 7. the OpenAPI document says what the server does ----------------------------------------------
def test_openapi_documents_statuses_and_this_servers_caps(cache, client):
    doc = client.get("/openapi.json").json()
    schemas, paths = doc["components"]["schemas"], doc["paths"]
    assert schemas["QueryRequest"]["properties"]["max_new_tokens"]["maximum"] == 64
    assert schemas["QueryRequest"]["properties"]["top_k"]["maximum"] == 5
    assert schemas["AnswerRequest"]["properties"]["passages"]["maxItems"] == 5
    assert schemas["ChunkcacheOptions"]["properties"]["top_k"]["maximum"] == 5
    chat = schemas["ChatRequest"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": 64}.items() <= chat["max_tokens"]["anyOf"][0].items()
    assert "contains" in chat["messages"]
    post_docs = paths["/v1/documents"]["post"]["responses"]
    assert {"201", "400", "413", "415", "422", "500", "503", "504", "507"} <= set(post_docs)
    assert post_docs["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert {"200", "400", "413", "415", "422", "500", "503", "504"} <= set(paths["/v1/query"]["post"]["responses"])
    assert "404" in paths["/v1/documents/{doc_id}"]["get"]["responses"]
    assert "503" in paths["/readyz"]["get"]["responses"]
    with serving(cache, ServiceConfig(**LIMITS, api_key="k" * 16)) as secured:
        locked = secured.get("/openapi.json", headers={"Authorization": "Bearer " + "k" * 16}).json()
        assert "401" in locked["paths"]["/v1/query"]["post"]["responses"]
        assert "401" not in locked["paths"]["/healthz"]["get"]["responses"]
        assert error_of(secured.get("/v1/stats"), 401)["type"] == "unauthorized"


@pytest.mark.parametrize("body, status, kind, needle", [
    (b"{not json", 400, "invalid_json", "invalid JSON"),
    (b'{"question": "q", "temperature": NaN}', 400, "invalid_json", "NaN is not JSON"),
    (b'{"question": "q", "top_p": 1e999}', 400, "invalid_json", "out of range"),
    (b'{"question": "\xff"}', 400, "invalid_json", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json", "nested too deeply"),
    (b'{"question": "q", "top_k": "5"}', 422, "invalid_request", "top_k: Input should be a valid integer"),
    (b'{"question": "q", "max_new_tokens": 1000}', 422, "invalid_request", "max_new_tokens: must be <= 64"),
])
def test_bodies_are_strict_json(client, body, status, kind, needle):
    error = error_of(client.post("/v1/query", content=body, headers=JSON), status)
    assert error["type"] == kind and needle in error["message"], error


def test_wrong_content_type_is_415_and_405_lists_every_method(client):
    error = error_of(client.post("/v1/query", content=b'{"question": "q"}', headers={"content-type": "text/plain"}), 415)
    assert "application/json" in error["message"]
    response = client.put("/v1/documents/bridge")
    error_of(response, 405)
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "DELETE"}
    assert {"GET", "POST"} <= {m.strip() for m in client.put("/v1/documents").headers["allow"].split(",")}


@pytest.mark.parametrize("messages", [
    [{"role": "system", "content": "x"}],
    [{"role": "user", "content": "   "}],
    [{"role": "user", "content": [{"type": "text", "text": " "}]}],
])
def test_chat_without_a_question_is_422(client, messages):
    error = error_of(client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2}), 422)
    assert "non-blank content" in error["message"]


# -- 8. writes are not starved by queries --------------------------------------------------------------
def test_document_writes_have_their_own_lane(cache, monkeypatch):
    release = threading.Event()
    original = cache.query

    def held_query(*args, **kwargs):  # a query that holds its model worker until released
        release.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(cache, "query", held_query)
    with serving(cache, ServiceConfig(**{**LIMITS, "queue_size": 1})) as c:
        body = {"question": QUESTION, "top_k": 1, "max_new_tokens": 2}
        results = []
        def ask():
            with httpx.Client(base_url=str(c.base_url), timeout=120) as own:
                results.append(own.post("/v1/query", json=body).status_code)

        def wait_for(ready) -> None:
            deadline = time.monotonic() + 30
            while not ready(q := c.get("/v1/stats").json()["queue"]):
                assert time.monotonic() < deadline, q
                time.sleep(0.02)

        threads = [threading.Thread(target=ask) for _ in range(2)]
        try:
            # One at a time: sent together, the second can find the first still in the queue (not
            # yet taken by the worker) and get the 503 this test means to provoke later.
            threads[0].start()
            wait_for(lambda q: q["busy_workers"] == 1)
            threads[1].start()
            wait_for(lambda q: q["depth"] == 1)
            assert error_of(c.post("/v1/query", json=body), 503)["type"] == "overloaded"  # the answer lane is full...
            added = c.post("/v1/documents", json={"id": "lane", "text": "The mill wheel turns at dawn."})
            assert added.status_code == 201, added.text  # ...yet a document add goes through
        finally:
            release.set()
            for t in threads:
                t.join()
        assert results == [200, 200]
