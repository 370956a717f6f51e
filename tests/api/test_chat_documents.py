"""Client-supplied documents on /v1/chat/completions, through the official `openai` client against a
real uvicorn with the real default model: every document a cache hit on the second call and a
lower TTFT, marked documents, earlier turns, streaming, and 422s that name the field."""

from pathlib import Path

import httpx
import pytest
from api_support import serving

from chunkcache.api import ServiceConfig
from chunkcache.errors import ConfigError
from chunkcache.marked import DocumentMarkers, mark
from chunkcache.prompt import Passage

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow

DEMO = Path(__file__).parents[2] / "chunkcache" / "demo" / "docs"
MARKERS = DocumentMarkers("<document>", "</document>")
CONFIG = ServiceConfig(queue_size=4, max_top_k=6, max_new_tokens_limit=8, max_document_chars=2000,
                       document_open=MARKERS.open, document_close=MARKERS.close)
QUESTION = "What does chunkcache store for every passage?"


def demo_documents() -> list[dict]:
    """Each demo document: its '# ' heading as the title, the rest as the text."""
    docs = []
    for path in sorted(DEMO.glob("*.md")):
        heading, _, body = path.read_text().partition("\n")
        docs.append({"title": heading.lstrip("# ").strip(), "text": body.strip()})
    return docs


@pytest.fixture(scope="module")
def server(cache):
    with serving(cache, CONFIG) as client:
        yield client


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="not-checked", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def first_two(oai):
    """The same request twice: the first computes every document's KV, the second reuses it."""
    ask = dict(model="chunkcache", messages=[{"role": "user", "content": QUESTION}], max_tokens=4,
               extra_body={"documents": demo_documents()})
    return oai.chat.completions.create(**ask), oai.chat.completions.create(**ask)


def report(completion) -> dict:
    return completion.model_extra["chunkcache"]


def test_every_document_hits_on_the_second_call_and_ttft_drops(first_two):
    first, second = first_two
    n = len(demo_documents())
    assert [d["cache_hit"] for d in report(first)["documents"]] == [False] * n
    assert [d["stored"] for d in report(first)["documents"]] == [True] * n
    assert [d["cache_hit"] for d in report(second)["documents"]] == [True] * n
    assert report(second)["cache_hits"] == n and report(second)["cache_misses"] == 0
    assert [d["title"] for d in report(second)["documents"]] == [d["title"] for d in demo_documents()]
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == sum(d["tokens"] for d in report(second)["documents"])
    assert second.usage.prompt_tokens == first.usage.prompt_tokens and second.choices[0].message.content
    ttft = report(first)["ttft_s"], report(second)["ttft_s"]
    print(f"\nopenai client, {n} demo documents: TTFT first {ttft[0] * 1000:.0f} ms (all misses), "
          f"second {ttft[1] * 1000:.0f} ms ({report(second)['cache_hits']}/{n} hits)")
    assert ttft[1] < ttft[0]


def test_stream_reports_hits_in_the_last_chunk(oai, first_two):
    stream = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "Who is chunkcache for?"}],
                                         max_tokens=4, stream=True, extra_body={"documents": demo_documents()[:2]})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    last = chunks[-1]
    assert [d["cache_hit"] for d in last.model_extra["chunkcache"]["documents"]] == [True, True]
    assert last.usage.prompt_tokens_details.cached_tokens > 0


def test_marked_documents_and_earlier_turns(oai, first_two):
    """Documents marked in a system message are the same passages (same KV) as the field's; earlier
    turns lengthen the suffix only."""
    docs = demo_documents()[:2]
    context = "Use these documents:\n" + mark([Passage(d["text"], d["title"]) for d in docs], MARKERS)
    single = oai.chat.completions.create(model="m", max_tokens=2, messages=[
        {"role": "system", "content": context}, {"role": "user", "content": "Where is the KV kept?"}])
    assert [d["cache_hit"] for d in report(single)["documents"]] == [True, True]
    chat = oai.chat.completions.create(model="m", max_tokens=2, messages=[
        {"role": "system", "content": context},
        {"role": "user", "content": "What does chunkcache do?"},
        {"role": "assistant", "content": "It caches the KV of passages."},
        {"role": "user", "content": "Where is the KV kept?"}])
    assert [d["cache_hit"] for d in report(chat)["documents"]] == [True, True]
    assert chat.usage.prompt_tokens > single.usage.prompt_tokens + 10
    assert report(chat)["documents"][0]["tokens"] == report(single)["documents"][0]["tokens"]


