"""Chain entries: each chunk's exact KV at its place behind the chunks before it.

A per-chunk entry (`chunk_store.py`) is a chunk computed behind the shared prefix alone: usable
anywhere, approximate once other chunks precede it. A chain entry is the chunk as a full
prefill of [prefix][c_0]...[c_i] computed it (keys rotated at their positions, values), under
the key of (model, prefix, codec, the tokens of c_0..c_i) and in the lossless codec of the
working dtype. A request whose leading chunks c_0..c_{e-1} all have chain entries gets their KV
exactly as a full prefill would, without computing it; only the chunks after that run are
placed from per-chunk entries and blended (or, in `prefix` mode, prefilled).

The question is one more link (`prompt_links`): its tokens but the last, stored behind the whole
context. A repeat of the whole prompt (same passages in the same order, same question) loads every
prompt token but the last and computes that one: the first token's logits come from its row.

Chain entries live in the same store as per-chunk entries (same header and checksum, same
tiers, one byte budget and eviction). One prompt's entries cost what its context's KV costs:
[A, B, C] and [A, B, D] share the entries of A and A->B.
"""

from collections.abc import Sequence

import torch

from chunkcache.engine import Engine
from chunkcache.kernels import lossless_codec
from chunkcache.kv import PrefixKV, WorkingKV
from chunkcache.storage import CodecSpec, KVStore, Payload, chain_keys


def prompt_links(chunk_ids: Sequence[Sequence[int]], suffix_ids: Sequence[int]) -> list[list[int]]:
    """The chain's links of a whole prompt: its chunks, then its question's tokens but the last
    (none when the question is one token). A question link's key holds every chunk before it,
    like any chain key, so it matches only behind the same context."""
    links = [list(c) for c in chunk_ids]
    if len(suffix_ids) > 1:
        links.append(list(suffix_ids[:-1]))
    return links


class ChainStore:
    """Chain entries of a model and prefix in `store` (see the module docstring)."""

    def __init__(self, engine: Engine, prefix: PrefixKV, prefix_digest: str, store: KVStore):
        self.engine, self.prefix, self.store = engine, prefix, store
        self._prefix_digest = prefix_digest
        # Lossless for the working cache's dtype: a chain entry puts back the very bytes a full prefill wrote.
        self.codec = CodecSpec(lossless_codec(engine.gen.dtype).name)

    def keys(self, chunk_ids: Sequence[Sequence[int]]) -> list[bytes]:
        """One key per chunk: chunk i's entry behind chunks 0..i-1."""
        return chain_keys(self.engine.gen.fingerprint, self._prefix_digest, chunk_ids, self.codec.tag)

    def lookup(self, chunk_ids: Sequence[Sequence[int]]) -> list[Payload]:
        """The entries of the longest leading run of chunks stored in context (rotated payloads,
        [L, 2, Hkv, n_i, d] each): empty when the first chunk has none. A corrupt entry ends the
        run (it is deleted and counted by the store, and recomputed by the caller)."""
        run: list[Payload] = []
        for key in self.keys(chunk_ids):
            payload = self.store.get_payload(key)
            if payload is None or not payload.rotated:
                break
            run.append(payload)
        return run

    def stored_run(self, chunk_ids: Sequence[Sequence[int]]) -> int:
        """How many leading chunks have chain entries (existence only, nothing decoded)."""
        count = 0
        for key in self.keys(chunk_ids):
            if not self.store.contains(key):
                break
            count += 1
        return count

    def save(self, kv: WorkingKV, chunk_ids: Sequence[Sequence[int]], start: int = 0) -> int:
        """Store chunks [start:] of a cache that a full prefill filled: chunk i's slots are
        [P + len(c_0..c_{i-1}), ...) after the prefix. Never raises a write failure (the store
        logs and counts it). Returns the bytes of KV handed to the store (0 if nothing)."""
        keys = self.keys(chunk_ids)
        a = self.prefix.length + sum(len(c) for c in chunk_ids[:start])
        items, size = [], 0
        for key, ids in zip(keys[start:], chunk_ids[start:]):
            b = a + len(ids)
            part = torch.stack((kv.k[:, :, a:b], kv.v[:, :, a:b]), dim=1)  # [L, 2, Hkv, n, d]
            items.append((key, part))
            size += part.numel() * part.element_size()
            a = b
        if items and self.store.offer_many(items, codec=self.codec, rotated=True):
            return size
        return 0
