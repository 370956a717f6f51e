"""Request and response bodies of the chunkcache routes (the OpenAI ones are in chat_schemas.py).

Field constraints are the fixed bounds; the server's own caps (max_top_k, max_new_tokens_limit)
are checked by `limits.py`, since they come from the ServiceConfig.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["full", "reuse", "blend", "ape"]
Order = Literal["score", "document"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- documents ------------------------------------------------------------------------------
class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=400, description="stable id; re-adding an id replaces the document")
    text: str = Field(min_length=1)
    title: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


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
    paths: list[str] = Field(min_length=1, max_length=1000, description="files or folders relative to the server's ingest root")


# -- answering ------------------------------------------------------------------------------
class GenerationOptions(Strict):
    mode: Mode = "blend"
    recompute_ratio: float | None = Field(default=None, ge=0.0, le=1.0, description="blend only; default from the cache config")
    max_new_tokens: int = Field(default=32, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = Field(default=False, description="server-sent events: token events, the answer, then [DONE]")


class QueryRequest(GenerationOptions):
    question: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(default=5, ge=1)
    order: Order = "score"


class PassageIn(Strict):
    text: str = Field(min_length=1)
    title: str = ""


class AnswerRequest(GenerationOptions):
    question: str = Field(min_length=1, max_length=8000)
    passages: list[str | PassageIn] = Field(min_length=1)


class Source(BaseModel):
    index: int
    doc_id: str | None = None
    ordinal: int | None = None
    score: float | None = None
    title: str
    tokens: int
    cache_hit: bool


class TimingsOut(BaseModel):
    retrieval: float
    tokenize: float
    lookup: float
    warm: float
    reposition: float
    prefill: float
    decode: float


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


class TierStatsOut(BaseModel):
    name: str
    hits: int
    misses: int
    hit_rate: float
    puts: int
    entries: int
    bytes: int
    max_bytes: int | None
    evictions: int
    rejected: int


class LatencyOut(BaseModel):
    count: int
    total_ms: float
    mean_ms: float
    p50_ms: float
    p95_ms: float


class StoreStatsOut(BaseModel):
    tiers: list[TierStatsOut]
    hits: int
    misses: int
    corrupt: int
    entries: int
    bytes: int
    evictions: int
    get_ms: LatencyOut
    encode_ms: LatencyOut
    decode_ms: LatencyOut


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
