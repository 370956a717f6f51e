"""Request and response bodies of the chunkcache routes (the OpenAI ones are in chat_schemas.py).

Field constraints are the fixed bounds; the server's own caps (max_top_k, max_new_tokens_limit)
come from the ServiceConfig: `answers.check_caps` enforces them and `openapi.py` writes them
into the served schema, so the schema never accepts what the server rejects.

Requests are strict: a string is not coerced to a number ("5" is not 5), strings must be valid
Unicode (no lone surrogates, which cannot be stored, tokenized or sent back), and document
metadata is bounded in depth and size so what is stored can always be read back.
"""

import json
import math
from dataclasses import MISSING, fields
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from chunkcache.names import CACHE_STATES, DEFAULT_MODE, DEFAULT_ORDER, MODES, ORDERS
from chunkcache.stopping import MAX_STOP_CHARS, MAX_STOPS
from chunkcache.types import LatencySummary, StoreStats, Timings, TierStats

def response_model_of(cls, name: str, **overrides):
    """A pydantic response model with the fields of dataclass `cls` (names, types, defaults), so
    the API never restates them; `overrides`: (type, default) per field to add or replace."""
    hints = get_type_hints(cls)
    spec = {f.name: (hints[f.name], ... if f.default is MISSING else f.default) for f in fields(cls)}
    return create_model(name, **{**spec, **overrides})


Mode = Literal[MODES]
Order = Literal[ORDERS]
CacheState = Literal[CACHE_STATES]

MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16 * 1024


def unicode_problem(text: str) -> str | None:
    """Why `text` is not valid Unicode text (a lone surrogate, with its position), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains a lone surrogate {text[e.start]!r} at position {e.start}; send valid Unicode text"
    return None


def _valid_unicode(text: str) -> str:
    problem = unicode_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


def _metadata_problem(value: Any, depth: int, path: str) -> str | None:
    if depth > MAX_METADATA_DEPTH:
        return f"{path} is nested deeper than {MAX_METADATA_DEPTH} levels"
    if isinstance(value, str):
        problem = unicode_problem(value)
        return f"{path} {problem}" if problem else None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} is {value}, not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = unicode_problem(key)
            if problem:
                return f"{path}: a key {problem}"
            problem = _metadata_problem(item, depth + 1, f"{path}.{key}")
            if problem:
                return problem
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = _metadata_problem(item, depth + 1, f"{path}[{i}]")
            if problem:
                return problem
    return None


def _valid_metadata(value: dict[str, Any]) -> dict[str, Any]:
    problem = _metadata_problem(value, 1, "metadata")
    if problem is not None:
        raise ValueError(problem)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    return value


def _integral(value: Any) -> Any:
    """2.0 is an integer in JSON Schema; "2" and true are not (strict mode refuses those)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# int in JSON Schema's sense. Every request integer is one of these.
Int = Annotated[int, BeforeValidator(_integral)]
MAX_SEED = 2**53 - 1  # the largest integer every JSON client (float64) holds exactly; within torch manual_seed
# Bounds before the validator, so the schema of an Optional keeps them as minimum/maximum.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED), BeforeValidator(_integral)]
PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_integral)]

# str without lone surrogates. Every request string is one of these.
Text = Annotated[str, AfterValidator(_valid_unicode)]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_valid_metadata),
    Field(description=f"JSON object, at most {MAX_METADATA_DEPTH} levels deep and {MAX_METADATA_BYTES} bytes as JSON"),
]


# Patterns run on Python's re, whose \s is str.isspace(), the rule the facade's strip() applies.
STRICT = ConfigDict(extra="forbid", strict=True, regex_engine="python-re")


class Strict(BaseModel):
    model_config = STRICT


# -- documents ------------------------------------------------------------------------------
class DocumentIn(Strict):
    id: Text = Field(min_length=1, max_length=400, description="stable id, at most 400 UTF-8 bytes; re-adding an id replaces the document")
    text: Text = Field(min_length=1, pattern=r"\S", description="must hold a non-whitespace character")
    title: Text = ""
    metadata: Metadata = Field(default_factory=dict)


MAX_DOCUMENTS_PER_REQUEST = 1000
DocumentBatch = Annotated[list[DocumentIn], Field(min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST)]


class DocumentsAdded(BaseModel):
    ids: list[str]
    count: int


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str
    metadata: dict[str, Any]


class DocumentInfoOut(BaseModel):
    id: str
    title: str
    n_chars: int
    n_chunks: int
    metadata: dict[str, Any]


