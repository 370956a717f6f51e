"""From request options to facade arguments, and from `Answer` to response bodies."""

from dataclasses import asdict

from pydantic import BaseModel

from chunkcache.api.errors import invalid
from chunkcache.api.schemas import AnswerResponse, Source, TimingsOut
from chunkcache.api.settings import ServiceConfig
from chunkcache.sampling import SamplingParams
from chunkcache.types import Answer


def capped(request: BaseModel, name: str, cap: int) -> int:
    """request.<name>, or, when the client left it out, its default lowered to this server's cap."""
    value = getattr(request, name)
    return value if name in request.model_fields_set else min(value, cap)


def check_caps(config: ServiceConfig, max_new_tokens: int, top_k: int | None = None, passages: int | None = None) -> None:
    """The server's own caps (the schemas hold only the fixed bounds); 422 saying what to send."""
    if max_new_tokens > config.max_new_tokens_limit:
        raise invalid(f"max_new_tokens: must be <= {config.max_new_tokens_limit} on this server, got {max_new_tokens}")
    if top_k is not None and top_k > config.max_top_k:
        raise invalid(f"top_k: must be <= {config.max_top_k} on this server, got {top_k}")
    if passages is not None and passages > config.max_top_k:
        raise invalid(f"passages: send at most {config.max_top_k} passages on this server, got {passages}")


def sampling(temperature: float | None, top_p: float | None, seed: int | None) -> SamplingParams:
    return SamplingParams(
        temperature=0.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=seed,
    )


def sources(answer: Answer) -> list[Source]:
    # The computed misses of one answer are written in one transaction: all stored, or none.
    def stored(hit: bool | None) -> bool | None:
        return None if hit is None else hit or answer.kv_stored

    return [
        Source(index=p.index, doc_id=p.doc_id, ordinal=p.ordinal, score=p.score, title=p.title, tokens=p.tokens,
               cache_hit=p.hit, cache=p.cache, stored=stored(p.hit))
        for p in answer.passages
    ]


def to_response(answer: Answer) -> AnswerResponse:
    return AnswerResponse(
        answer=answer.text,
        mode=answer.mode,
        finish_reason=answer.finish_reason,
        sources=sources(answer),
        ttft_s=answer.ttft_s,
        total_s=answer.total_s,
        timings=TimingsOut(**asdict(answer.timings)),
        context_tokens=answer.context_tokens,
        prompt_tokens=answer.prompt_tokens,
        recomputed_tokens=answer.recomputed_tokens,
        recompute_ratio=answer.recompute_ratio,
        generated_tokens=answer.generated_tokens,
        cache_hits=answer.cache_hits,
        question_exact=answer.question_exact,
    )
