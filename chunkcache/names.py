"""The closed vocabularies every layer derives from: config checks, CLI choices and defaults,
the API's pydantic Literals, the storage header's codec ids. One tuple each; imports nothing,
so `chunkcache --help` and the API schema stay light."""

# How chunk KV is stored. The on-disk codec id is the 1-based position here (storage/header.py):
# append new codecs, never reorder. "fp32" is lossless for a float32 model: chain entries
# (exact in-context KV, `chain.py`) use the lossless codec of the working dtype.
# kvq4 / kvq3 (KVQuant-style 4 / 3-bit codes) and ans20v10 / ans16 / ans8v4 (the same kind of codes
# with 20 / 16 / 8 key and 10 / 16 / 4 value levels, entropy-coded): storage/grouped_codec.py.
# st4 / st6 (8-bit codes at a step set by each key channel's / value token's spread, entropy-coded;
# >= 4x / >= 6x smaller than fp16 on 2WikiMQA's passages): storage/stepped_codec.py.
CODECS = ("fp16", "bf16", "int8", "int4", "fp32", "kvq4", "kvq3", "ans20v10", "ans16", "ans8v4", "st4", "st6")
DEFAULT_CODEC = "fp16"
# The store's defaults, one copy each (CacheConfig, StoreConfig, the CLI and the vLLM connector
# derive theirs): zstd saves under 10% on fp16/int8 KV and slows loads 2-3x, so it is off unless
# asked for (it pays with bf16/int4); the memory tier holds 512 MiB of encoded chunk KV.
DEFAULT_ZSTD_LEVEL = None
DEFAULT_MEMORY_BYTES = 512 * 2**20
# The scheduler's per-step row budget and the working caches' memory (README "Scheduling").
DEFAULT_TOKEN_BUDGET = 128
DEFAULT_WORKING_CACHE_BYTES = 1 * 2**30

# How an answer uses the cache (prompt_phase.py describes each).
MODES = ("full", "reuse", "blend", "ape", "prefix")
# Modes that look up chain entries (the exact leading run of chunks, `chain.py`). APE places
# chunks at shared positions, never where a chain entry was computed; full is the baseline.
CHAIN_MODES = ("reuse", "blend", "prefix")
DEFAULT_MODE = "blend"

# What the cache did for one passage of an answer: "exact" its KV in this very context (a chain
# entry), "hit" its per-chunk KV placed and blended, "miss" computed now; full never looks.
CACHE_STATES = ("hit", "miss", "not used", "exact")

# Which disk entries go first under a byte budget (storage/eviction.py): "lfu" the least reused
# (ties: the least recent), "lru" the least recent.
EVICTIONS = ("lru", "lfu")
DEFAULT_EVICTION = "lfu"

# Prompt order of retrieved chunks: best first, or by (document id, ordinal).
ORDERS = ("score", "document")
DEFAULT_ORDER = "score"
# The most chunks one retrieval returns (a service's max_top_k cap is at most this).
MAX_TOP_K = 100