class DocumentList(BaseModel):
    documents: list[DocumentInfoOut]
    offset: int
    limit: int


class DocumentDeleted(BaseModel):
    id: str
    deleted: bool = True
    freed_chunks: int


class IngestRequest(Strict):
    paths: list[Text] = Field(min_length=1, max_length=1000, description="files or folders relative to the server's ingest root")


# -- answering ------------------------------------------------------------------------------
StopSequence = Annotated[Text, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = StopSequence | Annotated[list[StopSequence], Field(min_length=1, max_length=MAX_STOPS)]
STOP_DOC = (f"a string or up to {MAX_STOPS}: the answer ends before the first one generated (finish_reason 'stop'); "
            "the stop text is not returned, and streamed tokens never hold text a stop later removes")


class GenerationOptions(Strict):
    mode: Mode = DEFAULT_MODE
    recompute_ratio: float | None = Field(default=None, ge=0.0, le=1.0, description="blend only; default from the cache config")
    max_new_tokens: Int = Field(default=32, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: Seed | None = None
    stop: Stop | None = Field(default=None, description=STOP_DOC)
    stream: bool = Field(default=False, description="server-sent events: token events, the answer, then [DONE]")


class QueryRequest(GenerationOptions):
    question: Text = Field(min_length=1, max_length=8000, pattern=r"\S", description="must hold a non-whitespace character")
    top_k: Int = Field(default=5, ge=1)
    order: Order = DEFAULT_ORDER


PassageText = Annotated[Text, Field(min_length=1, pattern=r"\S", description="must hold a non-whitespace character")]


class PassageIn(Strict):
    text: PassageText
    title: Text = ""


class AnswerRequest(GenerationOptions):
    question: Text = Field(min_length=1, max_length=8000, pattern=r"\S", description="must hold a non-whitespace character")
    passages: list[PassageText | PassageIn] = Field(min_length=1)


class Source(BaseModel):
    index: int
    doc_id: str | None = None
    ordinal: int | None = None
    score: float | None = None
    title: str
    tokens: int
    cache_hit: bool | None = Field(description="the passage's KV came from the cache; null in full mode, which does not use the cache")
    cache: CacheState = Field(description="exact (its KV as a full prefill of this very context computed it: a chain entry), "
                                          "hit (its cached KV placed and blended), miss (computed for this answer), or 'not used' (full mode)")
    stored: bool | None = Field(description="the passage's KV is in the cache after this answer; false when it was computed but "
                                            "could not be stored (e.g. a full disk); null in full mode, which does not use the cache")


TimingsOut = response_model_of(Timings, "TimingsOut")


class AnswerResponse(BaseModel):
    answer: str
    mode: Mode
    finish_reason: str
    sources: list[Source]
    ttft_s: float
    total_s: float
    timings: TimingsOut
    context_tokens: int
    prompt_tokens: int
    recomputed_tokens: int
    recompute_ratio: float | None
    generated_tokens: int
    cache_hits: int
    question_exact: bool = Field(False, description="the whole prompt was a repeat: every passage and the question's tokens "
                                                    "but the last came from chain entries, one prompt token was computed")


# -- jobs, stats, probes --------------------------------------------------------------------
class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["running", "succeeded", "failed", "cancelled"]
    done: int
    total: int | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    finished_at: float | None


# The store's statistics as the store's dataclasses define them, plus the derived hit rate.
TierStatsOut = response_model_of(
    TierStats, "TierStatsOut", hit_rate=(float, ...),
    errors=(int, Field(0, description="calls that failed and were served as a miss (the shared Redis tier when it is down)")))
LatencyOut = response_model_of(LatencySummary, "LatencyOut")
StoreStatsOut = response_model_of(StoreStats, "StoreStatsOut", tiers=(list[TierStatsOut], ...), get_ms=(LatencyOut, ...),
                                  encode_ms=(LatencyOut, ...), decode_ms=(LatencyOut, ...))


class QueueStatsOut(BaseModel):
    depth: int
    capacity: int
    busy_workers: int
    workers: int
    running_jobs: int


class StatsResponse(BaseModel):
    store: StoreStatsOut
    queue: QueueStatsOut


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model: str
    workers_alive: bool


# -- errors ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    type: str = Field(description="stable error code, e.g. invalid_request, not_found, overloaded, internal_error")
    message: str = Field(description="what went wrong with the request, and what to send instead")
    request_id: str | None = Field(description="also the X-Request-ID response header; finds the request in the server log")


class ErrorBody(BaseModel):
    error: ErrorDetail
