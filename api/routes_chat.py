"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`.

The question is the last user message. With client-supplied documents (the `documents` field,
or text marked in messages when the server has markers set) the answer is over exactly those,
as `/v1/answer` does: each document's KV is looked up by content, computed and stored on a miss.
Without them, retrieval runs over the corpus for the question. Earlier user and assistant turns
go into the prompt after the passages; system messages are not part of the prompt (its prefix
is fixed per configuration, so its KV can be cached). `usage.prompt_tokens_details` and the
`chunkcache` block report the cache hits and TTFT. Any `model` name is accepted; responses name
the model actually served.
"""

import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from chunkcache.api.answers import capped, check_caps, sampling, sources
from chunkcache.api.chat_documents import chat_inputs
from chunkcache.api.chat_schemas import (
    AssistantMessage,
    CacheReport,
    ChatCompletion,
    ChatRequest,
    Choice,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
)
from chunkcache.api.errors import error_body, request_id_of
from chunkcache.api.json_body import JsonRoute
from chunkcache.api.routes_answer import SSE_HEADERS, STREAM_DOC, open_stream, run_answer
from chunkcache.api.services import Services
from chunkcache.api.streaming import DONE, Failed, ModelStream, Token, sse
from chunkcache.types import Answer

DEFAULT_MAX_TOKENS = 64


def usage(answer: Answer) -> Usage:
    cached = sum(p.tokens for p in answer.passages if p.hit is True)
    return Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.generated_tokens,
                 total_tokens=answer.prompt_tokens + answer.generated_tokens,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=cached))


def report(answer: Answer, documents: bool) -> CacheReport:
    """documents: the passages are the client's documents (else retrieved ones, in `sources`)."""
    return CacheReport(mode=answer.mode, ttft_s=answer.ttft_s, total_s=answer.total_s, cache_hits=answer.cache_hits,
                       cache_misses=answer.cache_misses, recomputed_tokens=answer.recomputed_tokens,
                       documents=sources(answer) if documents else None)


def chunk(completion_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


async def chunk_events(s: Services, stream: ModelStream, completion_id: str, created: int, documents: bool) -> AsyncIterator[str]:
    """OpenAI stream: a role chunk, content chunks, a final chunk (finish_reason, usage, sources, chunkcache), [DONE]."""
    model = s.model_name
    yield sse(chunk(completion_id, created, model, {"role": "assistant", "content": ""}))
    async for event in stream.events():
        if isinstance(event, Token):
            yield sse(chunk(completion_id, created, model, {"content": event.text}))
        elif isinstance(event, Failed):
            yield sse(error_body(event.error.kind, event.error.message, stream.request_id))
        else:
            s.metrics.observe_answer(event)
            yield sse(chunk(completion_id, created, model, {}, event.finish_reason,
                            usage=usage(event).model_dump(), sources=[x.model_dump() for x in sources(event)],
                            chunkcache=report(event, documents).model_dump()))
    yield DONE


def chat_router(s: Services) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"], route_class=JsonRoute)

    @router.post("/chat/completions", response_model=ChatCompletion, responses=STREAM_DOC,
                 summary="OpenAI chat completion over retrieved passages")
    async def chat_completions(req: ChatRequest, request: Request):
        inputs = chat_inputs(req, s.config)
        opts = req.chunkcache
        top_k = capped(opts, "top_k", s.config.max_top_k)
        for given in (req.max_tokens, req.max_completion_tokens):  # each is capped, as the schema says
            if given is not None:
                check_caps(s.config, given)
        max_new = req.max_completion_tokens or req.max_tokens or min(DEFAULT_MAX_TOKENS, s.config.max_new_tokens_limit)
        check_caps(s.config, max_new, top_k=top_k)
        params = sampling(req.temperature, req.top_p, req.seed)
        given = dict(mode=opts.mode, recompute_ratio=opts.recompute_ratio, max_new_tokens=max_new, sampling=params,
                     history=inputs.history, stop=req.stop)

        def fn(should_stop: Callable[[], bool], on_token: Callable[[str], None] | None) -> Answer:
            if inputs.documents:
                return s.cache.answer(inputs.question, inputs.passages, on_token=on_token, should_stop=should_stop, **given)
            return s.cache.query(inputs.question, top_k=top_k, order=opts.order, on_token=on_token, should_stop=should_stop, **given)

        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            opened = await open_stream(s, fn, request_id_of(request.scope))
            events = chunk_events(s, opened, completion_id, created, bool(inputs.documents))
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        answer = await run_answer(s, fn)
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=s.model_name,
            choices=[Choice(message=AssistantMessage(content=answer.text), finish_reason=answer.finish_reason)],
            usage=usage(answer),
            sources=sources(answer),
            chunkcache=report(answer, bool(inputs.documents)),
        )

    @router.get("/models", response_model=ModelList, summary="The one model served (OpenAI list format)")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=s.model_name, created=s.created)])

    return router
