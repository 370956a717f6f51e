"""Where the framework integrations send a chat: a `ChunkCache` in this process, or the service.

Both take a `Chat` (question, earlier turns, documents) and give a `Reply` that says which
documents were cache hits and the time to the first token. Without documents the answer
retrieves from the chunkcache corpus, as `/v1/chat/completions` does.
"""

import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from chunkcache.errors import ChunkCacheError, ConfigError
from chunkcache.prompt import Passage, Turn
from chunkcache.sampling import SamplingParams
from chunkcache.types import Answer


class ServiceError(ChunkCacheError):
    """The service refused or failed a request; carries its HTTP status and error message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"chunkcache service answered {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class Chat:
    question: str
    history: tuple[Turn, ...] = ()
    documents: tuple[Passage, ...] = ()  # empty: retrieve from the corpus
    stop: tuple[str, ...] = ()  # stop sequences: the answer ends before the first one (not returned)


def stops_of(*given: str | Sequence[str] | None) -> tuple[str, ...]:
    """The first stop setting given (a per-call `stop` before the model's field) as a tuple."""
    for stop in given:
        if stop is not None:
            return (stop,) if isinstance(stop, str) else tuple(stop)
    return ()


@dataclass(frozen=True)
class Generation:
    """Per-call generation settings (the integrations' model fields)."""

    max_tokens: int = 64
    temperature: float = 0.0
    mode: str = "blend"
    top_k: int = 5  # passages retrieved from the corpus when a chat has no documents

    def __post_init__(self):
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    hits: tuple[bool | None, ...]  # per passage in prompt order: its KV came from the cache (None: full mode)
    cached_tokens: int  # passage tokens whose KV came from the cache

    @property
    def cache_hits(self) -> int:
        return sum(h is True for h in self.hits)

    def report(self) -> dict:
        """The cache's part of the reply, for a framework's response metadata."""
        return {"ttft_s": self.ttft_s, "cache_hits": self.cache_hits, "cache_misses": sum(h is False for h in self.hits),
                "hits": list(self.hits), "cached_tokens": self.cached_tokens}


class Backend(Protocol):
    def reply(self, chat: Chat) -> Reply: ...

    def stream(self, chat: Chat) -> Iterator[str | Reply]:
        """Text pieces as they are generated, then the Reply."""
        ...


class LibraryBackend:
    """Answers with a ChunkCache in this process (it serializes model work itself)."""

    def __init__(self, cache, generation: Generation):
        self.cache = cache
        self.generation = generation

    def _answer(self, chat: Chat, on_token: Callable[[str], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> Reply:
        g = self.generation
        given = dict(mode=g.mode, max_new_tokens=g.max_tokens, sampling=SamplingParams(temperature=g.temperature),
                     history=chat.history, on_token=on_token, should_stop=should_stop, stop=chat.stop or None)
        if chat.documents:
            answer = self.cache.answer(chat.question, list(chat.documents), **given)
        else:
            answer = self.cache.query(chat.question, top_k=g.top_k, **given)
        return _of_answer(answer)

    def reply(self, chat: Chat) -> Reply:
        return self._answer(chat)

    def stream(self, chat: Chat) -> Iterator[str | Reply]:
        # The model runs on a thread; pieces cross a queue. Leaving the loop early stops it.
        pieces: queue.Queue = queue.Queue()
        stop = threading.Event()

        def run():
            try:
                pieces.put(self._answer(chat, on_token=pieces.put, should_stop=stop.is_set))
            except BaseException as e:  # handed to the consumer, raised there
                pieces.put(e)

        thread = threading.Thread(target=run, name="chunkcache-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = pieces.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Reply):
                    return
        finally:
            stop.set()
            thread.join()


def _of_answer(answer: Answer) -> Reply:
    return Reply(text=answer.text, finish_reason=answer.finish_reason, prompt_tokens=answer.prompt_tokens,
                 completion_tokens=answer.generated_tokens, ttft_s=answer.ttft_s, hits=tuple(p.hit for p in answer.passages),
                 cached_tokens=sum(p.tokens for p in answer.passages if p.hit is True))


class ServiceBackend:
    """Answers through `POST {base_url}/v1/chat/completions`, documents in its `documents` field."""

    def __init__(self, base_url: str, generation: Generation, api_key: str | None = None, timeout_s: float = 120.0):
        self.url = base_url.rstrip("/") + "/v1/chat/completions"
        self.generation = generation
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s

    def _body(self, chat: Chat, stream: bool) -> dict:
        g = self.generation
        messages = [{"role": t.role, "content": t.text} for t in chat.history] + [{"role": "user", "content": chat.question}]
        body = {"messages": messages, "max_tokens": g.max_tokens, "temperature": g.temperature, "stream": stream,
                "chunkcache": {"mode": g.mode} if chat.documents else {"mode": g.mode, "top_k": g.top_k}}
        if chat.documents:
            body["documents"] = [{"title": p.title, "text": p.text} for p in chat.documents]
        if chat.stop:
            body["stop"] = list(chat.stop)
        return body

    def reply(self, chat: Chat) -> Reply:
        response = httpx.post(self.url, json=self._body(chat, False), headers=self.headers, timeout=self.timeout_s)
        _raise_for(response)
        body = response.json()
        return _of_completion(body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"], body)

    def stream(self, chat: Chat) -> Iterator[str | Reply]:
        pieces: list[str] = []
        with httpx.stream("POST", self.url, json=self._body(chat, True), headers=self.headers, timeout=self.timeout_s) as response:
            if response.status_code != 200:
                response.read()
                _raise_for(response)
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: "):])
                if "error" in event:
                    raise ServiceError(200, event["error"]["message"])
                choice = event["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    pieces.append(piece)
                    yield piece
                if choice["finish_reason"] is not None:
                    yield _of_completion("".join(pieces).strip(), choice["finish_reason"], event)


def _raise_for(response: httpx.Response) -> None:
    if response.status_code == 200:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    raise ServiceError(response.status_code, message)


def _of_completion(text: str, finish_reason: str, body: dict) -> Reply:
    """body: a completion, or the final chunk of a stream (both carry usage and the chunkcache block)."""
    usage, report = body["usage"], body["chunkcache"]
    passages = report["documents"] if report["documents"] is not None else body["sources"]
    return Reply(text=text, finish_reason=finish_reason, prompt_tokens=usage["prompt_tokens"],
                 completion_tokens=usage["completion_tokens"], ttft_s=report["ttft_s"],
                 hits=tuple(p["cache_hit"] for p in passages), cached_tokens=usage["prompt_tokens_details"]["cached_tokens"])