@pytest.mark.parametrize("patch, needle", [
    ({"documents": [{"title": "t", "text": ""}]}, "documents.0.text: Value should have at least 1 item"),
    ({"documents": [{"text": "   "}]}, "documents.0.text: String should match pattern"),
    ({"documents": [{"text": "x" * 2001}]}, "documents[0].text: at most 2000 characters per document on this server, got 2001"),
    ({"documents": ["just a string"]}, "documents.0: Input should be a valid dictionary"),
    ({"documents": [{"text": 5}]}, "documents.0.text: Input should be a valid string"),
    ({"documents": [{"text": "a", "url": "x"}]}, "documents.0.url: Extra inputs are not permitted"),
    ({"documents": {"text": "a"}}, "documents: Input should be a valid list"),
    ({"documents": []}, "documents: List should have at least 1 item"),
    ({"documents": [{"text": f"doc {i}"} for i in range(7)]}, "documents: send at most 6 documents on this server, got 7"),
    ({"messages": [{"role": "user", "content": "<document>never closed"}]},
     "messages[0].content: the document opened at character 0 is not closed with '</document>'"),
    ({"messages": [{"role": "system", "content": "<document>" + "y" * 2001 + "</document>"}, {"role": "user", "content": "q"}]},
     "messages[0].content, marked document 1: at most 2000 characters per document on this server, got 2001"),
    ({"messages": [{"role": "user", "content": "<document>only a document</document>"}]}, "messages: no message with role 'user'"),
])
def test_bad_documents_get_422_naming_the_field(server, patch, needle):
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 2, **patch}
    response = server.post("/v1/chat/completions", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "invalid_request"
    assert needle in response.json()["error"]["message"]


def test_openai_client_sees_the_422(oai):
    with pytest.raises(openai.UnprocessableEntityError, match=r"documents\[0\]\.text: at most 2000"):
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}], max_tokens=2,
                                    extra_body={"documents": [{"text": "z" * 2001}]})


def test_schema_carries_the_document_caps(server):
    schemas = httpx.get(f"{server.base_url}/openapi.json").json()["components"]["schemas"]
    assert schemas["ChatDocument"]["properties"]["text"]["maxLength"] == 2000
    documents = schemas["ChatRequest"]["properties"]["documents"]
    assert any(branch.get("maxItems") == 6 for branch in documents["anyOf"])


def test_marker_settings_are_validated():
    assert ServiceConfig().document_markers is None  # off unless configured: nothing is guessed
    assert ServiceConfig.from_env({"CHUNKCACHE_DOCUMENT_OPEN": "[[doc]]", "CHUNKCACHE_DOCUMENT_CLOSE": "[[/doc]]"}).document_markers \
        == DocumentMarkers("[[doc]]", "[[/doc]]")
    for bad, needle in (({"document_open": "<d>"}, "set together"), ({"document_open": "<d>", "document_close": "<d>"}, "contain each other"),
                        ({"max_document_chars": 0}, "max_document_chars")):
        with pytest.raises(ConfigError, match=needle):
            ServiceConfig(**bad)


def test_full_mode_does_not_use_the_cache(oai, first_two):
    full = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "What is chunkcache?"}], max_tokens=2,
                                       extra_body={"documents": demo_documents()[:1], "chunkcache": {"mode": "full"}})
    assert report(full)["cache_hits"] == report(full)["cache_misses"] == 0
    assert report(full)["documents"][0]["cache_hit"] is None and full.usage.prompt_tokens_details.cached_tokens == 0
