"""Cache assembly: a request's working cache with its chunks' KV placed at their prompt positions.

A chunk's KV comes stored (`Payload`, keys before RoPE, or a chain entry already rotated where
it sits) or computed now (a tensor). Placing it is one fused call per chunk that dequantizes,
rotates the keys to their positions (fp32 angles) and writes straight into the working cache:
the torch reference on the CPU, Triton on CUDA.
"""

from dataclasses import dataclass

import torch

from chunkcache.chunk_kv import new_working_kv
from chunkcache.engine import Engine
from chunkcache.kernels import dequant_rope, lossless_codec
from chunkcache.kv import ParallelSpan, PrefixKV, WorkingKV
from chunkcache.request import Request
from chunkcache.storage import Payload

Cached = torch.Tensor | Payload  # [L, 2, Hkv, n, d] pre-RoPE (computed now), or a stored payload


def place(engine: Engine, kv: WorkingKV, start: int, cached: list[Cached], positions: torch.Tensor) -> None:
    """Write each chunk's K (rotated to `positions` [N]) and V into the slots [start, start+N).

    cached: per chunk, a pre-RoPE tensor [L, 2, Hkv, n, d] of a float dtype (passed as the
    lossless codec of that dtype) or a stored `Payload` (int8 / int4 / fp16 / bf16 / grouped as
    stored; a rotated chain entry is copied as it is, its positions being these).
    """
    inv_freq, scaling = engine.gen.rope_frequencies(positions)
    dev = kv.k.device
    a = 0
    for chunk in cached:
        if isinstance(chunk, Payload) and chunk.rotated:  # a chain entry: already at these positions
            chunk = chunk.to(dev)
            n = chunk.tokens
            kv.k[:, :, start + a : start + a + n] = chunk.k
            kv.v[:, :, start + a : start + a + n] = chunk.v
            a += n
            continue
        if isinstance(chunk, Payload):
            chunk = chunk.to(dev)
            n, codec = chunk.tokens, chunk.codec
            k, k_scale, v, v_scale = chunk.k, chunk.k_scale, chunk.v, chunk.v_scale
        else:
            chunk = chunk.to(dev)
            n, codec = chunk.shape[3], lossless_codec(chunk.dtype).name
            k, k_scale, v, v_scale = chunk[:, 0], None, chunk[:, 1], None
        dst = slice(start + a, start + a + n)
        dequant_rope(k, k_scale, v, v_scale, positions[a : a + n], inv_freq, scaling, codec, kv.k.dtype,
                     out=(kv.k[:, :, dst], kv.v[:, :, dst]))
        a += n


def stack(cached: list[Cached], device: torch.device) -> torch.Tensor:
    """The chunks' pre-RoPE K/V as one fp32 tensor [L, 2, Hkv, N, d] on `device` (payloads are
    dequantized here: only deviation-based selection needs this copy)."""
    parts = [(c.to(device).decode(torch.float32) if isinstance(c, Payload) else c.to(device, torch.float32)) for c in cached]
    return torch.cat(parts, dim=3)


@dataclass(frozen=True)
class Assembled:
    """kv: the working cache, prefix and chunks placed; slots: [N] the context's slots;
    stacked: [L, 2, Hkv, N_tail, d] fp32 pre-RoPE KV of the chunks after the exact run, or None
    when not asked for (only deviation-based selection needs it); suffix_start: the position of
    the first token after the context."""

    kv: WorkingKV
    slots: torch.Tensor
    stacked: torch.Tensor | None
    suffix_start: int


def assemble(engine: Engine, prefix: PrefixKV, req: Request, cached: list[Cached], capacity: int,
             stacked: bool = False) -> Assembled:
    """Place `req`'s cached chunks into a new working cache with room for `capacity` more tokens
    than the prefix. In ape mode every chunk sits at the positions right after the prefix and the
    cache's parallel span is theirs (`req.blend`'s temperature and scale); otherwise the chunks
    follow each other."""
    p = prefix.length
    lengths = req.lengths
    dev = engine.gen.device
    if req.mode == "ape":
        parallel = ParallelSpan(p, p + sum(lengths), req.blend.ape_temperature, req.blend.ape_scale)
        positions = torch.cat([torch.arange(p, p + n, device=dev) for n in lengths])
        suffix_start = p + max(lengths)
    else:
        parallel = None
        positions = torch.arange(p, p + sum(lengths), device=dev)
        suffix_start = p + sum(lengths)
    kv = new_working_kv(engine, prefix, capacity, parallel)
    slots = kv.reserve(positions)
    place(engine, kv, p, cached, positions)
    tail = stack(cached[req.exact_chunks:], kv.k.device) if stacked else None  # [L, 2, Hkv, N_tail, d]
    return Assembled(kv, slots, tail, suffix_start)
