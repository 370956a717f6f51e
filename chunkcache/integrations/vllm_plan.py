"""The vLLM connector's bookkeeping, without tensors and without vLLM: its settings, the keys of a
request's documents, and which leading prompt tokens chunkcache's store can supply.

A request's prompt is chunkcache's: [prefix][doc 0]...[doc n-1][suffix] (`chunkcache.prompt`),
and the client names the documents' lengths in `kv_transfer_params={"chunkcache": {"chunks":
[n_0, ...]}}` (`request_params`). The store can supply, in prompt order and stopping at the first
gap:
  prefix  - the prefix as vLLM computed it (rotated, lossless; saved by the first request),
  chain   - doc i exactly as computed behind the prefix and docs 0..i-1 (`chunkcache.chain`),
  chunk   - doc i's per-chunk entry (computed behind the prefix alone, keys before RoPE),
            re-positioned at its place: chunkcache's `reuse` mode.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chunkcache.errors import ConfigError
from chunkcache.names import DEFAULT_CODEC, DEFAULT_ZSTD_LEVEL
from chunkcache.storage.codec import CodecSpec
from chunkcache.storage.keys import chain_keys, chunk_key

PARAMS_KEY = "chunkcache"


@dataclass(frozen=True)
class ConnectorSettings:
    """`kv_connector_extra_config` of the connector (`connector_settings` builds it from a ChunkCache).

    store_dir: the ChunkCache store directory (its LMDB is store_dir/kv). fingerprint,
    prefix_ids, codec, zstd_level: what chunkcache's keys are made of, so vLLM and ChunkCache
    instances on the same store share entries. recompute_last: documents at the end of the
    leading run that vLLM recomputes instead of loading (0 = load all; see the README).
    """

    store_dir: str
    fingerprint: str
    prefix_ids: tuple[int, ...]
    codec: str = DEFAULT_CODEC
    zstd_level: int | None = DEFAULT_ZSTD_LEVEL
    recompute_last: int = 0
    memory_bytes: int = 0

    def __post_init__(self):
        object.__setattr__(self, "prefix_ids", tuple(int(t) for t in self.prefix_ids))
        if not self.store_dir or not self.fingerprint or not self.prefix_ids:
            raise ConfigError(f"the chunkcache connector needs store_dir, fingerprint and prefix_ids; got "
                              f"{self.store_dir!r}, {self.fingerprint!r}, {len(self.prefix_ids)} prefix ids")
        if self.recompute_last < 0:
            raise ConfigError(f"recompute_last must be >= 0, got {self.recompute_last}")

    @classmethod
    def from_extra_config(cls, extra: dict) -> "ConnectorSettings":
        known = {k: extra[k] for k in cls.__dataclass_fields__ if k in extra}
        return cls(**known)

    @property
    def prefix_digest(self) -> str:
        """As `PromptBuilder.prefix_digest`."""
        return hashlib.blake2b(repr(list(self.prefix_ids)).encode(), digest_size=16).hexdigest()

    @property
    def codec_tag(self) -> str:
        """The codec part of chunkcache's keys, as the store writes it (`CodecSpec.tag`)."""
        return CodecSpec(self.codec, self.zstd_level).tag


def connector_settings(cache, recompute_last: int = 0) -> dict:
    """The connector's `kv_connector_extra_config` for a ChunkCache's store, model and prompt."""
    cfg = cache.config
    return {"store_dir": str(cfg.store_dir), "fingerprint": cache.generator.fingerprint,
            "prefix_ids": list(cache.prompt.prefix_ids), "codec": cfg.codec, "zstd_level": cfg.zstd_level,
            "recompute_last": recompute_last}


def request_params(chunk_ids: Sequence[Sequence[int]], recompute_last: int | None = None) -> dict:
    """The request's `kv_transfer_params`: its documents' token counts, in prompt order, and
    optionally its own `recompute_last` (else the connector's setting)."""
    params = {"chunks": [len(c) for c in chunk_ids]}
    if recompute_last is not None:
        params["recompute_last"] = recompute_last
    return {PARAMS_KEY: params}


