"""The closed vocabularies every layer derives from: config checks, CLI choices and defaults,
the API's pydantic Literals, the storage header's codec ids. One tuple each; imports nothing,
so `chunkcache --help` and the API schema stay light."""

# How chunk KV is stored. The on-disk codec id is the 1-based position here (storage/header.py):
# append new codecs, never reorder. "fp32" is lossless for a float32 model: chain entries
# (exact in-context KV, `chain.py`) use the lossless codec of the working dtype.
CODECS = ("fp16", "bf16", "int8", "int4", "fp32")
DEFAULT_CODEC = "fp16"

# How an answer uses the cache (answering.py describes each).
MODES = ("full", "reuse", "blend", "ape")
DEFAULT_MODE = "blend"

# What the cache did for one passage of an answer; full mode never looks at the cache.
CACHE_STATES = ("hit", "miss", "not used")

# Prompt order of retrieved chunks: best first, or by (document id, ordinal).
ORDERS = ("score", "document")
DEFAULT_ORDER = "score"
