"""Bytes per token and load speed of every storage codec, as a Markdown table.

    python scripts/bench_storage.py                          # synthetic KV shaped like the default model
    python scripts/bench_storage.py --kv-file kv.npy         # real KV: raw .npy of [L, 2, H, T, d]
    python scripts/bench_storage.py --redis-url redis://host:6379/0   # the shared tier on that server

Each codec (with and without zstd) encodes the chunks (`--tokens` tokens each), writes them
to a fresh LMDB directory, reads every chunk once to warm the page cache, then times
KVStore.get (disk tier only, so every get is an LMDB read + checksum + decode to float32).
The same chunks are then written to the shared Redis tier and KVStore.get is timed over it
alone (a GET over TCP + checksum + decode): what a replica pays for a chunk another replica
computed. Without --redis-url a redis-server is started on a free 127.0.0.1 port for the run
(loopback: the network of a real deployment adds its round trip and transfer time).
"""

import argparse
import statistics
import tempfile
import time
import uuid

import numpy as np
import torch

from chunkcache.bench.codecs import redis_server  # the given server, or one of our own on a free port
from chunkcache.storage import CODECS, CodecSpec, KVStore, LmdbTier, RedisConfig, StoreConfig, chunk_key, decode_kv, encode_kv
from chunkcache.storage.redis_tier import RedisTier


def synthetic_kv(layers: int, heads: int, tokens: int, head_dim: int, seed: int) -> torch.Tensor:
    """kv: [L, 2, H, T, d]; keys with per-channel magnitudes and offsets (outlier channels),
    values with per-token magnitudes, both roughly the scale of a small Llama's."""
    g = torch.Generator().manual_seed(seed)
    channel = torch.exp(0.8 * torch.randn(layers, heads, 1, head_dim, generator=g))  # [L, H, 1, d]
    k = torch.randn(layers, heads, tokens, head_dim, generator=g) * channel + 2 * channel
    token = torch.exp(0.5 * torch.randn(layers, heads, tokens, 1, generator=g))  # [L, H, T, 1]
    v = 0.3 * torch.randn(layers, heads, tokens, head_dim, generator=g) * token
    return torch.stack([k, v], dim=1)  # [L, 2, H, T, d]


