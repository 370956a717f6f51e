"""Typed results crossing module boundaries: answers, and the store's statistics (defined here,
torch-free, so the API's schemas describe what the facade returns without importing storage)."""

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from chunkcache.names import CACHE_STATES

if TYPE_CHECKING:  # retrieval pulls in faiss; these types stay a leaf
    from chunkcache.retrieval.documents import ChunkHit


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

    def retrieved(self, hit: "ChunkHit") -> "PassageHit":
        """This passage with the retrieval hit it was answered from (`ChunkCache.query`)."""
        return replace(self, doc_id=hit.doc_id, ordinal=hit.ordinal, score=float(hit.score))

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
    # Every passage and the question's tokens but the last came from chain entries (a repeat of the
    # whole prompt): only the last prompt token was computed.
    question_exact: bool = False
    teacher_agreement: float | None = None  # only when a reference answer was given (eval)
    # The chunk KV computed for this answer was stored (True when none was computed); False after a
    # failed store write (a full disk): those passages are computed again next time.
    kv_stored: bool = True
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


@dataclass(frozen=True)
class TierStats:
    """Counters of one store tier. hits/misses/puts/evictions/rejected count this handle's calls;
    entries/bytes describe what the tier holds now (for LMDB, across every process)."""

    name: str
    hits: int
    misses: int
    puts: int
    entries: int
    bytes: int
    max_bytes: int | None
    evictions: int
    rejected: int  # values larger than the whole budget, not stored
    errors: int = 0  # calls that failed and were served as a miss or a no-op (a remote tier)

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(frozen=True)
class LatencySummary:
    """Milliseconds. count/total_ms/mean_ms cover every sample; p50/p95 the last `window`."""

    count: int = 0
    total_ms: float = 0.0
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0


@dataclass(frozen=True)
class StoreStats:
    """hits/misses/corrupt: KVStore.get outcomes (a corrupt entry also counts as a miss).
    entries/bytes: the backing (slowest) tier's; evictions summed over tiers.
    get_ms: whole get (tier lookup + decode); encode_ms/decode_ms: codec time per entry."""

    tiers: tuple[TierStats, ...]
    hits: int
    misses: int
    corrupt: int
    entries: int
    bytes: int
    evictions: int
    get_ms: LatencySummary
    encode_ms: LatencySummary
    decode_ms: LatencySummary
    write_failures: int = 0  # offer_many/delete calls whose write failed (nothing stored/deleted)
    no_space_failures: int = 0  # of those, failed because the disk was full


@dataclass(frozen=True)
class SchedulerStats:
    """The scheduler's counters since start (`scheduler.py`): forwards taken, token rows in them
    (decode, repair and prompt rows), of which prompt pieces, and steps that carried decodes and
    prompt pieces together; working-cache memory admitted now, its peak and its capacity, and the
    requests waiting for it."""

    steps: int
    rows: int
    prompt_rows: int
    mixed_steps: int
    token_budget: int
    working_cache_bytes: int
    working_cache_peak_bytes: int
    working_cache_capacity_bytes: int
    waiting_for_memory: int
