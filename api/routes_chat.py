"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`.

Retrieval runs over the store for the last user message, which is also the question; earlier
turns and system messages are not part of the prompt (chunkcache's prompt is fixed per
configuration, so its prefix KV can be cached). Any `model` name is accepted; responses name the
model actually served.
"""

import time
import uuid
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from chunkcache.api.answers import Served, capped, check_caps, sampling, sources
from chunkcache.api.chat_schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatRequest,
    Choice,
    ModelCard,
    ModelList,
    Usage,
    last_user_text,
)
from chunkcache.api.errors import error_body, invalid, request_id_of
from chunkcache.api.json_body import JsonRoute
from chunkcache.api.routes_answer import SSE_HEADERS, STREAM_DOC, open_stream, run_answer
from chunkcache.api.services import Services
from chunkcache.api.streaming import DONE, Failed, ModelStream, Token, sse
from chunkcache.api.work_queue import Cancellation
from chunkcache.types import Answer

DEFAULT_MAX_TOKENS = 64


def last_user_message(req: ChatRequest) -> str:
    text = last_user_text(req.messages)
    if text is None:  # ChatRequest's validator already refused this; kept for direct callers
        raise invalid("messages: no message with role 'user' and non-blank content; the last such message is the question")
    return text


def usage(result: Served) -> Usage:
    answer = result.answer
    return Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.generated_tokens,
                 total_tokens=answer.prompt_tokens + answer.generated_tokens)


def chunk(completion_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


async def chunk_events(s: Services, stream: ModelStream, completion_id: str, created: int) -> AsyncIterator[str]:
    """OpenAI stream: a role chunk, content chunks, a final chunk (finish_reason, usage, sources), [DONE]."""
    model = s.model_name
    yield sse(chunk(completion_id, created, model, {"role": "assistant", "content": ""}))
    async for event in stream.events():
        if isinstance(event, Token):
            yield sse(chunk(completion_id, created, model, {"content": event.text}))
        elif isinstance(event, Failed):
            yield sse(error_body(event.error.kind, event.error.message, stream.request_id))
        else:
            s.metrics.observe_answer(event)
            yield sse(chunk(completion_id, created, model, {}, event.answer.finish_reason,
                            usage=usage(event).model_dump(), sources=[x.model_dump() for x in sources(event)]))
    yield DONE


def chat_router(s: Services) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["openai"], route_class=JsonRoute)

    @router.post("/chat/completions", response_model=ChatCompletion, responses=STREAM_DOC,
                 summary="OpenAI chat completion over retrieved passages")
    async def chat_completions(req: ChatRequest, request: Request):
        question = last_user_message(req)
        opts = req.chunkcache
        top_k = capped(opts, "top_k", s.config.max_top_k)
        for given in (req.max_tokens, req.max_completion_tokens):  # each is capped, as the schema says
            if given is not None:
                check_caps(s.config, given)
        max_new = req.max_completion_tokens or req.max_tokens or min(DEFAULT_MAX_TOKENS, s.config.max_new_tokens_limit)
        check_caps(s.config, max_new, top_k=top_k)
        params = sampling(req.temperature, req.top_p, req.seed)

        def fn(_: Cancellation, on_token: Callable[[str], None]) -> Answer:
            return s.cache.query(question, top_k=top_k, mode=opts.mode, order=opts.order, recompute_ratio=opts.recompute_ratio,
                                 max_new_tokens=max_new, sampling=params, on_token=on_token)

        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            opened = await open_stream(s, fn, request_id_of(request.scope))
            return StreamingResponse(chunk_events(s, opened, completion_id, created), media_type="text/event-stream", headers=SSE_HEADERS)
        result = await run_answer(s, fn)
        return ChatCompletion(
            id=completion_id,
            created=created,
            model=s.model_name,
            choices=[Choice(message=AssistantMessage(content=result.answer.text), finish_reason=result.answer.finish_reason)],
            usage=usage(result),
            sources=sources(result),
        )

    @router.get("/models", response_model=ModelList, summary="The one model served (OpenAI list format)")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=s.model_name, created=s.created)])

    return router
