"""Typed results crossing module boundaries."""

from dataclasses import dataclass, field
from typing import Any

from chunkcache.names import CACHE_STATES


@dataclass(frozen=True)
class Timings:
    """Wall times in seconds of one answer's stages.

    retrieval: finding the passages (query() only); lookup: cache lookup and load (decode of stored entries); warm: computing the KV of chunks
    that missed; reposition: RoPE of cached keys and cache assembly; prefill: the forward of
    the prompt (full prefill, recompute, or the query alone); decode: tokens after the first.
    """

    retrieval: float = 0.0
    tokenize: float = 0.0
    lookup: float = 0.0
    warm: float = 0.0
    reposition: float = 0.0
    prefill: float = 0.0
    decode: float = 0.0


@dataclass(frozen=True)
class PassageHit:
    """Whether a passage's KV came from the cache (`hit` True) or was computed for this request
    (False); None in full mode, which never looks at the cache. `exact`: it came from a chain
    entry (its KV in this very context, as a full prefill computed it). `cache` says it in words."""

    index: int
    tokens: int
    hit: bool | None
    title: str = ""
    doc_id: str | None = None
    ordinal: int | None = None
    score: float | None = None
    exact: bool = False

    @property
    def cache(self) -> str:
        """"exact", "hit", "miss" or "not used" (full mode)."""
        if self.exact:
            return CACHE_STATES[3]
        return CACHE_STATES[0 if self.hit else 2 if self.hit is None else 1]


@dataclass(frozen=True)
class Answer:
    text: str
    mode: str
    ttft_s: float
    total_s: float
    timings: Timings
    context_tokens: int
    prompt_tokens: int
    recomputed_tokens: int
    generated_tokens: int
    token_ids: tuple[int, ...]
    passages: tuple[PassageHit, ...]
    finish_reason: str  # "stop" (end-of-sequence token or a stop sequence), "length" or "cancelled"
    recompute_ratio: float | None = None
    repaired_tokens: int = 0  # context tokens recomputed during decoding (repair while decoding)
    teacher_agreement: float | None = None  # only when a reference answer was given (eval)
    # [V] float32 log-probabilities of the first generated token; only when asked for (eval, bench).
    first_logprobs: Any = field(default=None, repr=False, compare=False)

    @property
    def cache_hits(self) -> int:
        return sum(p.hit is True for p in self.passages)

    @property
    def exact_passages(self) -> int:
        """Leading passages whose KV was exact in this context (chain entries): never recomputed."""
        return sum(p.exact for p in self.passages)

    @property
    def cache_misses(self) -> int:
        """Passages whose KV was computed for this answer (0 in full mode: the cache was not used)."""
        return sum(p.hit is False for p in self.passages)
