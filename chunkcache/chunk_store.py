"""Stored chunk KV: the key of a passage's tokens, warm-up, load for a request, delete."""

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from chunkcache.chunk_kv import PrefixKV, compute_chunks, pack_batches
from chunkcache.engine import Engine
from chunkcache.storage import KVStore, Payload, chunk_key


@dataclass(frozen=True)
class LoadedChunks:
    """What `ChunkStore.load` found and did for one request's chunks, in their order.

    kvs: a stored `Payload` per hit, the pre-RoPE tensor [L, 2, Hkv, n, d] computed now per miss.
    stored: the computed misses were written to the store (True when nothing missed); False
    after a failed write (a full disk), so the next request computes them again."""

    kvs: list[Payload | torch.Tensor]
    hits: list[bool]
    lookup_s: float
    warm_s: float
    stored: bool


class ChunkStore:
    """Chunk KV in the store, keyed by (model fingerprint, prefix digest, chunk tokens, codec).

    Entries are pre-RoPE [L, 2, Hkv, n, d] caches of a chunk prefilled alone behind the shared
    prefix. Model work takes `lock` (the instance's one model lock); store I/O does not.
    """

    def __init__(self, engine: Engine, prefix: PrefixKV, prefix_digest: bytes, store: KVStore,
                 lock: threading.RLock, warm_batch_tokens: int):
        self.engine = engine
        self.prefix = prefix
        self.store = store
        self._prefix_digest = prefix_digest
        self._lock = lock
        self._batch_tokens = warm_batch_tokens

    def key(self, ids: Sequence[int]) -> bytes:
        """The store key of a chunk's tokens (as `PromptBuilder.passage_ids` gives them)."""
        return chunk_key(self.engine.gen.fingerprint, self._prefix_digest, ids, self.store.codec.tag)

    def warm(self, chunk_ids: Sequence[Sequence[int]], progress: bool = False, desc: str = "warm-up",
             on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        """Compute and store every chunk not stored yet; returns how many were computed.

        One store transaction per batch of at most `warm_batch_tokens` tokens, so an interrupted
        warm-up keeps every finished batch and a rerun resumes. verify: check stored entries'
        checksums too and recompute the corrupt ones (instead of trusting existence).
        """
        todo: dict[bytes, list[int]] = {}
        for ids in chunk_ids:
            key = self.key(ids)
            if key not in todo and not (self.store.verify(key) if verify else self.store.contains(key)):
                todo[key] = list(ids)
        keys = list(todo)
        computed = 0
        bar = tqdm(total=len(keys), desc=desc, unit="chunk", disable=not progress)
        for batch in pack_batches([len(todo[k]) for k in keys], self._batch_tokens):
            with self._lock, torch.inference_mode():
                caches = compute_chunks(self.engine, self.prefix, [todo[keys[i]] for i in batch])
            self.store.put_many((keys[i], kv) for i, kv in zip(batch, caches))
            computed += len(batch)
            bar.update(len(batch))
            if on_progress is not None:
                on_progress(computed, len(keys))
        bar.close()
        return computed

    def load(self, chunk_ids: list[list[int]]) -> LoadedChunks:
        """Each chunk's KV: a stored `Payload` (undecoded, placed by the fused dequant + RoPE
        path) or, on a miss, the pre-RoPE tensor [L, 2, Hkv, n, d] computed now and offered to
        the store. Lookups run without the model lock; only computing misses takes it."""
        t0 = time.perf_counter()
        keys = [self.key(ids) for ids in chunk_ids]
        found = [self.store.get_payload(k) for k in keys]
        lookup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        missing = [i for i, kv in enumerate(found) if kv is None]
        stored = True
        if missing:
            with self._lock, torch.inference_mode():
                computed = compute_chunks(self.engine, self.prefix, [chunk_ids[i] for i in missing])
            # The store is an optimisation: a failed write (disk full) is logged, counted and
            # returned; the answer goes on with the KV. All misses go in one transaction.
            stored = self.store.offer_many((keys[i], kv) for i, kv in zip(missing, computed))
            for i, kv in zip(missing, computed):
                found[i] = kv
        warm_s = time.perf_counter() - t0
        hits = [i not in missing for i in range(len(found))]
        return LoadedChunks(found, hits, lookup_s, warm_s, stored)

    def delete(self, keys: Sequence[bytes]) -> None:
        for key in keys:
            self.store.delete(key)