def load_chunks(args: argparse.Namespace) -> list[torch.Tensor]:
    if args.kv_file is None:
        return [synthetic_kv(args.layers, args.heads, args.tokens, args.head_dim, seed=i) for i in range(args.chunks)]
    kv = torch.from_numpy(np.load(args.kv_file)).float()  # [L, 2, H, T_total, d]
    if kv.dim() != 5 or kv.shape[1] != 2:
        raise SystemExit(f"--kv-file must hold [L, 2, H, T, d], got {list(kv.shape)}")
    n = max(1, kv.shape[3] // args.tokens)
    return [kv[:, :, :, i * args.tokens : (i + 1) * args.tokens].contiguous() for i in range(n)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def bench_codec(spec: CodecSpec, chunks: list[torch.Tensor], rounds: int, workdir: str, redis_url: str) -> dict:
    t0 = time.perf_counter()
    blobs = [encode_kv(kv, spec) for kv in chunks]
    encode_ms = (time.perf_counter() - t0) * 1e3 / len(chunks)
    decoded = [decode_kv(b) for b in blobs]
    keys = [chunk_key("bench", "", list(range(i, i + kv.shape[3])), spec.tag) for i, kv in enumerate(chunks)]

    path = f"{workdir}/{spec.tag}"
    tier = LmdbTier(path, map_size=2**26)
    tier.put_many(zip(keys, blobs))
    raw_ms, decode_ms = [], []  # the two parts of a load, timed apart
    for r in range(rounds + 1):  # round 0 warms the page cache
        for key in keys:
            t = time.perf_counter()
            blob = tier.get(key)
            t1 = time.perf_counter()
            decode_kv(blob)
            t2 = time.perf_counter()
            if r:
                raw_ms.append((t1 - t) * 1e3)
                decode_ms.append((t2 - t1) * 1e3)
    tier.close()

    store = KVStore(StoreConfig(path, codec=spec.name, zstd_level=spec.zstd_level, memory_bytes=0))
    get_ms = []
    for r in range(rounds + 1):
        for key in keys:
            t = time.perf_counter()
            store.get(key)
            if r:
                get_ms.append((time.perf_counter() - t) * 1e3)
    store.close()

    redis_tier = RedisTier(RedisConfig(redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}", timeout_s=5.0))
    redis_tier.put_many(zip(keys, blobs))
    redis_raw_ms, redis_get_ms = [], []
    store = KVStore(StoreConfig(None, codec=spec.name, zstd_level=spec.zstd_level), tiers=[redis_tier])
    for r in range(rounds + 1):  # round 0 opens the connection
        for key in keys:
            t = time.perf_counter()
            redis_tier.get(key)
            t1 = time.perf_counter()
            store.get(key)
            if r:
                redis_raw_ms.append((t1 - t) * 1e3)
                redis_get_ms.append((time.perf_counter() - t1) * 1e3)
    for key in keys:
        redis_tier.delete(key)
    if redis_tier.stats().errors:
        raise SystemExit(f"Redis at {redis_tier.where} failed {redis_tier.stats().errors} calls: the Redis columns are not valid")
    store.close()

    tokens = sum(kv.shape[3] for kv in chunks)
    stored = sum(len(b) for b in blobs)
    L, _, H, _, d = chunks[0].shape
    per_chunk_ms = statistics.median(get_ms)
    return {
        "codec": spec.tag,
        "bytes/token": stored / tokens,
        "vs fp16": stored / tokens / (L * 2 * H * d * 2),
        "rel err K": statistics.mean(rel_err(o[:, 0], kv[:, 0]) for o, kv in zip(decoded, chunks)),
        "rel err V": statistics.mean(rel_err(o[:, 1], kv[:, 1]) for o, kv in zip(decoded, chunks)),
        "encode ms": encode_ms,
        "lmdb get ms": statistics.median(raw_ms),
        "decode ms": statistics.median(decode_ms),
        "load ms (p50)": per_chunk_ms,
        "load ms (p95)": float(np.percentile(get_ms, 95)),
        "load MB/s stored": stored / len(chunks) / 2**20 / (per_chunk_ms / 1e3),
        "load MB/s fp16-equiv": tokens / len(chunks) * L * 2 * H * d * 2 / 2**20 / (per_chunk_ms / 1e3),
        "redis get ms": statistics.median(redis_raw_ms),
        "redis load ms (p50)": statistics.median(redis_get_ms),
        "redis load ms (p95)": float(np.percentile(redis_get_ms, 95)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kv-file", help="raw .npy of shape [L, 2, H, T, d]; split into chunks of --tokens")
    p.add_argument("--tokens", type=int, default=256, help="tokens per chunk")
    p.add_argument("--chunks", type=int, default=16, help="synthetic chunks")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--zstd-level", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="timed reads of every chunk")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--redis-url", help="Redis/Valkey to time the shared tier on (default: start redis-server on a free loopback port)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    chunks = load_chunks(args)
    L, _, H, T, d = chunks[0].shape
    source = args.kv_file or "synthetic"
    print(f"KV: {source}, {len(chunks)} chunks of [L={L}, 2, H={H}, T={T}, d={d}], "
          f"fp16 raw = {L * 2 * H * d * 2} bytes/token, torch threads = {torch.get_num_threads()}\n")
    rows = []
    with tempfile.TemporaryDirectory() as workdir, redis_server(args.redis_url) as redis_url:
        for name in CODECS:
            for level in (None, args.zstd_level):
                rows.append(bench_codec(CodecSpec(name, level), chunks, args.rounds, workdir, redis_url))
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [r["codec"]] + [_fmt(c, r[c]) for c in cols[1:]]
        print("| " + " | ".join(cells) + " |")


def _fmt(col: str, v: float) -> str:
    if col.startswith("rel err"):
        return f"{v:.2e}"
    if col == "vs fp16":
        return f"{v:.3f}"
    if col == "bytes/token" or "MB/s" in col:
        return f"{v:,.0f}"
    return f"{v:.2f}"


if __name__ == "__main__":
    from chunkcache.errors import ConfigError

    try:
        main()
    except ConfigError as e:  # no --redis-url and no redis-server to start: say what to install
        raise SystemExit(str(e))
