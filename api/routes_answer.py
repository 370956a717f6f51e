"""`POST /v1/query` (retrieve, then answer) and `POST /v1/answer` (caller's passages)."""

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from chunkcache.api.answers import capped, check_caps, sampling, to_response
from chunkcache.api.errors import error_body, request_id_of
from chunkcache.api.json_body import JsonRoute
from chunkcache.api.openapi import errors
from chunkcache.api.schemas import AnswerRequest, AnswerResponse, QueryRequest
from chunkcache.api.services import Services
from chunkcache.api.streaming import DONE, Failed, ModelStream, Token, sse
from chunkcache.types import Answer

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_DOC = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or server-sent events when stream is true"},
              **errors(503, 504)}

# fn(should_stop, on_token) -> Answer, run on a model worker. should_stop() turns True once the
# request is abandoned (a timeout, the client gone): the answer then ends at its next decode step
# (finish_reason "cancelled"), nothing raised. on_token takes each text piece; None: nobody streams.
AnswerFn = Callable[[Callable[[], bool], Callable[[str], None] | None], Answer]


async def run_answer(s: Services, fn: AnswerFn) -> Answer:
    """Run on the model queue; a request abandoned while it runs stops at its next decode step."""
    result = await s.queue.run(lambda c: fn(lambda: c.cancelled, None), s.config.request_timeout_s)
    s.metrics.observe_answer(result)
    return result


async def open_stream(s: Services, fn: AnswerFn, request_id: str | None) -> ModelStream:
    stream = ModelStream(s.queue, fn, s.config.request_timeout_s, request_id)
    await stream.open()
    return stream


async def answer_events(s: Services, stream: ModelStream) -> AsyncIterator[str]:
    """`data: {"token": ...}` per piece, then the full answer JSON (or an error), then [DONE]."""
    async for event in stream.events():
        if isinstance(event, Token):
            yield sse({"token": event.text})
        elif isinstance(event, Failed):
            yield sse(error_body(event.error.kind, event.error.message, stream.request_id))
        else:
            s.metrics.observe_answer(event)
            yield sse(to_response(event).model_dump())
    yield DONE


def answer_router(s: Services) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["answers"], route_class=JsonRoute)

    async def respond(fn: AnswerFn, stream: bool, request_id: str | None):
        if not stream:
            return to_response(await run_answer(s, fn))
        opened = await open_stream(s, fn, request_id)
        return StreamingResponse(answer_events(s, opened), media_type="text/event-stream", headers=SSE_HEADERS)

    @router.post("/query", response_model=AnswerResponse, responses=STREAM_DOC, summary="Retrieve top_k chunks and answer over them")
    async def query(req: QueryRequest, request: Request):
        max_new, top_k = capped(req, "max_new_tokens", s.config.max_new_tokens_limit), capped(req, "top_k", s.config.max_top_k)
        check_caps(s.config, max_new, top_k=top_k)
        params = sampling(req.temperature, req.top_p, req.seed)

        def fn(should_stop: Callable[[], bool], on_token: Callable[[str], None] | None) -> Answer:
            return s.cache.query(req.question, top_k=top_k, mode=req.mode, order=req.order, recompute_ratio=req.recompute_ratio,
                                 max_new_tokens=max_new, sampling=params, on_token=on_token, should_stop=should_stop,
                                 stop=req.stop)

        return await respond(fn, req.stream, request_id_of(request.scope))

    @router.post("/answer", response_model=AnswerResponse, responses=STREAM_DOC, summary="Answer over the passages sent")
    async def answer(req: AnswerRequest, request: Request):
        max_new = capped(req, "max_new_tokens", s.config.max_new_tokens_limit)
        check_caps(s.config, max_new, passages=len(req.passages))
        params = sampling(req.temperature, req.top_p, req.seed)
        passages = [p if isinstance(p, str) else p.model_dump() for p in req.passages]

        def fn(should_stop: Callable[[], bool], on_token: Callable[[str], None] | None) -> Answer:
            return s.cache.answer(req.question, passages, mode=req.mode, recompute_ratio=req.recompute_ratio,
                                  max_new_tokens=max_new, sampling=params, on_token=on_token, should_stop=should_stop,
                                  stop=req.stop)

        return await respond(fn, req.stream, request_id_of(request.scope))

    return router
