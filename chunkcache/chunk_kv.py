"""Chunk KV computed behind the shared prefix (packed warm-up batches); text chunking is retrieval/chunker.py."""

import torch

from chunkcache.engine import Engine
from chunkcache.kv import ParallelSpan, PrefixKV, WorkingKV


def compute_prefix(engine: Engine, prefix_ids: list[int]) -> PrefixKV:
    dev = engine.gen.device
    kv = WorkingKV(engine.gen.spec, len(prefix_ids), engine.gen.dtype, dev)
    ids = torch.tensor(prefix_ids, dtype=torch.int64, device=dev)
    _, q = engine.prefill(kv, ids, torch.arange(len(prefix_ids), device=dev), collect=True, collect_q=True, keep=0)
    return PrefixKV(tuple(prefix_ids), kv.k.clone(), kv.v.clone(), q)


def new_working_kv(engine: Engine, prefix: PrefixKV, capacity: int, parallel: ParallelSpan | None = None) -> WorkingKV:
    """A request cache with the prefix already in slots [0, P) and room for `capacity` more."""
    return WorkingKV(engine.gen.spec, prefix.length + capacity, engine.gen.dtype, engine.gen.device, prefix, parallel)


def compute_chunks(engine: Engine, prefix: PrefixKV, chunks: list[list[int]]) -> list[torch.Tensor]:
    """Prefill every chunk as [prefix][chunk] in ONE packed forward.

    Chunks are packed back to back, each at positions P..P+n_i-1 and in its own segment, so a
    chunk sees the prefix and itself only, exactly as if prefilled alone.
    Returns one pre-RoPE cache [L, 2, Hkv, n_i, d] per chunk.
    """
    if not chunks:
        return []
    p = prefix.length
    lengths = [len(c) for c in chunks]
    kv = new_working_kv(engine, prefix, sum(lengths))
    dev = engine.gen.device
    ids = torch.tensor([t for c in chunks for t in c], dtype=torch.int64, device=dev)
    positions = torch.cat([torch.arange(p, p + n, device=dev) for n in lengths])
    segments = torch.cat([torch.full((n,), i + 1, dtype=torch.int64, device=dev) for i, n in enumerate(lengths)])
    _, pre = engine.prefill(kv, ids, positions, segments, collect=True, keep=0)
    return [part.contiguous() for part in pre.split(lengths, dim=3)]


def pack_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Group indices into batches of at most `batch_tokens` tokens (a long chunk goes alone)."""
    batches, current, used = [], [], 0
    for i, n in enumerate(lengths):
        if current and used + n > batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        batches.append(current)
    return batches

