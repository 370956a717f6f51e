"""The closed vocabularies every layer derives from: config checks, CLI choices and defaults,
the API's pydantic Literals, the storage header's codec ids. One tuple each; imports nothing,
so `chunkcache --help` and the API schema stay light."""

# How chunk KV is stored. The on-disk codec id is the 1-based position here (storage/header.py):
# append new codecs, never reorder. "fp32" is lossless for a float32 model: chain entries
# (exact in-context KV, `chain.py`) use the lossless codec of the working dtype.
# kvq4 / kvq3 (KVQuant-style 4 / 3-bit codes) and ans20v10 / ans16 / ans8v4 (the same kind of codes
# with 20 / 16 / 8 key and 10 / 16 / 4 value levels, entropy-coded): storage/grouped_codec.py.
CODECS = ("fp16", "bf16", "int8", "int4", "fp32", "kvq4", "kvq3", "ans20v10", "ans16", "ans8v4")
DEFAULT_CODEC = "fp16"

# How an answer uses the cache (answering.py describes each).
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