@dataclass(frozen=True)
class Segment:
    """A run of prompt tokens [start, start + length) and the store entry that holds its KV."""

    kind: str  # "prefix" | "chain" | "chunk"
    key: bytes
    start: int
    length: int
    doc: int = -1  # document index; -1 for the prefix

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class RequestDocs:
    """A request's prompt cut into the prefix and its documents, with every key they may have."""

    prefix: Segment
    chunks: tuple[tuple[int, ...], ...]
    chain: tuple[bytes, ...]  # chain entry keys, one per document
    per_chunk: tuple[bytes, ...]  # per-chunk entry keys

    @property
    def docs_end(self) -> int:
        return self.prefix.end + sum(len(c) for c in self.chunks)

    def starts(self) -> list[int]:
        out, a = [], self.prefix.end
        for c in self.chunks:
            out.append(a)
            a += len(c)
        return out


def prefix_key(s: ConnectorSettings, lossless: str) -> bytes:
    """The prefix entry's key: a chunk key over the prefix's own tokens, under a codec name no chunk uses."""
    return chunk_key(s.fingerprint, s.prefix_digest, s.prefix_ids, f"vllm-prefix/{lossless}")


def request_docs(s: ConnectorSettings, prompt: Sequence[int], params: dict | None, lossless: str) -> RequestDocs | None:
    """The request's documents, or None when it carries no chunkcache parameters or its prompt does
    not start with the configured prefix (then the connector stays out of its way)."""
    lengths = ((params or {}).get(PARAMS_KEY) or {}).get("chunks")
    P = len(s.prefix_ids)
    if not lengths or tuple(prompt[:P]) != s.prefix_ids:
        return None
    if any(not isinstance(n, int) or n < 1 for n in lengths) or P + sum(lengths) >= len(prompt):
        raise ConfigError(f"kv_transfer_params chunk lengths {lengths} do not fit a prompt of {len(prompt)} tokens "
                          f"after a {P}-token prefix (the question must follow the documents)")
    chunks, a = [], P
    for n in lengths:
        chunks.append(tuple(prompt[a:a + n]))
        a += n
    return RequestDocs(Segment("prefix", prefix_key(s, lossless), 0, P), tuple(chunks),
                       tuple(chain_keys(s.fingerprint, s.prefix_digest, chunks, lossless)),
                       tuple(chunk_key(s.fingerprint, s.prefix_digest, c, s.codec_tag) for c in chunks))


def plan_load(docs: RequestDocs, stored: Callable[[bytes], bool], recompute_last: int = 0) -> tuple[Segment, ...]:
    """The leading segments the store holds: the prefix, then each document from its chain entry
    while the run of chain entries lasts, else from its per-chunk entry; stops at the first
    document with neither. recompute_last drops that many documents from the end of the run, so
    vLLM computes them (over the loaded KV before them) instead."""
    if not stored(docs.prefix.key):
        return ()
    out, exact = [docs.prefix], True
    for i, (start, ids) in enumerate(zip(docs.starts(), docs.chunks)):
        if exact and stored(docs.chain[i]):
            out.append(Segment("chain", docs.chain[i], start, len(ids), i))
            continue
        exact = False
        if not stored(docs.per_chunk[i]):
            break
        out.append(Segment("chunk", docs.per_chunk[i], start, len(ids), i))
    docs_loaded = len(out) - 1
    return tuple(out[: 1 + max(0, docs_loaded - recompute_last)])


def plan_save(docs: RequestDocs, loaded: Sequence[Segment], stored: Callable[[bytes], bool],
              local_end: int = 0) -> tuple[Segment, ...]:
    """Entries to write once vLLM has computed the request's documents: the prefix if not stored;
    a chain entry for every computed document whose every predecessor is exact (computed by vLLM
    or loaded from a chain entry, never re-positioned); a per-chunk entry for document 0 if vLLM
    computed it (behind the prefix alone, it is exactly a per-chunk entry).

    local_end: tokens vLLM's own prefix cache supplied. A document starting there may hold
    re-positioned KV an earlier load put in that cache, so it counts as inexact and is not saved."""
    out = [] if stored(docs.prefix.key) else [docs.prefix]
    from_store = {seg.doc: seg.kind for seg in loaded if seg.kind != "prefix"}
    exact = True
    for i, (start, ids) in enumerate(zip(docs.starts(), docs.chunks)):
        kind = from_store.get(i) or ("local" if start < local_end else None)
        if kind in ("chunk", "local"):
            exact = False
        if kind is not None:
            continue
        if exact and not stored(docs.chain[i]):
            out.append(Segment("chain", docs.chain[i], start, len(ids), i))
        if i == 0 and not stored(docs.per_chunk[0]):
            out.append(Segment("chunk", docs.per_chunk[0], start, len(ids), 0))
    return tuple(out)
