"""Stop sequences through the real service: /v1/answer, /v1/query and /v1/chat/completions, plain
and streamed. The stop text is never returned (not even streamed first), finish_reason is "stop"."""

import pytest
from api_support import CORPUS, parse_sse, serving

from chunkcache.api import ServiceConfig

pytestmark = pytest.mark.slow
QUESTION = "Who keeps the Greyhaven lighthouse and how many steps does she climb?"
PASSAGES = [{"title": d["title"], "text": d["text"]} for d in CORPUS[:3]]


@pytest.fixture(scope="module")
def client(cache):
    with serving(cache, ServiceConfig()) as c:
        yield c


@pytest.fixture(scope="module")
def unstopped(client) -> str:
    r = client.post("/v1/answer", json={"question": QUESTION, "passages": PASSAGES, "mode": "reuse", "max_new_tokens": 24})
    assert r.status_code == 200, r.text
    text = r.json()["answer"]
    assert len(text.split()) >= 6, text  # long enough to cut in the middle
    return text


def a_stop_in(text: str) -> tuple[str, str]:
    """A stop sequence from the middle of `text` and the text the answer must end with instead."""
    stop = " " + text.split()[len(text.split()) // 2]
    return stop, text[: text.find(stop)].strip()


def test_answer_ends_before_the_stop(client, unstopped):
    stop, expected = a_stop_in(unstopped)
    r = client.post("/v1/answer", json={"question": QUESTION, "passages": PASSAGES, "mode": "reuse", "max_new_tokens": 24,
                                        "stop": [stop, "never-generated-stop"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == expected and body["finish_reason"] == "stop"
    assert stop not in body["answer"]


def test_streamed_tokens_never_hold_text_the_stop_removes(client, unstopped):
    stop, expected = a_stop_in(unstopped)
    with client.stream("POST", "/v1/answer", json={"question": QUESTION, "passages": PASSAGES, "mode": "reuse",
                                                    "max_new_tokens": 24, "stop": stop, "stream": True}) as r:
        assert r.status_code == 200
        events = parse_sse(r.iter_lines())
    pieces = "".join(e["token"] for e in events if isinstance(e, dict) and "token" in e)
    final = next(e for e in events if isinstance(e, dict) and "answer" in e)
    assert pieces.strip() == expected == final["answer"] and final["finish_reason"] == "stop"


def test_query_takes_stop_too(client, cache):
    assert client.post("/v1/documents", json=CORPUS).status_code in (200, 201)
    body = {"question": QUESTION, "top_k": 2, "mode": "reuse", "max_new_tokens": 24}
    plain = client.post("/v1/query", json=body).json()["answer"]
    stop, expected = a_stop_in(plain)
    r = client.post("/v1/query", json={**body, "stop": stop})
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == expected and r.json()["finish_reason"] == "stop"


def test_chat_completions_follow_openai_stop(client, unstopped):
    stop, expected = a_stop_in(unstopped)
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24, "documents": PASSAGES,
            "chunkcache": {"mode": "reuse"}, "stop": stop}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == expected and choice["finish_reason"] == "stop"
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        events = [e for e in parse_sse(r.iter_lines()) if isinstance(e, dict)]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert content.strip() == expected
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("stop, field", [(["a", "b", "c", "d", "e"], "stop"), ("", "stop"), ([""], "stop")])
def test_bad_stop_is_a_422_naming_the_field(client, stop, field):
    r = client.post("/v1/answer", json={"question": QUESTION, "passages": PASSAGES, "stop": stop})
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}], "stop": stop})
    assert r.status_code == 422, r.text
